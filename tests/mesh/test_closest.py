"""Closest points on triangle surfaces, against exact answers and trimesh as an independent oracle."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from shapes import icosphere, inscribed_radius

from shapeatlas.errors import MeshError
from shapeatlas.mesh.closest import (
    ClosestPoints,
    closest_points_on_surface,
    point_to_surface_distance,
)
from shapeatlas.mesh.core import Mesh

BIG_TRIANGLE_V = np.array([[0.0, 0.0, 0.0], [30.0, 0.0, 0.0], [0.0, 30.0, 0.0]])
BIG_TRIANGLE_F = np.array([[0, 1, 2]])


def random_directions(n: int, seed: int) -> np.ndarray:
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def bumpy_mesh_with_a_huge_triangle(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    v, f = icosphere(20.0, subdivisions=3)
    v = v * (1.0 + 0.08 * rng.standard_normal((len(v), 1)))
    # One huge triangle far larger than the others, beside the sphere.
    v = np.vstack([v, [[-60.0, -60.0, -25.0], [60.0, -60.0, -25.0], [0.0, 60.0, -25.0]]])
    f = np.vstack([f, [[len(v) - 3, len(v) - 2, len(v) - 1]]])
    return v, f


# ------------------------------------------------------------------------------ exact cases
def test_point_above_a_big_triangle_interior_gets_its_exact_height():
    centre = BIG_TRIANGLE_V.mean(axis=0)  # (10, 10, 0), far (14 mm+) from every corner
    p = centre + [0.0, 0.0, 0.25]
    res = closest_points_on_surface(p[None], BIG_TRIANGLE_V, BIG_TRIANGLE_F)
    assert isinstance(res, ClosestPoints)
    assert res.distances[0] == pytest.approx(0.25, abs=1e-12)
    np.testing.assert_allclose(res.points[0], centre, atol=1e-12)
    assert res.face_index[0] == 0
    # From below, too.
    d = point_to_surface_distance((centre - [0, 0, 4.0])[None], BIG_TRIANGLE_V, BIG_TRIANGLE_F)
    assert d[0] == pytest.approx(4.0, abs=1e-12)


def test_points_beside_a_triangle_are_measured_to_its_edge_or_corner():
    pts = np.array([[-1.0, 5.0, 0.0], [-3.0, -4.0, 0.0], [20.0, 20.0, 0.0], [5.0, -2.0, 2.0]])
    res = closest_points_on_surface(pts, BIG_TRIANGLE_V, BIG_TRIANGLE_F)
    np.testing.assert_allclose(res.distances, [1.0, 5.0, np.sqrt(2) * 5.0, np.sqrt(8.0)])
    np.testing.assert_allclose(
        res.points, [[0, 5, 0], [0, 0, 0], [15, 15, 0], [5, 0, 0]], atol=1e-12
    )


def test_the_nearer_of_two_parallel_triangles_is_reported():
    v = np.vstack([BIG_TRIANGLE_V, BIG_TRIANGLE_V + [0.0, 0.0, 3.0]])
    f = np.array([[0, 1, 2], [3, 4, 5]])
    pts = np.array([[5.0, 5.0, 1.0], [5.0, 5.0, 2.5], [5.0, 5.0, -1.0], [5.0, 5.0, 7.0]])
    res = closest_points_on_surface(pts, v, f)
    np.testing.assert_array_equal(res.face_index, [0, 1, 0, 1])
    np.testing.assert_allclose(res.distances, [1.0, 0.5, 1.0, 4.0], atol=1e-12)


def test_degenerate_triangles_count_as_their_segment_or_point():
    # A collinear triangle (0, 1, 2 on the x axis), and one with all three corners equal.
    v = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [10, 10, 10]])
    f = np.array([[0, 1, 2], [3, 3, 3]])
    pts = np.array([[1.0, 1.0, 0.0], [3.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.5, 0.0, 2.0],
                    [10.0, 10.0, 12.0]])
    res = closest_points_on_surface(pts, v, f)
    np.testing.assert_allclose(res.distances, [1.0, 1.0, 1.0, 2.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(
        res.points, [[1, 0, 0], [2, 0, 0], [0, 0, 0], [0.5, 0, 0], [10, 10, 10]], atol=1e-12)
    np.testing.assert_array_equal(res.face_index, [0, 0, 0, 0, 1])


@pytest.mark.parametrize("r_points, r_surface", [(2.0, 1.0), (0.5, 1.0), (1.02, 1.0)])
def test_points_on_a_concentric_sphere_are_radius_difference_away(r_points, r_surface):
    v, f = icosphere(r_surface, subdivisions=4)
    pts = r_points * random_directions(1000, seed=3)
    d = point_to_surface_distance(pts, v, f)
    r_in = inscribed_radius(v, f)
    # The polyhedron lies between its inscribed sphere and the sphere through its vertices.
    lo, hi = (r_points - r_surface, r_points - r_in) if r_points > r_surface else (
        r_in - r_points, r_surface - r_points)
    assert np.all(d >= lo - 1e-12) and np.all(d <= hi + 1e-12)
    np.testing.assert_allclose(d, abs(r_points - r_surface), atol=r_surface - r_in + 1e-12)
    assert r_surface - r_in < 2e-3 * r_surface  # so the tolerance above is tight


def test_vertices_are_on_the_surface_on_a_face_that_uses_them():
    v, f = icosphere(10.0, subdivisions=2)
    res = closest_points_on_surface(v, v, f)
    np.testing.assert_allclose(res.distances, 0.0, atol=1e-12)
    np.testing.assert_allclose(res.points, v, atol=1e-12)
    assert (f[res.face_index] == np.arange(len(v))[:, None]).any(axis=1).all()


# ------------------------------------------------------------------- against trimesh (oracle)
def test_closest_points_lie_on_their_reported_face_at_the_reported_distance():
    v, f = icosphere(10.0, subdivisions=3)
    pts = np.random.default_rng(4).normal(size=(500, 3)) * 8.0
    res = closest_points_on_surface(pts, v, f)
    np.testing.assert_allclose(np.linalg.norm(pts - res.points, axis=1), res.distances, atol=1e-9)
    # The reported face's own closest point (trimesh's kernel) is the reported point.
    on_face = trimesh.triangles.closest_point(v[f[res.face_index]], pts)
    np.testing.assert_allclose(res.points, on_face, atol=1e-9)


def test_matches_trimesh_on_a_bumpy_mesh_with_uneven_triangles():
    v, f = bumpy_mesh_with_a_huge_triangle(seed=5)
    pts = np.random.default_rng(6).uniform(-40.0, 40.0, size=(3000, 3))
    ours = closest_points_on_surface(pts, v, f)
    ref_points, ref_d, _ = trimesh.proximity.closest_point(trimesh.Trimesh(v, f, process=False),
                                                           pts)
    np.testing.assert_allclose(ours.distances, ref_d, atol=1e-9)
    # Closest points are unique except where a point is equidistant from two places (~never).
    np.testing.assert_allclose(ours.points, ref_points, atol=1e-6)
    assert ours.distances.shape == (3000,) and ours.points.shape == (3000, 3)
    assert ours.face_index.shape == (3000,) and np.issubdtype(ours.face_index.dtype, np.integer)


# ----------------------------------------------------------------------------- argument forms
def test_mesh_pair_and_array_arguments_agree_whatever_their_dtype_and_layout():
    v, f = bumpy_mesh_with_a_huge_triangle(seed=7)
    pts = np.random.default_rng(8).uniform(-30.0, 30.0, size=(200, 3))
    want = point_to_surface_distance(pts, v, f)
    mesh = Mesh(v, f, name="bumpy")
    strided = np.repeat(pts, 2, axis=1)[:, ::2]  # a non-contiguous view equal to pts
    for got in (
        point_to_surface_distance(pts, mesh),
        point_to_surface_distance(pts, (v, f)),
        point_to_surface_distance(strided, np.asfortranarray(v), f.astype(np.int32)),
        point_to_surface_distance(pts.tolist(), v.tolist(), f.tolist()),
    ):
        np.testing.assert_allclose(got, want, atol=1e-12)
    # A Mesh as the query points means its vertices.
    np.testing.assert_allclose(point_to_surface_distance(mesh, v, f), 0.0, atol=1e-12)
    d = point_to_surface_distance(np.array([[10.0, 10.0, 3.0]]),
                                  Mesh(BIG_TRIANGLE_V, BIG_TRIANGLE_F, name="tri"))
    assert d[0] == pytest.approx(3.0)


def test_surface_arguments_are_validated():
    with pytest.raises(ValueError, match="faces"):
        point_to_surface_distance(np.zeros((1, 3)), BIG_TRIANGLE_V)
    with pytest.raises(MeshError, match="surface.*out of range"):
        point_to_surface_distance(np.zeros((1, 3)), BIG_TRIANGLE_V, np.array([[0, 1, 5]]))
    mesh = Mesh(BIG_TRIANGLE_V, BIG_TRIANGLE_F)
    with pytest.raises(ValueError, match="not both"):
        point_to_surface_distance(np.zeros((1, 3)), mesh, BIG_TRIANGLE_F)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 3)), "empty"),
    (np.zeros((4, 2)), "shape"),
    (np.array([[0.0, np.nan, 0.0]]), "NaN"),
])
def test_query_points_are_validated(bad, message):
    with pytest.raises(ValueError, match=f"points.*{message}|{message}.*points"):
        closest_points_on_surface(bad, BIG_TRIANGLE_V, BIG_TRIANGLE_F)
