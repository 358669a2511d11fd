"""Tests of the hand-written VTK XML PolyData reader and writer.

The binary, compressed and appended cases are built byte by byte here from the VTK XML format
description (header integers, separately base64-encoded header, zlib blocks, underscore-led
appended section), independently of the writer under test.
"""

from __future__ import annotations

import base64
import zlib
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from shapeatlas.errors import MeshError
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.vtp import read_vtp, write_vtp

# Four corners of a unit square plus an apex (a quad and a triangle use them), and a tetrahedron.
SQUARE_PTS = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 0.5, 1]])
TET_V = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
TET_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


# ------------------------------------------------------------------ spec-following builders
def _raw_blob(values, *, order="<", header="u4", block=None):
    """Header + data bytes of one array; `block` = zlib block size in bytes (None: uncompressed)."""
    data = np.ascontiguousarray(values).astype(values.dtype.newbyteorder(order)).tobytes()
    hdt = np.dtype(header).newbyteorder(order)
    if block is None:
        return np.array([len(data)], dtype=hdt).tobytes(), data
    chunks = [data[i : i + block] for i in range(0, len(data), block)] or [b""]
    packed = [zlib.compress(c) for c in chunks]
    last = len(chunks[-1]) if len(chunks[-1]) != block else 0
    head = np.array([len(chunks), block, last, *map(len, packed)], dtype=hdt).tobytes()
    return head, b"".join(packed)


def _inline(values, *, joint=False, **kw):
    """base64 text for format="binary": header and data encoded separately (as VTK does)."""
    head, data = _raw_blob(values, **kw)
    if joint:
        return base64.b64encode(head + data).decode()
    return (base64.b64encode(head) + base64.b64encode(data)).decode()


def _vtk_type(a):
    return {
        "f8": "Float64", "f4": "Float32", "i8": "Int64", "i4": "Int32",
        "u1": "UInt8", "i2": "Int16",
    }[a.dtype.str[1:]]


def _file(arrays, *, n_points, n_polys, fmt, order="<", header="u4", block=None, appended=None,
          joint=False, strips=None):
    """A PolyData file as bytes. arrays: list of (section, name, values, components)."""
    root = (
        f'<VTKFile type="PolyData" version="1.0" '
        f'byte_order="{"LittleEndian" if order == "<" else "BigEndian"}" '
        f'header_type="{"UInt32" if header == "u4" else "UInt64"}"'
        + (' compressor="vtkZLibDataCompressor"' if block else "")
        + ">"
    )
    sections = {"PointData": [], "Points": [], "Polys": [], "Strips": []}
    tail = b""
    for section, name, values, comps in arrays:
        attrs = f'type="{_vtk_type(values)}" Name="{name}" NumberOfComponents="{comps}"'
        if fmt == "ascii":
            body = " ".join(str(x) for x in values.ravel().tolist())
            sections[section].append(f'<DataArray {attrs} format="ascii">{body}</DataArray>')
        elif fmt == "binary":
            text = _inline(values, order=order, header=header, block=block, joint=joint)
            sections[section].append(f'<DataArray {attrs} format="binary">\n  {text}\n</DataArray>')
        else:
            head, data = _raw_blob(values, order=order, header=header, block=block)
            if appended == "raw":
                piece = head + data
            else:
                piece = base64.b64encode(head) + base64.b64encode(data)
            sections[section].append(f'<DataArray {attrs} format="appended" offset="{len(tail)}"/>')
            tail += piece
    n_strips = len(strips) if strips is not None else 0
    xml = (
        f'<?xml version="1.0"?>\n{root}\n<PolyData>\n<Piece NumberOfPoints="{n_points}" '
        f'NumberOfPolys="{n_polys}" NumberOfStrips="{n_strips}">\n'
        + "".join(
            f"<{s}>\n" + "\n".join(items) + f"\n</{s}>\n" for s, items in sections.items() if items
        )
        + "</Piece>\n</PolyData>\n"
    ).encode()
    if appended:
        xml += f'<AppendedData encoding="{appended}">\n   _'.encode()
        xml += tail + b"\n</AppendedData>\n"
    return xml + b"</VTKFile>\n"


def _square_arrays():
    """A quad (0,1,2,3) and a triangle (0,1,4), a scalar and a vector per point."""
    conn = np.array([0, 1, 2, 3, 0, 1, 4], dtype=np.int64)
    offs = np.array([4, 7], dtype=np.int64)
    scalar = np.arange(5, dtype=np.float32) * 0.5
    vector = np.arange(15, dtype=np.float64).reshape(5, 3) - 3.25
    return [
        ("PointData", "thickness", scalar, 1),
        ("PointData", "displacement", vector, 3),
        ("Points", "Points", SQUARE_PTS, 3),
        ("Polys", "connectivity", conn, 1),
        ("Polys", "offsets", offs, 1),
    ], scalar, vector


