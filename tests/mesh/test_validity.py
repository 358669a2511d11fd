"""The mesh check on exact shapes, and its self-intersection test against TetGen as an oracle."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import trimesh

from shapeatlas.mesh.validity import (
    Validity,
    degenerate_mask,
    inverted_faces,
    mesh_validity,
    nonmanifold_vertices,
    self_intersecting_faces,
)

# TetGen, run in a child process (it can crash the interpreter on exactly degenerate input, and
# writes *_skipped files into its working folder): for each surface, "ok" when it
# tetrahedralises it, "self" when it refuses it for self-intersections, else another word.
_ORACLE = """
import io, sys
import numpy as np
import tetgen
data = np.load(io.BytesIO(sys.stdin.buffer.read()), allow_pickle=False)
for k in range(int(data["n"])):
    try:
        tetgen.TetGen(data[f"v{k}"], data[f"f{k}"].astype(np.int32)).tetrahedralize(quality=False)
        print("ok", flush=True)
    except RuntimeError as exc:
        print("self" if "self-intersection" in str(exc) else "other", flush=True)
"""


def tetgen_verdicts(surfaces, tmp_path) -> list[str]:
    """TetGen's verdict on each (vertices, faces); 'crash' for the surfaces after a crash."""
    pytest.importorskip("tetgen")
    buf = io.BytesIO()
    arrays = {"n": np.int64(len(surfaces))}
    for k, (v, f) in enumerate(surfaces):
        arrays[f"v{k}"], arrays[f"f{k}"] = np.asarray(v, float), np.asarray(f, np.int64)
    np.savez(buf, **arrays)
    out = subprocess.run([sys.executable, "-c", _ORACLE], input=buf.getvalue(),
                         capture_output=True, cwd=tmp_path, timeout=120).stdout.decode().split()
    return out + ["crash"] * (len(surfaces) - len(out))


def _sphere(sub: int = 2):
    s = trimesh.creation.icosphere(subdivisions=sub)
    return np.array(s.vertices), np.asarray(s.faces), s


def _flat_fold_boxes():
    """A subdivided cube with one face-interior vertex slid within its face past a neighbour,
    so that faces of its fan overlap in the plane: coplanar overlaps between faces that share
    a vertex, which the segment-crossing test alone cannot see (every edge lies in the plane).
    -> [(vertices, faces)] with the faces of the cube."""
    b = trimesh.creation.box(extents=[2.0, 2.0, 2.0]).subdivide().subdivide()
    v0, f = np.array(b.vertices), np.asarray(b.faces)
    out = []
    for pid in range(len(v0)):
        if (np.abs(np.abs(v0[pid]) - 1) < 1e-9).sum() != 1:
            continue  # on a cube edge
        q = b.vertex_neighbors[pid][0]
        v = v0.copy()
        v[pid] = v0[pid] + 1.3 * (v0[q] - v0[pid])
        out.append((v, f))
    return out


# ------------------------------------------------------------------------------ valid
def test_a_sphere_is_valid():
    s = trimesh.creation.icosphere(subdivisions=3)
    ok = mesh_validity(s.vertices, s.faces, reference=s.vertices)
    assert ok.watertight and ok.n_self_intersecting == 0 and ok.n_inverted == 0 and ok.valid
    assert ok.problems == [] and ok.signed_volume == pytest.approx(s.volume)
    assert ok.as_dict()["valid"] is True


def test_flat_neighbours_of_a_subdivided_cube_are_not_overlaps():
    # Coplanar faces sharing an edge or a vertex (the flat sides of a cube) are fine.
    b = trimesh.creation.box(extents=[2.0, 2.0, 2.0]).subdivide().subdivide()
    ok = mesh_validity(b.vertices, b.faces)
    assert ok.valid and ok.n_self_intersecting == 0


# ---------------------------------------------------------------------- each problem
def test_inward_faces_are_reported():
    v, f, _ = _sphere()
    ok = mesh_validity(v, f[:, ::-1])
    assert ok.watertight and not ok.valid and ok.signed_volume < 0
    assert ok.problems == ["faces point inwards (negative enclosed volume)"]


def test_an_open_surface_and_a_flipped_face():
    v, f, _ = _sphere()
    ok = mesh_validity(v, f[1:])
    assert not ok.valid and ok.n_boundary_edges == 3 and ok.signed_volume is None
    g = f.copy()
    g[0] = g[0, ::-1]
    ok = mesh_validity(v, g)
    assert not ok.valid and ok.n_misoriented_edges == 3 and ok.n_boundary_edges == 0
    assert "inconsistent face orientation across 3 edges" in ok.problems


