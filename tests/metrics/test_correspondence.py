"""Correspondence error against spherical-domain ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from shapeatlas.data.synthetic_lv import (
    lv_surface,
    random_pose,
    sample_lv_params,
    triangulate_lv,
)
from shapeatlas.metrics.correspondence import (
    correspondence_error,
    locate_on_domain,
    true_correspondence,
)

# Octahedron: a tiny exact triangulation of the domain sphere (outward faces).
OCT_DOMAIN = np.array([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
OCT_FACES = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4],
                      [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
# Shape B: the octahedron stretched and moved, so B's vertices differ from its domain.
OCT_B = OCT_DOMAIN * np.array([3.0, 2.0, 5.0]) + np.array([10.0, -4.0, 1.0])


def test_domain_vertices_return_b_vertices_exactly():
    x = true_correspondence(OCT_DOMAIN, domain_b=OCT_DOMAIN, b_vertices=OCT_B, b_faces=OCT_FACES)
    assert np.array_equal(x, OCT_B)


def test_face_centre_and_central_projection_weights():
    centre = np.array([[1.0, 1.0, 1.0]]) / np.sqrt(3.0)
    x = true_correspondence(centre, domain_b=OCT_DOMAIN, b_vertices=OCT_B, b_faces=OCT_FACES)
    assert np.allclose(x, OCT_B[[0, 2, 4]].mean(axis=0), atol=1e-12)
    # Direction (1, 2, 3): on the plane x + y + z = 1 it is (1, 2, 3)/6, so weights (1, 2, 3)/6.
    q = np.array([[1.0, 2.0, 3.0]]) / np.sqrt(14.0)
    loc = locate_on_domain(q, domain_vertices=OCT_DOMAIN, faces=OCT_FACES)
    assert loc.face[0] == 0
    assert np.allclose(loc.barycentric[0], np.array([1.0, 2.0, 3.0]) / 6.0, atol=1e-12)
    # Orientation of the faces does not matter.
    flipped = locate_on_domain(q, domain_vertices=OCT_DOMAIN, faces=OCT_FACES[:, ::-1])
    assert np.allclose(flipped.barycentric[0], np.array([3.0, 2.0, 1.0]) / 6.0, atol=1e-12)


def test_error_is_the_distance_to_the_true_point():
    q = np.array([[1.0, 2.0, 3.0], [-1.0, -1.0, -1.0]])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    truth = true_correspondence(q, domain_b=OCT_DOMAIN, b_vertices=OCT_B, b_faces=OCT_FACES)
    offset = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, -2.0]])
    err = correspondence_error(truth + offset, domain_query=q, domain_b=OCT_DOMAIN,
                               b_vertices=OCT_B, b_faces=OCT_FACES)
    assert np.allclose(err, [5.0, 2.0], atol=1e-12)


def test_identity_map_of_an_lv_gives_exactly_zero():
    rng = np.random.default_rng(0)
    tri = triangulate_lv(sample_lv_params(rng), n_vertices=1200, rng=rng)
    pose = random_pose(rng)
    verts = tri.vertices @ pose[:3, :3].T + pose[:3, 3]
    err = correspondence_error(verts, domain_query=tri.domain, domain_b=tri.domain,
                               b_vertices=verts, b_faces=tri.faces)
    assert err.shape == (1200,) and np.all(err == 0.0)


def test_retriangulated_copy_gives_sub_millimetre_error():
    rng = np.random.default_rng(1)
    params = sample_lv_params(rng, phenotype="dilated")
    a = triangulate_lv(params, n_vertices=1500, rng=rng)
    b = triangulate_lv(params, n_vertices=3000, rng=rng)
    assert len(a.faces) != len(b.faces)
    pose = random_pose(rng)
    b_file = b.vertices @ pose[:3, :3].T + pose[:3, 3]
    pred = a.vertices @ pose[:3, :3].T + pose[:3, 3]  # A's vertices lie exactly on B's surface
    err = correspondence_error(pred, domain_query=a.domain, domain_b=b.domain,
                               b_vertices=b_file, b_faces=b.faces)
    assert err.max() < 0.5 and err.mean() < 0.1
    # A wrong map (every point sent to its neighbour in vertex order) is clearly penalised.
    wrong = correspondence_error(np.roll(pred, 1, axis=0), domain_query=a.domain,
                                 domain_b=b.domain, b_vertices=b_file, b_faces=b.faces)
    assert wrong.mean() > 1.0


def test_true_points_lie_on_the_continuous_surface_up_to_chord_error():
    rng = np.random.default_rng(2)
    params = sample_lv_params(rng)
    b = triangulate_lv(params, n_vertices=2500, rng=rng)
    q = rng.normal(size=(2000, 3))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    loc = locate_on_domain(q, domain_vertices=b.domain, faces=b.faces)
    assert (loc.barycentric >= 0).all() and np.allclose(loc.barycentric.sum(axis=1), 1.0)
    back = np.einsum("ki,kij->kj", loc.barycentric, b.domain[b.faces[loc.face]])
    back /= np.linalg.norm(back, axis=1, keepdims=True)
    assert np.allclose(back, q, atol=1e-9)
    x = true_correspondence(q, domain_b=b.domain, b_vertices=b.vertices, b_faces=b.faces)
    assert np.linalg.norm(x - lv_surface(params, domain_points=q), axis=1).max() < 0.5


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="same shape"):
        correspondence_error(np.zeros((2, 3)), domain_query=OCT_DOMAIN[:3], domain_b=OCT_DOMAIN,
                             b_vertices=OCT_B, b_faces=OCT_FACES)
    with pytest.raises(ValueError, match="one domain coordinate per vertex"):
        true_correspondence(OCT_DOMAIN, domain_b=OCT_DOMAIN[:5], b_vertices=OCT_B,
                            b_faces=OCT_FACES)
    with pytest.raises(ValueError, match="lies in no face"):
        # Only the upper half of the octahedron: a downward direction is not covered.
        true_correspondence(np.array([[0.6, 0.0, -0.8]]), domain_b=OCT_DOMAIN,
                            b_vertices=OCT_B, b_faces=OCT_FACES[:4])
    with pytest.raises(ValueError, match="zero vectors"):
        locate_on_domain(np.zeros((1, 3)), domain_vertices=OCT_DOMAIN, faces=OCT_FACES)