EXPECTED_SQUARE_FACES = np.array([[0, 1, 2], [0, 2, 3], [0, 1, 4]])


def _check_square(path, scalar, vector):
    v, f, pd = read_vtp(path)
    assert v.dtype == np.float64 and v.shape == (5, 3)
    np.testing.assert_array_equal(v, SQUARE_PTS)
    assert f.dtype == np.int64
    np.testing.assert_array_equal(f, EXPECTED_SQUARE_FACES)
    assert set(pd) == {"thickness", "displacement"}
    assert pd["thickness"].shape == (5,) and pd["thickness"].dtype == np.float32
    np.testing.assert_array_equal(pd["thickness"], scalar)
    assert pd["displacement"].shape == (5, 3)
    np.testing.assert_array_equal(pd["displacement"], vector)


# ------------------------------------------------------------------------------ readers
def test_ascii_quad_is_fan_triangulated_and_point_data_kept(tmp_path):
    arrays, scalar, vector = _square_arrays()
    path = tmp_path / "ascii.vtp"
    path.write_bytes(_file(arrays, n_points=5, n_polys=2, fmt="ascii"))
    _check_square(path, scalar, vector)


def test_pentagon_fan(tmp_path):
    pts = np.c_[np.cos(np.arange(5) * 1.2566), np.sin(np.arange(5) * 1.2566), np.zeros(5)]
    arrays = [
        ("Points", "Points", pts, 3),
        ("Polys", "connectivity", np.array([4, 3, 2, 1, 0], dtype=np.int32), 1),
        ("Polys", "offsets", np.array([5], dtype=np.int32), 1),
    ]
    path = tmp_path / "pent.vtp"
    path.write_bytes(_file(arrays, n_points=5, n_polys=1, fmt="binary"))
    _, f, _ = read_vtp(path)
    np.testing.assert_array_equal(f, [[4, 3, 2], [4, 2, 1], [4, 1, 0]])


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("header", ["u4", "u8"])
@pytest.mark.parametrize("joint", [False, True])
def test_binary_inline_uncompressed(tmp_path, order, header, joint):
    arrays, scalar, vector = _square_arrays()
    path = tmp_path / "bin.vtp"
    path.write_bytes(
        _file(arrays, n_points=5, n_polys=2, fmt="binary", order=order, header=header, joint=joint)
    )
    _check_square(path, scalar, vector)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("header", ["u4", "u8"])
@pytest.mark.parametrize("block", [16, 24, 1 << 15])  # several blocks, a full last block, one block
def test_binary_inline_zlib_compressed(tmp_path, order, header, block):
    arrays, scalar, vector = _square_arrays()
    path = tmp_path / "zlib.vtp"
    path.write_bytes(
        _file(arrays, n_points=5, n_polys=2, fmt="binary", order=order, header=header, block=block)
    )
    _check_square(path, scalar, vector)


@pytest.mark.parametrize("encoding", ["raw", "base64"])
@pytest.mark.parametrize("block", [None, 16])
@pytest.mark.parametrize("order", ["<", ">"])
def test_appended(tmp_path, encoding, block, order):
    arrays, scalar, vector = _square_arrays()
    path = tmp_path / "app.vtp"
    data = _file(arrays, n_points=5, n_polys=2, fmt="appended", appended=encoding, block=block,
                 order=order, header="u8")
    if encoding == "raw":
        with pytest.raises(Exception):  # raw bytes make the file invalid XML on purpose
            ET.fromstring(data)
    path.write_bytes(data)
    _check_square(path, scalar, vector)


def test_triangle_strip_alternates_orientation(tmp_path):
    # Strip 0-1-2-3-4 over a zig-zag: triangles (0,1,2), (2,1,3), (2,3,4).
    arrays = [
        ("Points", "Points", SQUARE_PTS, 3),
        ("Strips", "connectivity", np.arange(5, dtype=np.int64), 1),
        ("Strips", "offsets", np.array([5], dtype=np.int64), 1),
    ]
    path = tmp_path / "strip.vtp"
    path.write_bytes(_file(arrays, n_points=5, n_polys=0, fmt="binary", strips=[0]))
    _, f, _ = read_vtp(path)
    np.testing.assert_array_equal(f, [[0, 1, 2], [2, 1, 3], [2, 3, 4]])


