"""Mesh file I/O: round trips in every format and a clear error for every kind of bad file."""

from __future__ import annotations

import os

import numpy as np
import pytest

from shapeatlas.errors import MeshError
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.io import read_mesh, write_mesh


@pytest.mark.parametrize("ext", ["ply", "obj", "stl", "vtk", "vtp"])
def test_round_trip_keeps_geometry(tmp_path, icosphere, ext):
    path = write_mesh(icosphere, tmp_path / f"s.{ext}")
    back = read_mesh(path)
    assert back.n_faces == icosphere.n_faces
    if ext == "stl":  # STL stores corners per face; the reader welds them back
        assert back.n_vertices == icosphere.n_vertices
        assert back.volume == pytest.approx(icosphere.volume, rel=1e-6)
    else:
        np.testing.assert_allclose(back.vertices, icosphere.vertices, atol=1e-9)
        np.testing.assert_array_equal(back.faces, icosphere.faces)


@pytest.mark.parametrize("ext", ["ply", "vtk", "vtp"])
def test_point_data_round_trip(tmp_path, icosphere, ext):
    ids = np.arange(icosphere.n_vertices)
    path = write_mesh(icosphere, tmp_path / f"s.{ext}", point_data={"atlas_id": ids})
    back = read_mesh(path)
    np.testing.assert_array_equal(np.asarray(back.point_data["atlas_id"]).ravel(), ids)


def test_obj_and_stl_drop_point_data_with_warning(tmp_path, icosphere, caplog):
    write_mesh(icosphere, tmp_path / "s.obj", point_data={"a": np.zeros(icosphere.n_vertices)})
    assert "cannot store per-vertex arrays" in caplog.text


def test_off_is_read(tmp_path):
    (tmp_path / "t.off").write_text("OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n"
                                    "3 0 2 1\n3 0 1 3\n3 0 3 2\n3 1 2 3\n")
    m = read_mesh(tmp_path / "t.off")
    assert m.volume == pytest.approx(1 / 6)


def test_quads_are_triangulated(tmp_path):
    (tmp_path / "q.obj").write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n")
    m = read_mesh(tmp_path / "q.obj")
    assert m.n_faces == 2 and m.area == pytest.approx(1.0)


def test_ply_write_is_deterministic(tmp_path, icosphere):
    a = write_mesh(icosphere, tmp_path / "a.ply", point_data={"n": icosphere.vertex_normals})
    b = write_mesh(icosphere, tmp_path / "b.ply", point_data={"n": icosphere.vertex_normals})
    assert a.read_bytes() == b.read_bytes()


def _expect(path, fragment):
    with pytest.raises(MeshError) as err:
        read_mesh(path)
    msg = str(err.value)
    assert str(path) in msg, msg
    assert fragment in msg, msg


def test_empty_file(tmp_path):
    p = tmp_path / "empty.ply"
    p.write_bytes(b"")
    _expect(p, "empty")


def test_not_a_mesh(tmp_path):
    p = tmp_path / "junk.ply"
    p.write_bytes(os.urandom(300))
    _expect(p, "could not be parsed as PLY")


def test_text_that_is_not_obj(tmp_path):
    p = tmp_path / "letter.obj"
    p.write_text("Dear colleague,\nplease find the mesh attached.\n")
    with pytest.raises(MeshError) as err:
        read_mesh(p)
    assert str(p) in str(err.value)


def test_nan_coordinates(tmp_path):
    p = tmp_path / "nan.obj"
    p.write_text("v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n")
    _expect(p, "NaN or infinite")


def test_inf_coordinates(tmp_path):
    p = tmp_path / "inf.obj"
    p.write_text("v 0 0 0\nv inf 0 0\nv 0 1 0\nf 1 2 3\n")
    _expect(p, "NaN or infinite")


def test_faces_past_vertex_list(tmp_path):
    p = tmp_path / "oob.off"
    p.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n")
    _expect(p, "out of range")


def test_point_cloud(tmp_path):
    p = tmp_path / "cloud.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\n")
    _expect(p, "point cloud")


def test_zero_area(tmp_path):
    p = tmp_path / "flat.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    _expect(p, "zero area")


def test_unknown_extension(tmp_path):
    p = tmp_path / "mesh.xyz"
    p.write_text("0 0 0\n")
    _expect(p, "unsupported mesh format '.xyz'")


def test_missing_file_and_folder(tmp_path):
    _expect(tmp_path / "nope.ply", "no such file")
    d = tmp_path / "dir.ply"
    d.mkdir()
    _expect(d, "is a folder")


def test_unwritable_format(tmp_path, icosphere):
    with pytest.raises(MeshError, match="cannot write format '.off'"):
        write_mesh(icosphere, tmp_path / "x.off")


def test_failed_write_leaves_nothing_behind(tmp_path, icosphere, monkeypatch):
    import shapeatlas.mesh.ply as ply

    target = tmp_path / "out.ply"
    target.write_bytes(b"previous content")

    def interrupted_open(path, mode="r"):  # Ctrl-C after half the file is on disk
        with open(path, mode) as fh:
            fh.write(b"ply\nformat binary_little_endian 1.0\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(ply, "open", interrupted_open, raising=False)
    with pytest.raises(KeyboardInterrupt):
        write_mesh(icosphere, target, point_data={"a": np.zeros(icosphere.n_vertices)})
    assert target.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ply"]


def test_interrupted_write_inside_atomic_path_cleans_up(tmp_path):
    from shapeatlas.atomic import atomic_path

    target = tmp_path / "m.ply"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a mesh")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_mesh_name_is_file_path(tmp_path, icosphere):
    p = write_mesh(icosphere, tmp_path / "named.ply")
    assert read_mesh(p).name == str(p)
    assert isinstance(read_mesh(p), Mesh)
