"""Surface distances, volumes and areas on point sets and meshes with known answers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import trimesh
from shapes import icosphere, inscribed_radius

from shapeatlas.errors import OpenMeshError
from shapeatlas.mesh import Mesh, closest
from shapeatlas.metrics import (
    ClosestPoints,
    SurfaceDistances,
    chamfer_distance,
    closest_points_on_surface,
    enclosed_volume_ml,
    hausdorff95,
    hausdorff_distance,
    mesh_surface_distances,
    point_to_surface_distance,
    surface_area,
    surface_distances,
    weighted_percentile,
)

TET_V = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
TET_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def unit_cube() -> tuple[np.ndarray, np.ndarray]:
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    return np.array(box.vertices), np.array(box.faces)


# --------------------------------------------------------------------------- point sets
def test_identical_point_sets_are_at_zero_distance():
    pts = np.random.default_rng(0).normal(size=(200, 3))
    assert chamfer_distance(pts, pts) == 0.0
    assert hausdorff_distance(pts, pts) == 0.0
    assert hausdorff95(pts, pts) == 0.0


def test_planar_grid_translated_along_its_normal_is_exactly_t_away():
    g = np.stack(np.meshgrid(np.arange(10.0), np.arange(8.0), indexing="ij"), -1).reshape(-1, 2)
    a = np.column_stack([g, np.zeros(len(g))])
    t = 2.5  # larger than the spacing (1), so nothing but the point straight above is nearest
    b = a + [0.0, 0.0, t]
    d_ab, d_ba = surface_distances(a, b)
    np.testing.assert_allclose(d_ab, t)
    np.testing.assert_allclose(d_ba, t)
    assert chamfer_distance(a, b) == pytest.approx(t)
    assert hausdorff_distance(a, b) == pytest.approx(t)
    assert hausdorff95(a, b) == pytest.approx(t)


def test_line_shifted_along_itself_far_past_its_length_has_closed_form_distances():
    n, s, t = 21, 0.5, 100.0
    a = np.zeros((n, 3))
    a[:, 0] = s * np.arange(n)
    b = a + [t, 0.0, 0.0]
    # Every a_i is nearest to b_0 = t, at t - s*i (and symmetrically for b): mean t - s*(n-1)/2.
    mean = t - s * (n - 1) / 2
    assert chamfer_distance(a, b) == pytest.approx(mean)
    assert hausdorff_distance(a, b) == pytest.approx(t)
    # Linear-interpolation 95th percentile of {t - s*i}: t - s*(n-1) + 0.95*s*(n-1).
    assert hausdorff95(a, b) == pytest.approx(t - 0.05 * s * (n - 1))


def test_chamfer_averages_the_two_directed_unsquared_means():
    a = np.zeros((1, 3))
    b = np.array([[0.0, 0, 0], [10.0, 0, 0]])
    d_ab, d_ba = surface_distances(a, b)
    np.testing.assert_allclose(d_ab, [0.0])
    np.testing.assert_allclose(d_ba, [0.0, 10.0])
    assert chamfer_distance(a, b) == pytest.approx(0.5 * (0.0 + 5.0))
    assert hausdorff_distance(a, b) == pytest.approx(10.0)
    assert hausdorff95(a, b) == pytest.approx(max(0.0, 9.5))  # max of the directed P95s


def test_hd95_never_exceeds_hausdorff():
    rng = np.random.default_rng(1)
    for _ in range(5):
        a, b = rng.normal(size=(300, 3)), rng.normal(size=(250, 3)) * 1.5 + 0.3
        assert 0.0 < hausdorff95(a, b) <= hausdorff_distance(a, b)


def test_weights_generalise_the_unweighted_means_and_percentiles():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(40, 3))
    assert chamfer_distance(a, b, a_weights=np.full(50, 3.0), b_weights=np.ones(40)) == (
        pytest.approx(chamfer_distance(a, b))
    )
    x = rng.random(37)
    for q in (0, 5, 50, 95, 100):
        assert weighted_percentile(x, q, weights=np.full(37, 0.2)) == pytest.approx(
            np.percentile(x, q)
        )
    # Zero-weight values do not count.
    w = np.ones(37)
    w[:5] = 0.0
    assert weighted_percentile(x, 95, weights=w) == pytest.approx(np.percentile(x[5:], 95))


def test_meshes_are_accepted_as_point_sets():
    v, f = unit_cube()
    m = Mesh(v, f, name="cube")
    # Shifted by 3 along z: each face's corners are 2 (facing) or 3 (far face) from the other cube.
    assert chamfer_distance(m, m.with_vertices(v + [0, 0, 3.0])) == pytest.approx(2.5)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((4, 2)), r"\(N, 3\)"),
        (np.zeros((0, 3)), "empty"),
        (np.array([[0.0, np.nan, 0.0]]), "NaN"),
    ],
)
def test_bad_point_sets_raise_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        chamfer_distance(bad, np.zeros((3, 3)))


def test_bad_weights_raise_value_error():
    with pytest.raises(ValueError, match="a_weights"):
        chamfer_distance(np.zeros((3, 3)), np.ones((2, 3)), a_weights=np.ones(2))
    with pytest.raises(ValueError, match="non-negative"):
        hausdorff95(np.zeros((2, 3)), np.ones((2, 3)), b_weights=[1.0, -1.0])


# ---------------------------------------------------------------------- point to surface
def test_point_to_surface_is_re_exported_from_mesh_closest():
    # The engine and its tests live in shapeatlas.mesh.closest (tests/mesh/test_closest.py).
    assert closest_points_on_surface is closest.closest_points_on_surface
    assert point_to_surface_distance is closest.point_to_surface_distance
    assert ClosestPoints is closest.ClosestPoints
    v, f = icosphere(2.0, subdivisions=2)
    assert point_to_surface_distance(np.zeros((1, 3)), v, f)[0] == pytest.approx(
        inscribed_radius(v, f))


# ------------------------------------------------------------------------ mesh to mesh
def test_identical_meshes_are_at_zero_distance():
    v, f = icosphere(5.0, subdivisions=2)
    res = mesh_surface_distances((v, f), Mesh(v, f))
    assert isinstance(res, SurfaceDistances)
    assert dataclasses.astuple(res) == pytest.approx((0.0,) * 5, abs=1e-12)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.chamfer = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("n_samples", [None, 5000])
def test_concentric_spheres(n_samples):
    inner = icosphere(1.0, subdivisions=3)
    outer = icosphere(1.5, subdivisions=4)
    res = mesh_surface_distances(inner, outer, n_samples=n_samples, random_state=0)
    # Faceting moves each sphere's faces inward by at most r - r_in (0.0045 and 0.0017 here).
    tol = (1.0 - inscribed_radius(*inner)) + (1.5 - inscribed_radius(*outer)) + 1e-9
    for value in (res.chamfer, res.hausdorff, res.hd95, res.mean_ab, res.mean_ba):
        assert value == pytest.approx(0.5, abs=tol)
    assert res.chamfer == pytest.approx(0.5 * (res.mean_ab + res.mean_ba))
    assert res.hd95 <= res.hausdorff


def _unevenly_triangulated_square() -> tuple[np.ndarray, np.ndarray]:
    """Unit square at z = 0, its left half meshed ten times finer in x than its right half."""
    xs = np.concatenate([np.linspace(0.0, 0.5, 21), [0.75, 1.0]])
    ys = np.linspace(0.0, 1.0, 5)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    v = np.column_stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)])
    ny = len(ys)
    faces = []
    for i in range(len(xs) - 1):
        for j in range(ny - 1):
            p, q, r, s = i * ny + j, (i + 1) * ny + j, (i + 1) * ny + j + 1, i * ny + j + 1
            faces += [[p, q, r], [p, r, s]]
    return v, np.array(faces)


def test_mesh_distances_are_area_weighted_not_vertex_weighted():
    sq_v, sq_f = _unevenly_triangulated_square()
    # Plane z = x, large enough that every closest point is inside it: d(x, y, 0) = x / sqrt(2).
    plane_v = np.array([[-5.0, -5, -5], [5, -5, 5], [5, 5, 5], [-5, 5, -5]])
    plane_f = np.array([[0, 1, 2], [0, 2, 3]])
    exact = 0.5 / np.sqrt(2.0)  # the mean of x / sqrt(2) over the unit square
    res = mesh_surface_distances((sq_v, sq_f), (plane_v, plane_f))
    assert res.mean_ab == pytest.approx(exact, rel=1e-9)  # vertex areas integrate linear f exactly
    sampled = mesh_surface_distances((sq_v, sq_f), (plane_v, plane_f), n_samples=20000,
                                     random_state=1)
    assert sampled.mean_ab == pytest.approx(exact, abs=0.01)
    # The plain vertex mean is biased towards the densely meshed half, so the test has teeth.
    assert abs(sq_v[:, 0].mean() / np.sqrt(2.0) - exact) > 0.05


def test_sampling_is_reproducible_with_a_seed():
    a, b = icosphere(1.0, subdivisions=2), icosphere(1.3, subdivisions=3)
    r1 = mesh_surface_distances(a, b, n_samples=500, random_state=7)
    r2 = mesh_surface_distances(a, b, n_samples=500, random_state=7)
    assert r1 == r2
    with pytest.raises(ValueError, match="n_samples"):
        mesh_surface_distances(a, b, n_samples=0)


# --------------------------------------------------------------------------- volume, area
def test_unit_cube_volume_and_area():
    v, f = unit_cube()
    assert enclosed_volume_ml(v, f) == pytest.approx(0.001)  # 1 mm^3
    assert enclosed_volume_ml(v * 10.0, f) == pytest.approx(1.0)  # 1000 mm^3
    assert enclosed_volume_ml(v, f[:, ::-1]) == pytest.approx(0.001)  # orientation-free
    assert surface_area(v, f) == pytest.approx(6.0)


def test_tetrahedron_volume_and_area():
    assert enclosed_volume_ml(TET_V, TET_F) == pytest.approx(1.0 / 6.0 / 1000.0)
    assert surface_area(TET_V, TET_F) == pytest.approx(1.5 + np.sqrt(3.0) / 2.0)
    assert enclosed_volume_ml(Mesh(TET_V, TET_F)) == pytest.approx(1.0 / 6000.0)


def test_icosphere_volume_and_area_approach_the_sphere():
    r = 10.0
    v, f = icosphere(r, subdivisions=4)
    exact_polyhedron = trimesh.Trimesh(v, f, process=False).volume
    assert enclosed_volume_ml(v, f) == pytest.approx(exact_polyhedron / 1000.0, rel=1e-10)
    assert enclosed_volume_ml(v, f) == pytest.approx(4.0 / 3.0 * np.pi * r**3 / 1000.0, rel=5e-3)
    assert surface_area(v, f) == pytest.approx(4.0 * np.pi * r**2, rel=5e-3)


def test_open_mesh_volume_raises_open_mesh_error():
    v, f = unit_cube()
    with pytest.raises(OpenMeshError, match="watertight"):
        enclosed_volume_ml(v, f[:-1])
    with pytest.raises(OpenMeshError, match="open_box"):
        enclosed_volume_ml(Mesh(v, f[:-2], name="open_box"))
    assert surface_area(v, f[:-2]) == pytest.approx(5.0)  # area is fine on open meshes


def test_weighted_percentile_validates_its_arguments():
    with pytest.raises(ValueError, match="between 0 and 100"):
        weighted_percentile(np.arange(3.0), 101)
    with pytest.raises(ValueError, match="weights"):
        weighted_percentile(np.arange(3.0), 50, weights=np.ones(2))


def test_surface_matching_sees_points_inside_large_triangles_as_on_the_surface():
    # The input: a 20 mm square as two triangles. The matched shape: a 5 x 5 grid on it.
    from types import SimpleNamespace

    from shapeatlas.metrics.ground_truth import surface_matching
    from shapeatlas.metrics.surface import point_set_distances

    plate = Mesh(np.array([[0, 0, 0], [20, 0, 0], [20, 20, 0], [0, 20, 0]], float),
                 np.array([[0, 1, 2], [0, 2, 3]]))
    g = np.linspace(0.0, 20.0, 5)
    grid = np.array([[x, y, 0.0] for y in g for x in g])
    faces = [[r * 5 + c, r * 5 + c + 1, (r + 1) * 5 + c + 1] for r in range(4) for c in range(4)]
    faces += [[r * 5 + c, (r + 1) * 5 + c + 1, (r + 1) * 5 + c] for r in range(4) for c in range(4)]
    corr = [SimpleNamespace(points=grid)]
    on = surface_matching([plate], corr, np.array(faces))
    assert on["surface_chamfer_mm"] < 1e-9 and on["surface_hausdorff_mm"] < 1e-9
    # Vertex to vertex, the grid's centre is 14 mm from every corner.
    assert point_set_distances(plate.vertices, grid).hausdorff == pytest.approx(np.hypot(10, 10))
    # Lifted 2 mm off the plate, it is 2 mm away everywhere.
    lifted = [SimpleNamespace(points=grid + [0.0, 0.0, 2.0])]
    off = surface_matching([plate], lifted, np.array(faces))
    assert off["surface_chamfer_mm"] == pytest.approx(2.0)
    assert off["surface_hausdorff_mm"] == pytest.approx(2.0)