def test_two_pieces_are_concatenated(tmp_path):
    path = tmp_path / "pieces.vtp"
    tet = (
        '<Piece NumberOfPoints="4" NumberOfPolys="4"><Points>'
        '<DataArray type="Float64" NumberOfComponents="3" format="ascii">'
        + " ".join(map(str, TET_V.ravel()))
        + '</DataArray></Points><PointData><DataArray type="Int32" Name="id" format="ascii">'
        "1 2 3 4</DataArray></PointData><Polys>"
        '<DataArray type="Int64" Name="connectivity" format="ascii">'
        + " ".join(map(str, TET_F.ravel()))
        + '</DataArray><DataArray type="Int64" Name="offsets" format="ascii">3 6 9 12'
        "</DataArray></Polys></Piece>"
    )
    path.write_text(f'<VTKFile type="PolyData"><PolyData>{tet}{tet}</PolyData></VTKFile>')
    v, f, pd = read_vtp(path)
    assert v.shape == (8, 3) and f.shape == (8, 3)
    np.testing.assert_array_equal(f[4:], TET_F + 4)
    np.testing.assert_array_equal(pd["id"], [1, 2, 3, 4, 1, 2, 3, 4])
    assert Mesh(v[:4], f[:4]).volume == pytest.approx(1 / 6)


# ------------------------------------------------------------------------------- writer
@pytest.mark.parametrize("binary", [True, False])
def test_round_trip_exact(tmp_path, binary):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(4, 3)) * 1e3
    pd = {
        "curvature": rng.normal(size=4),
        "normals": rng.normal(size=(4, 3)).astype(np.float32),
        "label": np.array([1, 2, 3, 255], dtype=np.uint8),
        "inside": np.array([True, False, True, True]),
        'odd "name" <&>': np.arange(4, dtype=np.int16),
    }
    path = tmp_path / "out.vtp"
    write_vtp(path, v, TET_F, pd, binary=binary)
    assert [p.name for p in tmp_path.iterdir()] == ["out.vtp"]  # no temporary left behind
    v2, f2, pd2 = read_vtp(path)
    np.testing.assert_array_equal(v2, v)
    np.testing.assert_array_equal(f2, TET_F)
    assert set(pd2) == set(pd)
    for key, arr in pd.items():
        expected = arr.astype(np.uint8) if arr.dtype == bool else arr
        assert pd2[key].dtype == expected.dtype
        assert pd2[key].shape == expected.shape
        np.testing.assert_array_equal(pd2[key], expected)
    text = path.read_text()
    assert ('format="binary"' in text) == binary and ('format="ascii"' in text) != binary
    assert 'header_type="UInt64"' in text


def test_binary_output_matches_the_spec_layout(tmp_path):
    """The first DataArray payload decodes as <u8 byte count> then the little-endian values."""
    path = tmp_path / "tet.vtp"
    write_vtp(path, TET_V, TET_F)
    text = path.read_text()
    start = text.index('Name="Points"')
    payload = text[text.index(">", start) + 1 : text.index("</DataArray>", start)].strip()
    head, data = payload[:12], payload[12:]  # 8-byte header -> 12 base64 characters ending "="
    assert head.endswith("=")
    assert np.frombuffer(base64.b64decode(head), "<u8")[0] == TET_V.size * 8
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(data), "<f8"), TET_V.ravel())


def test_write_rejects_bad_input_and_leaves_nothing(tmp_path):
    path = tmp_path / "bad.vtp"
    with pytest.raises(MeshError, match="bad.vtp.*point_data\\['x'\\]"):
        write_vtp(path, TET_V, TET_F, {"x": np.zeros(3)})
    with pytest.raises(MeshError, match="NaN"):
        write_vtp(path, np.full((4, 3), np.nan), TET_F)
    with pytest.raises(MeshError, match="faces index"):
        write_vtp(path, TET_V, TET_F + 1)
    with pytest.raises(MeshError, match="cannot store"):
        write_vtp(path, TET_V, TET_F, {"s": np.array(list("abcd"))})
    assert list(tmp_path.iterdir()) == []


def test_written_file_loads_as_watertight_mesh(tmp_path):
    path = tmp_path / "tet.vtp"
    write_vtp(path, TET_V, TET_F, {"w": np.ones(4)})
    v, f, pd = read_vtp(path)
    mesh = Mesh(v, f, name=str(path), point_data=pd)
    assert mesh.is_watertight and mesh.signed_volume == pytest.approx(1 / 6)


