"""Edge splitting (`mesh.remesh.split_long_edges`, `even_out`, `decimate_even`): QSlim leaves a
flat cap without vertices inside; splitting gives it vertices without moving the surface."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from shapeatlas.data.synthetic_lv import LVParams, triangulate_lv
from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.remesh import (
    clean,
    close_surface,
    decimate,
    decimate_even,
    even_out,
    nearly_closed_volume,
    repair_crossings,
    restore_volume,
    split_long_edges,
    untangle,
)
from shapeatlas.mesh.validity import self_intersecting_faces
from shapeatlas.metrics.surface import closest_points_on_surface

#: The synthetic LV's basal cap is the plane z = H_MM (no tilt).
H_MM = 24.0


@pytest.fixture(scope="module")
def lv() -> Mesh:
    p = LVParams(c_mm=70.0, b_mm=27.0, h_mm=H_MM, septal_flattening=0.2)
    t = triangulate_lv(p, n_vertices=3000, rng=np.random.default_rng(0))
    return Mesh(t.vertices, t.faces, name="lv")


def inner_cap_share(mesh: Mesh) -> float:
    """Share of the vertices on the cap and inside 0.8 of its radius."""
    v = np.asarray(mesh.vertices)
    on = np.abs(v[:, 2] - H_MM) < 0.05
    r = np.hypot(v[:, 0], v[:, 1])
    return float((on & (r < 0.8 * r[on].max())).mean())


def edge_lengths(mesh: Mesh) -> np.ndarray:
    v = np.asarray(mesh.vertices)
    e = geo.unique_edges(np.asarray(mesh.faces))
    return np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)


def test_split_long_edges_adds_vertices_without_moving_the_surface(lv):
    coarse = decimate(lv, target_vertices=500)
    assert inner_cap_share(coarse) < 0.015 < 0.05 < inner_cap_share(lv)  # QSlim emptied it
    limit = 2.0 * float(np.median(edge_lengths(coarse)))
    out = split_long_edges(coarse, limit)
    v, w = np.asarray(coarse.vertices), np.asarray(out.vertices)
    assert out.is_watertight and out.volume == pytest.approx(coarse.volume, rel=1e-9)
    np.testing.assert_array_equal(w[:len(v)], v)  # the old vertices stay, in order
    near = closest_points_on_surface(w, v, np.asarray(coarse.faces)).points
    assert np.abs(near - w).max() < 1e-9  # every new vertex lies on the old surface
    assert edge_lengths(out).max() <= limit
    assert inner_cap_share(out) > 0.04
    assert split_long_edges(out, limit) is out  # nothing left to split
    assert even_out(out, ratio=100.0) is out
    with pytest.raises(ValueError, match="max_edge"):
        split_long_edges(coarse, 0.0)


def test_decimate_even_gives_the_cap_vertices_and_hits_the_target(lv):
    plain = decimate(lv, target_vertices=500)
    even = decimate_even(lv, target_vertices=500)
    assert plain.n_vertices == even.n_vertices == 500 and even.is_watertight
    assert inner_cap_share(even) > 4 * inner_cap_share(plain)
    assert even.volume == pytest.approx(lv.volume, rel=0.02)


# --- Closing and decimating without losing volume or crossing faces -------------------------


def folded_sphere(r: float = 20.0, n_lat: int = 16, n_lon: int = 24, gap: float = 0.5) -> Mesh:
    """A UV sphere cut at the equator (the lower half 0.5 mm lower) whose halves are joined by
    one twisted quad: every face points outward, but the surface is not orientable, so a
    consistent orientation must flip one half (the fold of a real liver surface, in small)."""
    lat = np.linspace(0, np.pi, n_lat + 1)
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    eq = n_lat // 2
    verts, index = [], {}

    def vid(i, j, half):
        key = (i, j % n_lon if 0 < i < n_lat else 0, half)
        if key not in index:
            th, ph = lat[i], lon[key[1]]
            index[key] = len(verts)
            verts.append([r * np.sin(th) * np.cos(ph), r * np.sin(th) * np.sin(ph),
                          r * np.cos(th) - gap * half])
        return index[key]

    faces = []
    for i in range(n_lat):
        half = int(i >= eq)
        for j in range(n_lon):
            a, b = vid(i, j, half), vid(i, j + 1, half)
            c, d = vid(i + 1, j, half), vid(i + 1, j + 1, half)
            if i > 0:
                faces.append([a, c, b])
            if i < n_lat - 1:
                faces.append([b, c, d])
    t0, t1, b0, b1 = vid(eq, 0, 0), vid(eq, 1, 0), vid(eq, 0, 1), vid(eq, 1, 1)
    faces += [[t0, b1, t1], [t1, b1, b0]]
    return Mesh(np.array(verts), np.array(faces), name="folded")


def winding_volume(mesh: Mesh, pitch: float = 0.75) -> float:
    """Volume of {generalised winding number > 1/2} on a fine grid (the reference)."""
    import igl

    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    axes = [np.arange(a - 1, b + 1, pitch) for a, b in zip(v.min(0), v.max(0))]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    return float((igl.fast_winding_number(v, f, grid) > 0.5).sum()) * pitch**3


def test_close_surface_keeps_the_volume_of_a_surface_that_is_not_orientable():
    folded = folded_sphere()
    reference = winding_volume(folded)
    # Orienting it consistently flips one half: its winding number misses half the volume.
    assert winding_volume(clean(folded, keep_largest=False)) < 0.6 * reference
    closed = close_surface(folded, resolution=64)
    assert not closed.reoriented and closed.n_dropped_parts == 0
    assert closed.mesh.is_watertight and closed.mesh.n_components == 1
    assert closed.mesh.volume == pytest.approx(reference, rel=0.01)
    assert closed.enclosed_volume == pytest.approx(reference, rel=0.01)
    # A consistently oriented input keeps the consistent orientation.
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=20.0)
    assert close_surface(Mesh(sphere.vertices, sphere.faces), resolution=48).reoriented


def _balls(gap_rod: bool) -> Mesh:
    a = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    b = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    b.apply_translation([40, 0, 0])
    parts = [a, b]
    if gap_rod:
        rod = trimesh.creation.cylinder(radius=0.45, height=24.0, sections=12)
        rod.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))
        rod.apply_translation([20, 0, 0])
        parts.insert(1, rod)
    both = trimesh.util.concatenate(parts)
    return Mesh(both.vertices, both.faces, name="balls")


def test_close_surface_resolves_a_thin_bridge_within_one_percent():
    # A 0.9 mm rod between two balls breaks on a 64-cell grid (0.94 mm); a finer grid keeps
    # it, and with it the second ball.
    balls = _balls(gap_rod=True)
    closed = close_surface(balls, resolution=64)
    assert closed.n_dropped_parts == 0 and closed.mesh.n_components == 1
    assert closed.pitch < 60.0 / 64
    assert closed.mesh.volume == pytest.approx(winding_volume(balls), rel=0.01)


def test_close_surface_reports_a_part_that_is_truly_disconnected():
    balls = _balls(gap_rod=False)
    closed = close_surface(balls, resolution=48, max_refinements=1)
    assert closed.n_dropped_parts == 1 and closed.mesh.n_components == 1
    ball = closed.enclosed_volume / 2
    assert closed.dropped_volume == pytest.approx(ball, rel=0.02)
    assert closed.mesh.volume == pytest.approx(ball, rel=0.02)


def _thin_shell() -> Mesh:
    t = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    return Mesh(np.asarray(t.vertices) * [30.0, 20.0, 3.0], t.faces, name="shell")


def test_untangle_smooths_a_fold_through_a_thin_part_and_the_volume_comes_back():
    shell = _thin_shell()
    v = np.array(shell.vertices)
    v[np.argmax(v[:, 2]), 2] = -5.0  # the top's centre pushed through the bottom sheet
    folded = Mesh(v, shell.faces, name="fold")
    assert len(self_intersecting_faces(folded.vertices, folded.faces)) > 0
    out, n_left = untangle(folded)
    assert n_left == 0 and len(self_intersecting_faces(out.vertices, out.faces)) == 0
    restored = restore_volume(out, volume=shell.volume)
    assert restored.volume == pytest.approx(shell.volume, rel=1e-4)
    assert len(self_intersecting_faces(restored.vertices, restored.faces)) == 0


def test_decimate_repairs_a_collapse_that_crosses_itself(monkeypatch):
    # libigl's collapses do not check for crossings; make the final one return a fold.
    from shapeatlas.mesh import remesh

    shell = _thin_shell()
    fine = Mesh(*trimesh.remesh.subdivide(shell.vertices, shell.faces), name="shell")
    real = remesh._igl_collapse

    def folding(fn, v, f, target_faces):
        v2, f2 = real(fn, v, f, target_faces)
        v2 = v2.copy()
        v2[np.argmax(v2[:, 2]), 2] = -5.0
        return v2, f2

    monkeypatch.setattr(remesh, "_igl_collapse", folding)
    out = decimate(fine, target_vertices=300)
    assert out.n_vertices == 300 and out.is_watertight
    assert len(self_intersecting_faces(out.vertices, out.faces)) == 0
    assert out.volume == pytest.approx(fine.volume, rel=0.01)


def test_repair_crossings_puts_a_folded_vertex_back_on_the_surface():
    shell = _thin_shell()
    v = np.array(shell.vertices)
    top = int(np.argmax(v[:, 2]))
    v[top, 2] = -5.0  # through the bottom sheet
    folded = Mesh(v, shell.faces, name="fold")
    assert len(self_intersecting_faces(folded.vertices, folded.faces)) > 0
    out, n_left = repair_crossings(folded, shell)
    assert n_left == 0 and len(self_intersecting_faces(out.vertices, out.faces)) == 0
    assert out.is_watertight and out.n_vertices == shell.n_vertices
    # One local move, onto the surface: no smoothing, so the volume is the shell's.
    assert out.volume == pytest.approx(shell.volume, rel=1e-3)
    assert np.abs(out.vertices - shell.vertices).max(axis=1).argmax() == top
    # A surface that does not cross itself comes back as it is.
    assert repair_crossings(shell, shell) == (shell, 0)


def _fin_prism(fin: float = 0.8) -> Mesh:
    """A 30 mm cube with a fin `fin` mm thick sticking 20 mm out of one side (a T-shaped
    prism, closed and outward): the thin part of a liver's lobe, in small."""
    lo, hi = 15.0 - fin / 2, 15.0 + fin / 2
    outline = np.array([[0, 0], [30, 0], [30, lo], [50, lo], [50, hi], [30, hi], [30, 30],
                        [0, 30]], dtype=float)
    cap = [[0, 1, 2], [0, 2, 5], [0, 5, 6], [0, 6, 7], [2, 3, 4], [2, 4, 5]]
    n = len(outline)
    verts = np.r_[np.c_[outline, np.zeros(n)], np.c_[outline, np.full(n, 30.0)]]
    faces = [[a, c, b] for a, b, c in cap] + [[a + n, b + n, c + n] for a, b, c in cap]
    for i in range(n):
        j = (i + 1) % n
        faces += [[i, j, j + n], [i, j + n, i + n]]
    t = trimesh.Trimesh(verts, np.array(faces), process=False)
    t.fix_normals()
    # Turned so that no side lies on a grid plane (w = 1/2 exactly there).
    t.apply_transform(trimesh.transformations.euler_matrix(0.3, 0.2, 0.1))
    return Mesh(t.vertices, t.faces, name="fin")