def test_a_fin_and_a_bow_tie():
    v, f, _ = _sphere()
    # A fin: one more face on an existing edge (to a new vertex): 1 edge in three faces.
    fin = np.vstack([f, [[f[0, 0], f[0, 1], len(v)]]])
    ok = mesh_validity(np.vstack([v, [[0.0, 0.0, 3.0]]]), fin)
    assert ok.n_nonmanifold_edges == 1 and not ok.valid
    # A bow-tie: two spheres glued at one vertex index (no shared edge).
    b = v + [2.0, 0.0, 0.0]
    top_a, bottom_b = int(np.argmax(v[:, 0])), int(np.argmin(b[:, 0]))
    fb = f + len(v)
    fb[fb == bottom_b + len(v)] = top_a
    both_v, both_f = np.vstack([v, b]), np.vstack([f, fb])
    np.testing.assert_array_equal(nonmanifold_vertices(both_f), [top_a])
    ok = mesh_validity(both_v, both_f)
    assert ok.watertight and ok.n_nonmanifold_vertices == 1 and ok.n_nonmanifold_edges == 0
    assert not ok.valid and "1 non-manifold vertices (bow-ties)" in ok.problems


def test_degenerate_faces_repeated_index_zero_area_and_collinear():
    v = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0], [1e-9, 1, 0]])
    f = np.array([[0, 1, 3], [0, 0, 1], [0, 1, 2], [3, 3, 4], [0, 3, 4]])
    # equilateral-ish, repeated index, exactly collinear, repeated, near-collinear (height 1e-9)
    np.testing.assert_array_equal(degenerate_mask(v, f), [False, True, True, True, True])


def test_a_mesh_with_all_faces_collinear_is_invalid_and_says_so():
    b = trimesh.creation.box(extents=[40, 40, 40]).subdivide()
    v = np.asarray(b.vertices)
    t = v @ [1.0, 0.37, 0.11]
    line = t[:, None] * [0.6, 0.3, 0.2] + 1e-6 * np.random.default_rng(0).standard_normal(v.shape)
    ok = mesh_validity(line, b.faces)
    assert not ok.valid and ok.n_degenerate >= 46
    assert any("degenerate" in p for p in ok.problems)


def test_a_vertex_pushed_through_the_far_side_is_caught():
    s = trimesh.creation.icosphere(subdivisions=3)
    v = np.array(s.vertices)
    top = int(np.argmax(v[:, 2]))
    v[top] = [0.0, 0.0, -1.5]  # through the south pole: its 5 faces now cross the far side
    hit = self_intersecting_faces(v, s.faces)
    ring = np.flatnonzero((s.faces == top).any(axis=1))
    assert set(ring) <= set(hit.tolist())
    ok = mesh_validity(v, s.faces, reference=s.vertices)
    assert not ok.valid and ok.n_inverted > 0


def test_two_overlapping_spheres_intersect_and_disjoint_ones_do_not():
    a = trimesh.creation.icosphere(subdivisions=2)
    b = a.copy()
    b.apply_translation([1.0, 0.0, 0.0])
    both = trimesh.util.concatenate([a, b])
    hit = self_intersecting_faces(both.vertices, both.faces)
    assert len(hit) > 0
    # faces of both spheres are involved, and only those near the intersection circle (x = 0.5)
    centres = both.triangles_center[hit]
    assert np.all(np.abs(centres[:, 0] - 0.5) < 0.35)
    b.apply_translation([2.0, 0.0, 0.0])
    apart = trimesh.util.concatenate([a, b])
    assert len(self_intersecting_faces(apart.vertices, apart.faces)) == 0


def test_two_faces_sharing_a_vertex_that_cross_each_other():
    # T1 in z = 0; T2 shares its corner 0 and pierces it along x = y = 0.2.
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0.2, 0.2, -1], [0.2, 0.2, 1]])
    np.testing.assert_array_equal(self_intersecting_faces(v, [[0, 1, 2], [0, 3, 4]]), [0, 1])
    # turned away (x = y = -0.2: the plane x = y meets T1 only at the shared vertex)
    v[3:, :2] = -0.2
    assert len(self_intersecting_faces(v, [[0, 1, 2], [0, 3, 4]])) == 0


