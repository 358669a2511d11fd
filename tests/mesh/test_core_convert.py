"""Meshes of other libraries: trimesh and pyvista objects in (`as_mesh`), and out
(`Mesh.to_trimesh`, `Mesh.to_pyvista`). pyvista is optional and not installed for the tests:
its path is tested with a small object that has the same attributes."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import trimesh

import shapeatlas
from shapeatlas.errors import MeshError, ShapeAtlasError
from shapeatlas.mesh import Mesh, as_mesh, read_mesh, write_mesh
from shapeatlas.mesh.core import as_meshes

TET_V = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
TET_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


class FakePolyData:
    """What `as_mesh` reads of a `pyvista.PolyData`: `points`, the flat VTK cell array `faces`
    ([n, i, j, ..., n, ...]), `n_points`, `n_strips` and `point_data`."""

    def __init__(self, points, cells, *, n_strips=0, point_data=None):
        self.points = np.asarray(points, dtype=np.float32)
        self.faces = np.asarray(cells, dtype=np.int64)
        self.n_points = len(self.points)
        self.n_strips = n_strips
        self.point_data = dict(point_data or {})


def _cells(faces: np.ndarray) -> np.ndarray:
    return np.hstack([np.full((len(faces), 1), 3), faces]).ravel()


def test_a_mesh_is_returned_as_is_or_renamed():
    tet = Mesh(TET_V, TET_F, name="tet")
    assert as_mesh(tet) is tet
    again = as_mesh(tet, name="other")
    assert again.name == "other" and again is not tet
    np.testing.assert_array_equal(again.faces, tet.faces)


def test_trimesh_in_keeps_vertices_faces_name_and_vertex_arrays():
    t = trimesh.Trimesh(TET_V, TET_F, process=False)
    t.vertex_attributes["thickness"] = np.array([1.0, 2.0, 3.0, 4.0])
    t.metadata["file_name"] = "tet.ply"
    m = as_mesh(t)
    np.testing.assert_array_equal(m.vertices, TET_V)
    np.testing.assert_array_equal(m.faces, TET_F)
    assert m.name == "tet.ply" and round(m.volume, 6) == round(1 / 6, 6)
    np.testing.assert_array_equal(m.point_data["thickness"], [1.0, 2.0, 3.0, 4.0])
    assert as_mesh(t, name="given").name == "given"


def test_trimesh_round_trip(icosphere):
    back = as_mesh(icosphere.to_trimesh(), name=icosphere.name)
    np.testing.assert_array_equal(back.vertices, icosphere.vertices)
    np.testing.assert_array_equal(back.faces, icosphere.faces)


def test_pyvista_like_in_reads_the_flat_cell_array():
    poly = FakePolyData(TET_V, _cells(TET_F), point_data={"label": np.arange(4),
                                                           "per_cell": np.arange(4 + 1)})
    m = as_mesh(poly)
    np.testing.assert_allclose(m.vertices, TET_V)
    np.testing.assert_array_equal(m.faces, TET_F)
    assert m.name == "mesh" and round(m.area, 6) == round(1.5 + np.sqrt(3) / 2, 6)
    # per-vertex arrays kept, others left out
    assert set(m.point_data) == {"label"}


def test_pyvista_like_quads_and_strips_are_refused_in_one_line():
    square = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 0.5, 1]])
    cells = np.array([3, 0, 1, 4, 4, 0, 1, 2, 3])  # a triangle, then a quad
    with pytest.raises(MeshError, match=r"^roof: only triangle meshes .* a cell of 4 points: "
                                        r"triangulate it first \(mesh\.triangulate\(\)\)$"):
        as_mesh(FakePolyData(square, cells), name="roof")
    with pytest.raises(MeshError, match="triangle strips"):
        as_mesh(FakePolyData(TET_V, _cells(TET_F), n_strips=1))
    with pytest.raises(MeshError, match="no faces"):
        as_mesh(FakePolyData(TET_V, []))


def test_what_is_not_a_mesh_is_refused_saying_what_is_expected(tmp_path):
    with pytest.raises(ShapeAtlasError, match="expected a mesh .* got dict"):
        as_mesh({"vertices": TET_V})
    with pytest.raises(ShapeAtlasError, match="read it with shapeatlas.read_mesh"):
        as_mesh(tmp_path / "tet.ply")
    with pytest.raises(ShapeAtlasError, match=r"got one Trimesh: pass \[mesh\]"):
        as_meshes(trimesh.Trimesh(TET_V, TET_F, process=False))


def test_as_meshes_names_unnamed_objects_by_place():
    t = trimesh.Trimesh(TET_V, TET_F, process=False)
    named = Mesh(TET_V, TET_F, name="tet")
    out = as_meshes([t, named, FakePolyData(TET_V, _cells(TET_F))])
    assert [m.name for m in out] == ["mesh_000", "tet", "mesh_002"]
    assert out[1] is named


def test_write_mesh_takes_trimesh_and_pyvista_like(tmp_path):
    write_mesh(trimesh.Trimesh(TET_V, TET_F, process=False), tmp_path / "a.ply")
    write_mesh(FakePolyData(TET_V, _cells(TET_F)), tmp_path / "b.vtp")
    for name in ("a.ply", "b.vtp"):
        back = read_mesh(tmp_path / name)
        np.testing.assert_allclose(back.vertices, TET_V)
        np.testing.assert_array_equal(back.faces, TET_F)


def test_to_pyvista_without_pyvista_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyvista", None)  # import pyvista -> ImportError
    with pytest.raises(ShapeAtlasError, match=r"needs pyvista.*pip install pyvista"):
        Mesh(TET_V, TET_F).to_pyvista()


def test_to_pyvista_builds_the_cell_array_and_round_trips(monkeypatch):
    fake = types.ModuleType("pyvista")
    fake.PolyData = FakePolyData
    monkeypatch.setitem(sys.modules, "pyvista", fake)
    tet = Mesh(TET_V, TET_F, name="tet", point_data={"label": np.arange(4)})
    poly = tet.to_pyvista()
    np.testing.assert_array_equal(poly.faces, [3, 0, 2, 1, 3, 0, 1, 3, 3, 0, 3, 2, 3, 1, 2, 3])
    np.testing.assert_array_equal(poly.point_data["label"], np.arange(4))
    back = as_mesh(poly)
    np.testing.assert_allclose(back.vertices, TET_V)
    np.testing.assert_array_equal(back.faces, TET_F)


def test_as_mesh_is_at_the_top_level():
    assert shapeatlas.as_mesh is as_mesh
