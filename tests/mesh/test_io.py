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


# ------------------------------------------------------------- OBJ as other exporters write it
_TET_V = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\n"


def test_obj_with_normals_indexed_apart_from_vertices(tmp_path):
    # More normals than vertices, `v//vn` and `v/vt/vn` corners (as in 3D-IRCADb surfaces).
    text = ("# liver\no liver\ng surface\nusemtl skin\ns 1\n" + _TET_V
            + "".join(f"vn 0 0 {i}\n" for i in range(1, 7)) + "vt 0 0\nvt 1 0\nvt 0 1\n"
            + "f 1//1 3//2 2//3\nf 1//4 2//5 4//6\nf 1/1/1 4/2/2 3/3/3\nf 2/1/4 3/2/5 4/3/6\n")
    (tmp_path / "vn.obj").write_text(text)
    m = read_mesh(tmp_path / "vn.obj")
    assert (m.n_vertices, m.n_faces) == (4, 4)
    assert m.volume == pytest.approx(1 / 6)


def test_obj_negative_indices_polygons_and_crlf(tmp_path):
    # A unit cube: quads with relative indices, CRLF line ends, a continued line.
    v = [(x, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    lines = [f"v {x} {y} {z}" for x, y, z in v]
    lines += ["f " + " ".join(str(i - 8) for i in q) for q in quads[:-1]]
    lines += ["f " + " ".join(str(i - 8) for i in quads[-1][:2]) + " \\",
              " ".join(str(i - 8) for i in quads[-1][2:])]
    (tmp_path / "cube.obj").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    m = read_mesh(tmp_path / "cube.obj")
    assert (m.n_vertices, m.n_faces) == (8, 12)
    assert abs(m.volume) == pytest.approx(1.0)


def test_obj_index_past_the_vertices_is_one_clear_line(tmp_path):
    (tmp_path / "bad.obj").write_text(_TET_V + "f 1 2 9\n")
    _expect(tmp_path / "bad.obj", "refers to vertex 9 but the file has 4")


# ------------------------------------------------------------------ legacy VTK polydata
_TET_POINTS = "POINTS 4 float\n0 0 0 1 0 0\n0 1 0 0 0 1\n"


def _vtk(version, body, *, encoding="ASCII", dataset="POLYDATA"):
    return f"# vtk DataFile Version {version}\nvtk output\n{encoding}\nDATASET {dataset}\n{body}"


def test_legacy_vtk_polydata_ascii(tmp_path):
    body = (_TET_POINTS + "POLYGONS 4 16\n3 0 2 1\n3 0 1 3\n3 0 3 2\n3 1 2 3\n"
            "CELL_DATA 4\nSCALARS id int 1\nLOOKUP_TABLE default\n0 1 2 3\n"
            "POINT_DATA 4\nSCALARS t float\nLOOKUP_TABLE default\n0 1 2 3\n"
            "FIELD FieldData 1\nw 2 4 double\n0 0 1 1 2 2 3 3\n")
    (tmp_path / "t.vtk").write_text(_vtk("4.2", body))
    m = read_mesh(tmp_path / "t.vtk")
    assert m.volume == pytest.approx(1 / 6)
    np.testing.assert_array_equal(m.point_data["t"], [0, 1, 2, 3])
    assert m.point_data["w"].shape == (4, 2)


_PYRAMID_51 = ("POINTS 5 double\n0 0 0 1 0 0 1 1 0 0 1 0 0.5 0.5 1\nMETADATA\nINFORMATION 0\n\n"
               "POLYGONS 4 10\nOFFSETS vtktypeint64\n0 4 7 10\n"
               "CONNECTIVITY vtktypeint64\n0 3 2 1 0 1 4 1 2 4\n"
               "TRIANGLE_STRIPS 2 4\nOFFSETS vtktypeint64\n0 4\nCONNECTIVITY vtktypeint64\n"
               "2 3 4 0\n")


def test_legacy_vtk_51_quad_triangles_and_strip(tmp_path):
    # A square pyramid: the base a quad, two sides triangles, two sides one strip.
    (tmp_path / "p.vtk").write_text(_vtk("5.1", _PYRAMID_51))
    m = read_mesh(tmp_path / "p.vtk")
    assert m.n_faces == 6 and m.is_watertight
    assert m.volume == pytest.approx(1 / 3)


@pytest.mark.parametrize("tail, fragment", [
    ("POLYGONS\n", "POLYGONS needs two counts"),
    ("SOMETHING 1 2\n", "unknown section 'SOMETHING'"),
])
def test_legacy_vtk_bad_section_is_one_clear_line(tmp_path, tail, fragment):
    (tmp_path / "p.vtk").write_text(_vtk("5.1", _PYRAMID_51 + tail))
    _expect(tmp_path / "p.vtk", fragment)


def test_legacy_vtk_binary_unstructured_grid_keeps_surface_cells(tmp_path):
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=">f4")
    cells = np.array([3, 0, 2, 1, 3, 0, 1, 3, 3, 0, 3, 2, 3, 1, 2, 3, 4, 0, 1, 2, 3], dtype=">i4")
    types = np.array([5, 5, 5, 5, 10], dtype=">i4")  # four triangles and a tetrahedron
    raw = (_vtk("4.2", "", encoding="BINARY", dataset="UNSTRUCTURED_GRID").encode()
           + b"POINTS 4 float\n" + pts.tobytes() + b"\nCELLS 5 21\n" + cells.tobytes()
           + b"\nCELL_TYPES 5\n" + types.tobytes() + b"\n")
    (tmp_path / "g.vtk").write_bytes(raw)
    m = read_mesh(tmp_path / "g.vtk")
    assert m.n_faces == 4 and m.volume == pytest.approx(1 / 6)


@pytest.mark.parametrize("body, fragment", [
    (_TET_POINTS + "POLYGONS 1 4\n3 0 1 7\n", "refer to point 7 but the file has 4 points"),
    (_TET_POINTS + "POLYGONS 2 4\n3 0 1 2\n", "2 cells do not fit in 4 integers"),
    ("POINTS 4 float\n0 0 0 1 0 0\n", "declares 12 values of POINTS, more than the 13 bytes"),
    ("POINTS 4 float\n0 0 0 1 0 0\n" + "\n" * 20, "the file ends after 6 of 12 values"),
    ("POINTS 4 float\n0 0 0 1 0 x\n0 1 0 0 0 1\n", "not a number"),
    ("POINTS 4 string\n", "data type 'string' is not supported"),
])
def test_malformed_legacy_vtk_is_one_clear_line(tmp_path, body, fragment):
    (tmp_path / "bad.vtk").write_text(_vtk("4.2", body))
    _expect(tmp_path / "bad.vtk", fragment)


def test_legacy_vtk_image_is_refused(tmp_path):
    text = _vtk("3.0", "DIMENSIONS 2 2 2\n", dataset="STRUCTURED_POINTS")
    (tmp_path / "img.vtk").write_text(text)
    _expect(tmp_path / "img.vtk", "holds a STRUCTURED_POINTS dataset, not a surface")


# ------------------------------------------- declared counts bounded by the file's own size
@pytest.mark.parametrize("name, data, fragment", [
    ("huge.vtk", b"# vtk DataFile Version 4.2\nx\nBINARY\nDATASET POLYDATA\n"
                 b"POINTS 2000000000 double\n" + bytes(64), "bytes of POINTS"),
    ("huge_cells.vtk", b"# vtk DataFile Version 4.2\nx\nASCII\nDATASET POLYDATA\n"
                       b"POINTS 1 float\n0 0 0\nPOLYGONS 1 3000000000\n3 0 0 0\n", "POLYGONS"),
    ("faces.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n"
                  b"property float y\nproperty float z\nelement face 2000000000\n"
                  b"property list uchar int vertex_indices\nend_header\n" + bytes(49),
     "declares 2,000,000,000 PLY face elements"),
    ("verts.ply", b"ply\nformat ascii 1.0\nelement vertex 2000000000\nproperty float x\n"
                  b"property float y\nproperty float z\nend_header\n0 0 0\n",
     "declares 2,000,000,000 PLY vertex elements"),
    ("huge.off", b"OFF\n2000000000 2000000000 0\n0 0 0\n1 0 0\n", "2,000,000,000 OFF vertices"),
    ("huge.stl", bytes(80) + np.array([4_000_000_000], "<u4").tobytes() + bytes(50),
     "4,000,000,000 STL triangles"),
])
def test_huge_declared_counts_are_refused_before_allocating(tmp_path, name, data, fragment):
    import tracemalloc

    (tmp_path / name).write_bytes(data)
    tracemalloc.start()
    try:
        _expect(tmp_path / name, fragment)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000


def test_binary_ply_of_quads_with_face_colours_is_triangulated(tmp_path):
    # MeshLab writes face colours after the index list, which meshio cannot read: the fallback
    # must split each quad into two triangles, not reshape the indices into nonsense.
    import struct

    from shapeatlas.mesh.io import read_mesh

    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype="<f4")
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    header = ("ply\nformat binary_little_endian 1.0\ncomment VCGLIB generated\n"
              "element vertex 8\nproperty float x\nproperty float y\nproperty float z\n"
              "element face 6\nproperty list uchar int vertex_indices\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    body = v.tobytes() + b"".join(struct.pack("<B4i3B", 4, *q, 200, 10, 10) for q in quads)
    path = tmp_path / "cube.ply"
    path.write_bytes(header.encode() + body)
    mesh = read_mesh(path)
    assert mesh.n_faces == 12 and mesh.is_watertight
    assert abs(mesh.volume) == pytest.approx(1.0)


def test_a_fifo_or_unreadable_mesh_is_one_line(tmp_path):
    import os

    from shapeatlas.errors import MeshError
    from shapeatlas.mesh.io import read_mesh

    fifo = tmp_path / "pipe.ply"
    os.mkfifo(fifo)
    with pytest.raises(MeshError, match="not a regular file"):
        read_mesh(fifo)