def test_coplanar_overlaps_touching_and_duplicate_faces():
    tri = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    # no shared vertex: a smaller triangle inside, in the same plane
    v = np.vstack([tri, [[0.1, 0.1, 0], [0.3, 0.1, 0], [0.1, 0.3, 0]]])
    assert len(self_intersecting_faces(v, [[0, 1, 2], [3, 4, 5]])) == 2
    # ... and one beside it in the plane: no overlap
    v[3:, 0] += 2.0
    assert len(self_intersecting_faces(v, [[0, 1, 2], [3, 4, 5]])) == 0
    # a vertex of another face touching the middle of the first (not coplanar)
    v = np.vstack([tri, [[0.25, 0.25, 0], [0.3, 0.4, 1], [0.5, 0.2, 1]]])
    assert len(self_intersecting_faces(v, [[0, 1, 2], [3, 4, 5]])) == 2
    # sharing an edge, folded flat onto each other vs. flat side by side
    v = np.vstack([tri, [[0.5, 0.2, 0], [1, 1, 0]]])
    assert len(self_intersecting_faces(v, [[0, 1, 2], [1, 0, 3]])) == 2
    assert len(self_intersecting_faces(v, [[0, 1, 2], [2, 1, 4]])) == 0
    # sharing a vertex, coplanar: overlapping sectors vs. sectors side by side
    v = np.vstack([tri, [[1, 1, 0], [-1, 1, 0], [-1, -1, 0]]])
    assert len(self_intersecting_faces(v, [[0, 1, 2], [0, 3, 4]])) == 2
    assert len(self_intersecting_faces(v, [[0, 1, 2], [0, 4, 5]])) == 0
    # the same face twice
    assert len(self_intersecting_faces(tri, [[0, 1, 2], [0, 2, 1]])) == 2


def test_a_mirror_inverts_exactly_the_faces_it_turns_over():
    # Mirroring z maps a face normal n to (-nx, -ny, nz) (orientation flips with det = -1), so a
    # face is inverted exactly when nz^2 < nx^2 + ny^2: the equatorial band, not the caps.
    s = trimesh.creation.icosphere(subdivisions=2)
    mirrored = np.array(s.vertices) * [1.0, 1.0, -1.0]
    n = np.asarray(s.face_normals)
    expected = np.flatnonzero(n[:, 2] ** 2 < n[:, 0] ** 2 + n[:, 1] ** 2)
    np.testing.assert_array_equal(inverted_faces(mirrored, s.faces, s.vertices), expected)
    assert 0 < len(expected) < len(s.faces)


def test_validity_keeps_the_fields_its_callers_read():
    ok = Validity(watertight=True, n_self_intersecting=0, n_inverted=-1)
    assert ok.valid and ok.problems == []


# ------------------------------------------------------------------- TetGen as oracle
def test_self_intersections_agree_with_tetgen_on_random_surfaces(tmp_path):
    """Perturbed spheres, half of them self-intersecting: where TetGen gives a verdict (it
    tetrahedralises the surface, or refuses it for self-intersections), ours is the same."""
    v0, f, _ = _sphere(2)
    rng = np.random.default_rng(0)
    surfaces = [(v0 + s * rng.standard_normal(v0.shape), f)
                for s in rng.choice([0.02, 0.05, 0.1, 0.15], size=40)]
    verdicts = tetgen_verdicts(surfaces, tmp_path)
    ours = [len(self_intersecting_faces(v, f)) > 0 for v, f in surfaces]
    judged = [(o, t) for o, t in zip(ours, verdicts) if t in ("ok", "self")]
    assert len(judged) >= 30 and 5 <= sum(t == "self" for _, t in judged) <= 35
    assert all(o == (t == "self") for o, t in judged)
    # TetGen's other failures (internal errors, crashes) happen only on surfaces we reject
    assert all(o for o, t in zip(ours, verdicts) if t not in ("ok", "self"))
    assert list(tmp_path.iterdir()) == [] or all(p.name.endswith((".face", ".node"))
                                                 for p in tmp_path.iterdir())


def test_coplanar_fan_overlaps_are_caught_as_tetgen_catches_them(tmp_path):
    """Faces sharing a vertex that overlap in their common plane: a segment-crossing test that
    skips pairs with a shared vertex passes these; TetGen refuses them, and so do we."""
    surfaces = _flat_fold_boxes()[:12]
    verdicts = tetgen_verdicts(surfaces, tmp_path)
    ours = [len(self_intersecting_faces(v, f)) > 0 for v, f in surfaces]
    judged = [(o, t) for o, t in zip(ours, verdicts) if t in ("ok", "self")]
    assert sum(t == "self" for _, t in judged) >= 4
    assert all(o == (t == "self") for o, t in judged)


def test_a_valid_sphere_and_a_pushed_vertex_agree_with_tetgen(tmp_path):
    v, f, _ = _sphere(3)
    bad = v.copy()
    bad[int(np.argmax(v[:, 2]))] = [0.013, 0.021, -1.5]
    assert tetgen_verdicts([(v, f), (bad, f)], tmp_path) == ["ok", "self"]
    assert mesh_validity(v, f).valid and not mesh_validity(bad, f).valid
