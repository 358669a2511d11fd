"""Self-intersection and inverted-face checks on exact shapes."""

from __future__ import annotations

import numpy as np
import trimesh

from shapeatlas.mesh.validity import (
    inverted_faces,
    mesh_validity,
    self_intersecting_faces,
)


def test_a_sphere_is_valid():
    s = trimesh.creation.icosphere(subdivisions=3)
    ok = mesh_validity(s.vertices, s.faces, reference=s.vertices)
    assert ok.watertight and ok.n_self_intersecting == 0 and ok.n_inverted == 0 and ok.valid


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


def test_a_mirror_inverts_exactly_the_faces_it_turns_over():
    # Mirroring z maps a face normal n to (-nx, -ny, nz) (orientation flips with det = -1), so a
    # face is inverted exactly when nz^2 < nx^2 + ny^2: the equatorial band, not the caps.
    s = trimesh.creation.icosphere(subdivisions=2)
    mirrored = np.array(s.vertices) * [1.0, 1.0, -1.0]
    n = np.asarray(s.face_normals)
    expected = np.flatnonzero(n[:, 2] ** 2 < n[:, 0] ** 2 + n[:, 1] ** 2)
    np.testing.assert_array_equal(inverted_faces(mirrored, s.faces, s.vertices), expected)
    assert 0 < len(expected) < len(s.faces)
