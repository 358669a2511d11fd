"""Projection of atlas-topology shapes onto valid meshes (`shapeatlas.mesh.projection`)."""

import numpy as np
import pytest
import trimesh

from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.projection import Projector, failing_faces, project_valid
from shapeatlas.mesh.remesh import untangle
from shapeatlas.mesh.validity import mesh_validity, self_intersecting_faces


@pytest.fixture(scope="module")
def thin_disc():
    """A closed, valid 'lobe': an ellipsoid 100 x 80 x 6 mm (2,562 vertices)."""
    m = trimesh.creation.icosphere(subdivisions=4)
    return np.asarray(m.vertices) * np.array([50.0, 40.0, 3.0]), np.asarray(m.faces)


def _pushed_through(ref: np.ndarray, centre, depth: float, rng) -> np.ndarray:
    """The upper sheet pushed through the lower one by a smooth bump (a crossing that a
    decoder of a thin part makes), plus a little noise."""
    r2 = ((ref[:, :2] - np.asarray(centre)) ** 2).sum(axis=1)
    x = ref.copy()
    x[:, 2] -= depth * np.exp(-r2 / (2 * 6.0 ** 2)) * (ref[:, 2] > 0)
    return x + 0.05 * rng.normal(size=x.shape)


def test_a_valid_shape_comes_back_untouched(thin_disc):
    ref, f = thin_disc
    rng = np.random.default_rng(0)
    # a smooth, large deformation of a valid mesh: valid, so nothing to do
    x = ref @ np.diag([1.2, 0.9, 1.1]) + np.sin(ref[:, [1, 2, 0]] / 30.0)
    assert mesh_validity(x, f, reference=ref).valid
    out, [rep] = project_valid(x, f, ref)
    assert np.array_equal(out, x)
    assert rep.changed == 0 and rep.valid
    assert rep.as_dict() == {"changed_vertices": 0, "max_move_mm": 0.0, "mean_move_mm": 0.0,
                             "rounds": 0}
    assert len(failing_faces(x + 1e-3 * rng.normal(size=x.shape), f, ref)) == 0


def test_crossing_sheets_are_moved_apart_locally(thin_disc):
    ref, f = thin_disc
    rng = np.random.default_rng(1)
    shapes = np.stack([_pushed_through(ref, c, 8.0, rng) for c in ((0, 0), (25, -10), (-30, 15))])
    for x in shapes:
        assert not mesh_validity(x, f, reference=ref).valid
    out, reports = project_valid(shapes, f, ref)
    assert out.shape == shapes.shape
    for x, y, rep in zip(shapes, out, reports):
        assert mesh_validity(y, f, reference=ref).valid
        assert rep.valid
        moved = np.linalg.norm(y - x, axis=1) > 0
        assert rep.changed == moved.sum()
        # local: the bump's neighbourhood moves, most of the surface does not
        assert 0 < rep.changed < 0.25 * len(x)
        assert rep.max_move_mm < 8.0


def test_noise_beyond_any_smooth_shape_still_ends_valid(thin_disc):
    ref, f = thin_disc
    x = ref + np.random.default_rng(2).normal(0.0, 1.0, ref.shape)  # thousands of crossings
    assert len(failing_faces(x, f, ref)) > 1000
    y, [rep] = project_valid(x, f, ref)
    assert mesh_validity(y, f, reference=ref).valid and rep.valid


def test_an_atlas_that_crosses_itself_is_smoothed_first(thin_disc):
    ref, f = thin_disc
    bad_atlas = _pushed_through(ref, (0, 0), 8.0, np.random.default_rng(3))
    assert not Projector(f, bad_atlas).reference_valid
    smoothed, _ = untangle(Mesh(bad_atlas, f, name="atlas"))
    proj = Projector(f, smoothed.vertices)
    assert proj.reference_valid
    y, rep = proj(_pushed_through(ref, (20, 5), 8.0, np.random.default_rng(4)))
    assert rep.valid and mesh_validity(y, f, reference=proj.reference).valid


def test_tetgen_accepts_the_projected_shapes(thin_disc):
    pytest.importorskip("tetgen")
    from shapeatlas.mesh.volume import Tetrahedralizer

    ref, f = thin_disc
    rng = np.random.default_rng(5)
    shapes = np.stack([_pushed_through(ref, c, 7.0, rng) for c in ((10, 10), (-20, -5))])
    out, _ = project_valid(shapes, f, ref)
    with Tetrahedralizer() as mesher:
        for i, y in enumerate(out):
            _, tets = mesher(Mesh(y, f, name=f"projected_{i}"))
            assert len(tets) > 0


def _fold(angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Two triangles sharing edge 0-1, the second folded back onto the first by angle_deg."""
    a = np.radians(angle_deg)
    v = np.array([[0.0, 0, 0], [10, 0, 0], [5, 8, 0], [5, 8 * np.cos(a), 8 * np.sin(a)]])
    return v, np.array([[0, 1, 2], [1, 0, 3]])


def test_faces_folded_flat_onto_each_other_count_as_overlapping():
    for angle, hit in ((0.0, True), (0.01, True), (1.0, True), (1.9, True), (2.5, False),
                       (30.0, False)):
        v, f = _fold(angle)
        assert (len(self_intersecting_faces(v, f)) == 2) == hit, angle


def test_active_mask_limits_the_pairs_judged():
    v = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0],          # face 0, in z = 0
                  [2, 2, -5], [3, 2, 5], [2, 3, 5]])           # face 1 pierces face 0
    f = np.array([[0, 1, 2], [3, 4, 5]])
    assert set(self_intersecting_faces(v, f)) == {0, 1}
    assert set(self_intersecting_faces(v, f, active=np.array([True, False]))) == {0, 1}
    assert len(self_intersecting_faces(v, f, active=np.array([False, False]))) == 0
