"""The `Mesh` container on tiny exact meshes: areas, volumes, normals, topology, validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import trimesh

from shapeatlas.errors import MeshError, OpenMeshError
from shapeatlas.mesh import Mesh

# Unit cube [0, 1]^3, two counter-clockwise (seen from outside) triangles per side.
CUBE_V = np.array(
    [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]],
    dtype=float,
)
CUBE_F = np.array(
    [
        [0, 2, 1], [0, 3, 2],  # z = 0
        [4, 5, 6], [4, 6, 7],  # z = 1
        [0, 1, 5], [0, 5, 4],  # y = 0
        [3, 7, 6], [3, 6, 2],  # y = 1
        [0, 4, 7], [0, 7, 3],  # x = 0
        [1, 2, 6], [1, 6, 5],  # x = 1
    ]
)  # fmt: skip
CUBE_NORMALS = np.repeat(
    [[0, 0, -1], [0, 0, 1], [0, -1, 0], [0, 1, 0], [-1, 0, 0], [1, 0, 0]], 2, axis=0
)

TET_V = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
TET_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


@pytest.fixture
def cube() -> Mesh:
    return Mesh(CUBE_V, CUBE_F, name="cube")


@pytest.fixture
def tet() -> Mesh:
    return Mesh(TET_V, TET_F, name="tet")


def test_unit_cube(cube):
    assert (cube.n_vertices, cube.n_faces) == (8, 12)
    np.testing.assert_allclose(cube.face_areas, 0.5)
    assert cube.area == pytest.approx(6.0)
    assert cube.volume == pytest.approx(1.0)
    assert cube.signed_volume == pytest.approx(1.0)  # positive: the normals point outward
    np.testing.assert_allclose(cube.face_normals, CUBE_NORMALS, atol=1e-15)
    assert cube.is_watertight
    assert cube.euler_characteristic == 2
    assert cube.edges.shape == (18, 2)  # 12 cube edges + 6 face diagonals
    assert np.all(cube.edges[:, 0] < cube.edges[:, 1])
    assert cube.n_components == 1
    np.testing.assert_allclose(cube.bounds, [[0, 0, 0], [1, 1, 1]])
    np.testing.assert_allclose(cube.extent, [1, 1, 1])
    np.testing.assert_allclose(cube.centroid, [0.5, 0.5, 0.5])
    # Corner normals are unit, point away from the centre, and are area-weighted: corner 1 touches
    # two triangles of side x = 1 but one each of y = 0 and z = 0, so leans towards +x.
    diagonal = (CUBE_V - 0.5) / np.linalg.norm(CUBE_V - 0.5, axis=1, keepdims=True)
    np.testing.assert_allclose(np.linalg.norm(cube.vertex_normals, axis=1), 1.0)
    assert np.einsum("ij,ij->i", cube.vertex_normals, diagonal).min() > 0.9
    np.testing.assert_allclose(cube.vertex_normals[0], -np.ones(3) / np.sqrt(3.0), atol=1e-15)
    np.testing.assert_allclose(cube.vertex_normals[1], [2, -1, -1] / np.sqrt(6.0), atol=1e-15)


def test_tetrahedron(tet):
    assert tet.area == pytest.approx(1.5 + np.sqrt(3.0) / 2.0)
    assert tet.volume == pytest.approx(1.0 / 6.0)
    expected = np.array([[0, 0, -1], [0, -1, 0], [-1, 0, 0], np.ones(3) / np.sqrt(3.0)])
    np.testing.assert_allclose(tet.face_normals, expected, atol=1e-15)
    assert tet.is_watertight and tet.euler_characteristic == 2
    assert len(tet.edges) == 6


def test_icosphere_approaches_the_sphere():
    r = 2.0
    s = trimesh.creation.icosphere(subdivisions=3, radius=r)
    m = Mesh(s.vertices, s.faces, name="sphere")
    assert m.volume == pytest.approx(4.0 / 3.0 * np.pi * r**3, rel=0.02)
    assert m.area == pytest.approx(4.0 * np.pi * r**2, rel=0.02)
    assert m.volume == pytest.approx(s.volume, rel=1e-12)
    radial = m.vertices / np.linalg.norm(m.vertices, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", m.vertex_normals, radial).min() > 0.999
    np.testing.assert_allclose(np.linalg.norm(m.face_normals, axis=1), 1.0)
    assert m.is_watertight and m.euler_characteristic == 2
    np.testing.assert_allclose(m.centroid, 0.0, atol=1e-12)


def test_open_mesh_has_no_volume():
    m = Mesh(CUBE_V, CUBE_F[:-1], name="open_cube")  # one triangle missing
    assert not m.is_watertight
    assert m.area == pytest.approx(5.5)
    with pytest.raises(OpenMeshError, match="open_cube.*watertight"):
        m.volume
    with pytest.raises(OpenMeshError):
        m.signed_volume


def test_inconsistently_oriented_mesh_is_not_watertight():
    faces = CUBE_F.copy()
    faces[0] = faces[0, ::-1]
    assert not Mesh(CUBE_V, faces).is_watertight


def test_two_components():
    v = np.vstack([CUBE_V, TET_V + 5.0])
    f = np.vstack([CUBE_F, TET_F + len(CUBE_V)])
    m = Mesh(v, f, name="two")
    assert m.n_components == 2
    labels = m.component_labels
    assert len(set(labels[:8])) == 1 and len(set(labels[8:])) == 1 and labels[0] != labels[8]
    assert m.is_watertight
    assert m.euler_characteristic == 4
    assert m.volume == pytest.approx(1.0 + 1.0 / 6.0)
    assert m.area == pytest.approx(6.0 + 1.5 + np.sqrt(3.0) / 2.0)


def test_transformed_with_a_reflection_keeps_outward_normals(cube):
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    mirror[:3, 3] = [3.0, 0.0, 0.0]
    m = cube.transformed(mirror)
    np.testing.assert_allclose(m.bounds, [[2, 0, 0], [3, 1, 1]])
    assert m.signed_volume == pytest.approx(1.0)
    outward = m.vertices[m.faces].mean(axis=1) - m.centroid
    assert np.all(np.einsum("ij,ij->i", m.face_normals, outward) > 0)
    assert m.name == "cube"
    np.testing.assert_array_equal(cube.vertices, CUBE_V)  # the input is untouched


def test_transformed_rotation_and_scale(tet):
    c, s = np.cos(0.3), np.sin(0.3)
    t = np.eye(4)
    t[:3, :3] = 2.0 * np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    m = tet.transformed(t)
    assert m.volume == pytest.approx(8.0 / 6.0)
    np.testing.assert_array_equal(m.faces, tet.faces)


def test_arrays_are_read_only_and_the_mesh_is_frozen(cube):
    m = Mesh(CUBE_V, CUBE_F, point_data={"thickness": np.arange(8.0)})
    for arr in (m.vertices, m.faces, m.face_areas, m.face_normals, m.vertex_normals, m.edges,
                m.point_data["thickness"]):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.vertices = CUBE_V  # type: ignore[misc]
    src = CUBE_V.copy()
    m2 = Mesh(src, CUBE_F)
    src[0] = 100.0  # the mesh copied its input
    np.testing.assert_array_equal(m2.vertices[0], [0, 0, 0])


def test_with_vertices_keeps_faces_and_name(cube):
    m = cube.with_vertices(CUBE_V * 2.0)
    assert m.volume == pytest.approx(8.0) and m.name == "cube"
    np.testing.assert_array_equal(m.faces, cube.faces)


def test_float_faces_holding_integers_are_accepted():
    m = Mesh(TET_V, TET_F.astype(float))
    assert m.faces.dtype == np.int64


@pytest.mark.parametrize(
    "vertices, faces, message",
    [
        (np.where(np.arange(24).reshape(8, 3) == 4, np.nan, CUBE_V), CUBE_F, "NaN"),
        (np.where(np.arange(24).reshape(8, 3) == 4, np.inf, CUBE_V), CUBE_F, "infinite"),
        (CUBE_V, np.vstack([CUBE_F, [[0, 1, 8]]]), "out of range"),
        (CUBE_V, np.vstack([CUBE_F, [[0, -1, 2]]]), "out of range"),
        (CUBE_V, np.zeros((0, 3), dtype=int), "point cloud"),
        (CUBE_V, None, "point cloud"),
        (CUBE_V[:, :2], CUBE_F, r"vertices must have shape \(V, 3\)"),
        (np.zeros((0, 3)), CUBE_F, "no vertices"),
        (CUBE_V, np.zeros((4, 4), dtype=int), r"faces must be triangles"),
        (CUBE_V, CUBE_F + 0.5, "integers"),
    ],
)
def test_bad_constructors_raise_mesh_error_naming_the_mesh(vertices, faces, message):
    faces = np.zeros((0, 3), dtype=int) if faces is None else faces
    with pytest.raises(MeshError, match=message) as err:
        Mesh(vertices, faces, name="liver_017.vtk")
    assert err.value.source == "liver_017.vtk"
    assert str(err.value).startswith("liver_017.vtk: ")
    assert isinstance(err.value, ValueError)


def test_point_data_must_match_the_vertices():
    with pytest.raises(MeshError, match="point_data"):
        Mesh(CUBE_V, CUBE_F, name="c", point_data={"x": np.zeros(7)})


def test_zero_area_check():
    flat = Mesh(np.zeros((3, 3)), np.array([[0, 1, 2]]), name="flat")
    with pytest.raises(MeshError, match="zero area"):
        flat.check_area()
    Mesh(TET_V, TET_F).check_area()  # does not raise


def test_to_trimesh_keeps_vertex_order(tet):
    t = tet.to_trimesh()
    np.testing.assert_array_equal(t.vertices, tet.vertices)
    np.testing.assert_array_equal(t.faces, tet.faces)
    assert t.volume == pytest.approx(tet.volume)