def test_close_surface_refines_the_grid_while_it_misses_a_thin_part():
    prism = _fin_prism()
    truth = 30.0**3 + 20.0 * 0.8 * 30.0
    assert nearly_closed_volume(prism) == pytest.approx(truth, rel=1e-9)
    # On a 24-cell grid (over 2 mm) hardly a grid point falls inside the fin: about 1.7% of
    # the volume missing, though nothing is disconnected; the grid is refined until it is there.
    coarse = close_surface(prism, resolution=24, max_refinements=0)
    assert coarse.mesh.volume < 0.99 * truth
    closed = close_surface(prism, resolution=24)
    assert closed.pitch < coarse.pitch
    assert closed.input_volume == pytest.approx(truth, rel=1e-9)
    assert closed.reference_volume == closed.input_volume
    assert closed.mesh.volume == pytest.approx(truth, rel=0.01)


def test_nearly_closed_volume_only_for_surfaces_with_few_holes():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    closed = Mesh(sphere.vertices, sphere.faces)
    assert nearly_closed_volume(closed) == pytest.approx(sphere.volume, rel=1e-12)
    one_hole = Mesh(sphere.vertices, sphere.faces[1:])
    assert nearly_closed_volume(one_hole) == pytest.approx(sphere.volume, rel=0.01)
    half = Mesh(sphere.vertices, sphere.faces[sphere.triangles_center[:, 2] > 0])
    assert nearly_closed_volume(half) is None