# --------------------------------------------------------------------------- malformed
def _good():
    arrays, _, _ = _square_arrays()
    return _file(arrays, n_points=5, n_polys=2, fmt="binary", block=16)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda b: b[: len(b) // 2], "could not be parsed as VTP"),
        (lambda b: b"", "empty"),
        (lambda b: b"solid ascii\nendsolid\n", "could not be parsed as VTP"),
        (lambda b: b.replace(b'type="PolyData"', b'type="UnstructuredGrid"'), "UnstructuredGrid"),
        (lambda b: b.replace(b"vtkZLibDataCompressor", b"vtkLZ4DataCompressor"), "LZ4"),
        (lambda b: b.replace(b'header_type="UInt32"', b'header_type="Int8"'), "header_type"),
        (lambda b: b.replace(b'NumberOfPoints="5"', b'NumberOfPoints="6"'), "points"),
        (lambda b: b.replace(b'type="Float64"', b'type="Float128"'), "Float128"),
        (lambda b: b.replace(b'format="binary"', b'format="hex"'), "hex"),
    ],
)
def test_malformed_file_raises_mesh_error_naming_file(tmp_path, mutate, reason):
    path = tmp_path / "broken.vtp"
    path.write_bytes(mutate(_good()))
    with pytest.raises(MeshError, match=reason) as info:
        read_vtp(path)
    assert info.value.source == str(path)
    assert str(path) in str(info.value)


def test_corrupt_base64_and_truncated_blocks(tmp_path):
    arrays, _, _ = _square_arrays()
    good = _file(arrays, n_points=5, n_polys=2, fmt="binary", block=16).decode()
    start = good.index('Name="Points"')
    body_start = good.index("\n  ", start) + 3
    for bad in (good[:body_start] + "!!!!" + good[body_start + 4 :],
                good[:body_start + 20] + good[body_start + 40 :]):
        path = tmp_path / "corrupt.vtp"
        path.write_text(bad)
        with pytest.raises(MeshError, match="corrupt.vtp: could not be parsed as VTP"):
            read_vtp(path)


def test_connectivity_out_of_range_and_bad_offsets(tmp_path):
    base = [("Points", "Points", TET_V, 3)]
    cases = {
        "refer to point 7": (np.array([0, 1, 7], dtype=np.int64), np.array([3], dtype=np.int64)),
        "offsets must rise": (np.array([0, 1, 2], dtype=np.int64), np.array([4], dtype=np.int64)),
    }
    for reason, (conn, offs) in cases.items():
        path = tmp_path / "cells.vtp"
        arrays = base + [("Polys", "connectivity", conn, 1), ("Polys", "offsets", offs, 1)]
        path.write_bytes(_file(arrays, n_points=4, n_polys=1, fmt="ascii"))
        with pytest.raises(MeshError, match=reason):
            read_vtp(path)


def test_missing_file(tmp_path):
    with pytest.raises(MeshError, match="nothere.vtp: no such file"):
        read_vtp(tmp_path / "nothere.vtp")


# ----------------------------------------------------------- compressed data is inflated bounded
def _bomb_file(tmp_path, *, declared_block: int, n_points: int = 3, inflated=64 * 2**20):
    """Points of `n_points` x 3 Float64 as ONE zlib block of `inflated` zero bytes whose header
    declares `declared_block` bytes; ~65 KB on disk."""
    data = zlib.compress(bytes(inflated), 9)
    head = np.array([1, declared_block, declared_block, len(data)], dtype="<u8").tobytes()
    text = (base64.b64encode(head) + base64.b64encode(data)).decode()
    xml = (
        '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64" '
        f'compressor="vtkZLibDataCompressor"><PolyData><Piece NumberOfPoints="{n_points}" '
        'NumberOfPolys="1"><Points><DataArray type="Float64" NumberOfComponents="3" '
        f'format="binary">{text}</DataArray></Points><Polys>'
        '<DataArray type="Int64" Name="connectivity" format="ascii">0 1 2</DataArray>'
        '<DataArray type="Int64" Name="offsets" format="ascii">3</DataArray>'
        "</Polys></Piece></PolyData></VTKFile>"
    )
    path = tmp_path / "bomb.vtp"
    path.write_text(xml)
    return path


@pytest.mark.parametrize("declared_block, n_points, fragment", [
    # The header tells the truth about the 64 MB, but 3 points need only 72 bytes.
    (64 * 2**20, 3, "declares 67108864 bytes, expected 72"),
    # The header lies (72 bytes) about a block that inflates to 64 MB.
    (72, 3, "block 0 inflates to more than the 72 bytes its header declares"),
    # Points enough to need 3.2 GB: refused by the per-file limit before any inflating.
    (3_200_000_016, 133_333_334, "over the 536,870,912-byte limit"),
])
def test_zlib_bomb_is_refused_without_inflating_it(tmp_path, declared_block, n_points, fragment):
    import time
    import tracemalloc

    path = _bomb_file(tmp_path, declared_block=declared_block, n_points=n_points)
    assert path.stat().st_size < 400_000
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(MeshError, match=fragment) as err:
            read_vtp(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2.0
    assert peak < 10_000_000  # the file's ~65 KB a few times over, never the 64 MB
    assert str(path) in str(err.value) and "\n" not in str(err.value)
