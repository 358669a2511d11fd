"""Reading and writing VTK XML PolyData (.vtp) surface meshes.

Hand-written because meshio reads and writes only the *unstructured-grid* XML flavour (.vtu), not
PolyData, and the `vtk` package that does is about 600 MB. VTP is what 3D Slicer, ParaView and
ShapeWorks exchange, so a small, dependency-free reader matters.

What is understood (the VTK XML file-format description, version 0.1 and 1.0):

- `DataArray format="ascii"`: whitespace-separated numbers.
- `format="binary"`: base64 text holding a header and the bytes of the array. The header is one
  integer (the byte count) for uncompressed data, or `[#blocks][block size][last block size]
  [compressed size of each block]` for compressed data; its integer type is the VTKFile
  `header_type` (UInt32 when absent). VTK encodes the header and the data as two separate base64
  runs; writers that encode them as one run are read as well.
- `format="appended"`: the same header-plus-bytes blobs inside `<AppendedData>`, after its
  leading underscore, either raw bytes (`encoding="raw"`; the XML is then not well formed, so the
  section is cut out before parsing) or base64 (`encoding="base64"`, offsets in characters).
- Compression: `vtkZLibDataCompressor` and `vtkLZMADataCompressor` (both in the standard
  library); `vtkLZ4DataCompressor` is refused with a clear message. Each block is inflated
  incrementally to no more than the size its header declares (a block that would inflate further
  is refused), and the declared sizes of all arrays together may not pass
  `shapeatlas.mesh.limits.MAX_DECODED_BYTES`, so a small file of compressed zeros cannot make the
  reader allocate gigabytes.
- `byte_order` LittleEndian and BigEndian; every integer and float type; several `<Piece>`s.

Cells: `Polys` (fan-triangulated when they have more than three corners) and `Strips`
(decomposed into triangles with VTK's alternating orientation); `Verts` and `Lines` are ignored.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import logging
import lzma
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from xml.etree import ElementTree as ET
from xml.sax.saxutils import quoteattr

import numpy as np

from shapeatlas.atomic import atomic_path
from shapeatlas.errors import MeshError
from shapeatlas.mesh.limits import DecodeBudget

log = logging.getLogger(__name__)

#: VTK scalar type names and the NumPy type codes they correspond to (byte order added later).
VTK_TO_NUMPY = {
    "Int8": "i1",
    "UInt8": "u1",
    "Int16": "i2",
    "UInt16": "u2",
    "Int32": "i4",
    "UInt32": "u4",
    "Int64": "i8",
    "UInt64": "u8",
    "Float32": "f4",
    "Float64": "f8",
}
_NUMPY_TO_VTK = {np.dtype(code).newbyteorder("<").str: name for name, code in VTK_TO_NUMPY.items()}
_BYTE_ORDERS = {"LittleEndian": "<", "BigEndian": ">"}
_DECOMPRESSORS = {
    "vtkZLibDataCompressor": zlib.decompressobj,
    "vtkLZMADataCompressor": lzma.LZMADecompressor,
}
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_WHITESPACE = b" \t\n\r\f\v"


class _BadVTP(Exception):
    """Internal: the reason a file is not valid VTP; turned into `MeshError` at the boundary."""


@dataclass(frozen=True)
class _Context:
    """File-wide settings every DataArray decoder needs."""

    byte_order: str  # "<" or ">"
    header: np.dtype  # dtype of the binary blob headers, byte order included
    decompress: object  # factory of a zlib/lzma decompressor object, or None (uncompressed)
    appended: bytes  # contents of <AppendedData> after the underscore ("" when absent)
    appended_base64: bool
    appended_offsets: tuple[int, ...]  # sorted offsets of every appended array (base64 ends)
    budget: DecodeBudget  # bytes decompressed so far, against the per-file limit


# ---------------------------------------------------------------------------------- reading
def read_vtp(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Read the points, triangles and point data of a VTK XML PolyData file.

    Returns
    -------
    vertices: (V, 3) float64 point coordinates (all pieces concatenated).
    faces: (F, 3) int64 triangles: polygons fan-triangulated, then triangle strips decomposed.
        (0, 3) when the file holds no polygons or strips.
    point_data: name -> (V,) array for one-component arrays, (V, C) for C components, in the
        file's own numeric type. Non-numeric (String, Bit) arrays are skipped with a log message.

    Raises `MeshError(path, ...)` for a missing file and `MeshError(path, "could not be parsed as
    VTP: <reason>")` for anything malformed.
    """
    path = Path(path)
    if not path.exists():
        raise MeshError(path, "no such file")
    if path.is_dir():
        raise MeshError(path, "is a folder, not a mesh file")
    raw = path.read_bytes()
    try:
        return _parse_vtp(raw)
    except (_BadVTP, ET.ParseError, ValueError, zlib.error, lzma.LZMAError, OverflowError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MeshError(path, f"could not be parsed as VTP: {reason}") from exc


def _split_appended(raw: bytes) -> tuple[bytes, bytes, str]:
    """Cut the <AppendedData> payload out of the file so that the rest is well-formed XML.

    -> (xml bytes with an empty AppendedData element, payload after the underscore, encoding)
    """
    start = raw.find(b"<AppendedData")
    if start < 0:
        return raw, b"", ""
    tag_end = raw.find(b">", start)
    if tag_end < 0:
        raise _BadVTP("unterminated <AppendedData> tag")
    tag = raw[start : tag_end + 1]
    match = re.search(rb"""encoding\s*=\s*["']([^"']*)["']""", tag)
    encoding = match.group(1).decode("ascii", "replace") if match else "raw"
    if tag.endswith(b"/>"):
        return raw, b"", encoding
    underscore = raw.find(b"_", tag_end)
    close = raw.rfind(b"</AppendedData>")
    if underscore < 0 or close < underscore or raw[tag_end + 1 : underscore].strip():
        raise _BadVTP("<AppendedData> must start with '_' and end with </AppendedData>")
    payload = raw[underscore + 1 : close]
    xml = raw[: tag_end + 1] + b"</AppendedData>" + raw[close + len(b"</AppendedData>") :]
    return xml, payload, encoding


def _parse_vtp(raw: bytes) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    if not raw.strip():
        raise _BadVTP("the file is empty")
    xml, payload, encoding = _split_appended(raw)
    root = ET.fromstring(xml)
    if root.tag != "VTKFile":
        raise _BadVTP(f"the root element is <{root.tag}>, expected <VTKFile>")
    if root.get("type", "PolyData") != "PolyData":
        raise _BadVTP(f"the file holds VTK type {root.get('type')!r}, expected 'PolyData'")
    order = root.get("byte_order", "LittleEndian")
    if order not in _BYTE_ORDERS:
        raise _BadVTP(f"unknown byte_order {order!r}")
    header_type = root.get("header_type", "UInt32")
    if header_type not in ("UInt32", "UInt64"):
        raise _BadVTP(f"unknown header_type {header_type!r} (expected UInt32 or UInt64)")
    compressor = root.get("compressor")
    if compressor and compressor not in _DECOMPRESSORS:
        raise _BadVTP(
            f"compressor {compressor!r} is not supported (supported: {', '.join(_DECOMPRESSORS)}); "
            "re-save the file uncompressed or with zlib"
        )
    if encoding not in ("", "raw", "base64"):
        raise _BadVTP(f"unknown AppendedData encoding {encoding!r}")
    if encoding == "base64":
        payload = payload.translate(None, _WHITESPACE)
    offsets = sorted(
        int(el.get("offset", "0"))
        for el in root.iter("DataArray")
        if el.get("format") == "appended"
    )
    ctx = _Context(
        byte_order=_BYTE_ORDERS[order],
        header=np.dtype(VTK_TO_NUMPY[header_type]).newbyteorder(_BYTE_ORDERS[order]),
        decompress=_DECOMPRESSORS.get(compressor) if compressor else None,
        appended=payload,
        appended_base64=encoding == "base64",
        appended_offsets=tuple(offsets),
        budget=DecodeBudget(),
    )
    poly = root.find("PolyData")
    if poly is None:
        raise _BadVTP("no <PolyData> element")
    pieces = poly.findall("Piece")
    if not pieces:
        raise _BadVTP("no <Piece> element")
    verts, faces, pdatas = [], [], []
    n_before = 0
    for i, piece in enumerate(pieces):
        v, f, pd = _read_piece(piece, ctx, index=i)
        verts.append(v)
        faces.append(f + n_before)
        pdatas.append(pd)
        n_before += len(v)
    point_data = {}
    for key, arr in pdatas[0].items():
        parts = [pd.get(key) for pd in pdatas]
        if any(p is None or p.shape[1:] != arr.shape[1:] for p in parts):
            log.info("point array %r is not in every piece with the same components; skipped", key)
            continue
        point_data[key] = np.concatenate(parts, axis=0)
    return np.concatenate(verts, axis=0), np.concatenate(faces, axis=0), point_data


def _read_piece(piece: ET.Element, ctx: _Context, *, index: int):
    """One <Piece>: (V, 3) points, (F, 3) triangles (piece-local indices), point data."""
    where = f"piece {index}"
    try:
        n_points = int(piece.get("NumberOfPoints", "0"))
    except ValueError:
        raise _BadVTP(f"{where}: NumberOfPoints is not an integer") from None
    points_el = piece.find("Points/DataArray")
    if n_points == 0 and points_el is None:
        verts = np.zeros((0, 3))
    else:
        if points_el is None:
            raise _BadVTP(f"{where}: no <Points> array")
        comps = _n_components(points_el, where=f"{where} points")
        verts = _decode(points_el, ctx, where=f"{where} points",
                        n_values=comps * n_points).astype(np.float64)
        if comps != 3 or verts.size != 3 * n_points:
            raise _BadVTP(
                f"{where}: the points array holds {verts.size} values with {comps} components, "
                f"expected {n_points} points x 3"
            )
        verts = verts.reshape(n_points, 3)
    faces = []
    for kind, split in (("Polys", fan_triangles), ("Strips", strip_triangles)):
        conn, offs = _cell_arrays(piece, kind, ctx, where=where)
        if conn is None:
            continue
        if conn.size and (conn.min() < 0 or conn.max() >= n_points):
            raise _BadVTP(
                f"{where}: {kind} refer to point {conn.min() if conn.min() < 0 else conn.max()} "
                f"but the piece has {n_points} points"
            )
        faces.append(split(conn, offs))
    faces = np.concatenate(faces, axis=0) if faces else np.zeros((0, 3), dtype=np.int64)
    point_data = {}
    pd_el = piece.find("PointData")
    for j, el in enumerate(pd_el.findall("DataArray") if pd_el is not None else []):
        name = el.get("Name") or f"array{j}"
        if el.get("type") not in VTK_TO_NUMPY:
            log.info("%s: point array %r of type %r skipped (not numeric)",
                     where, name, el.get("type"))
            continue
        if name in point_data:
            log.warning("%s: duplicate point array name %r; the first is kept", where, name)
            continue
        comps = _n_components(el, where=f"{where} point array {name!r}")
        arr = _decode(el, ctx, where=f"{where} point array {name!r}", n_values=comps * n_points)
        if arr.size != comps * n_points:
            raise _BadVTP(
                f"{where}: point array {name!r} holds {arr.size} values, expected "
                f"{n_points} points x {comps} components"
            )
        point_data[name] = arr if comps == 1 else arr.reshape(n_points, comps)
    return verts, faces, point_data


def _n_components(el: ET.Element, *, where: str) -> int:
    try:
        comps = int(el.get("NumberOfComponents", "1"))
    except ValueError:
        raise _BadVTP(f"{where}: NumberOfComponents is not an integer") from None
    if comps < 1:
        raise _BadVTP(f"{where}: NumberOfComponents must be at least 1, got {comps}")
    return comps


def _cell_arrays(piece: ET.Element, kind: str, ctx: _Context, *, where: str):
    """(connectivity, offsets) int64 arrays of Polys or Strips, or (None, None) when absent."""
    el = piece.find(kind)
    if el is None:
        return None, None
    arrays = {a.get("Name"): a for a in el.findall("DataArray")}
    if "connectivity" not in arrays or "offsets" not in arrays:
        if int(piece.get(f"NumberOf{kind}", "0") or 0) == 0:
            return None, None
        raise _BadVTP(f"{where}: <{kind}> needs 'connectivity' and 'offsets' arrays")
    conn = _decode(arrays["connectivity"], ctx, where=f"{where} {kind} connectivity")
    offs = _decode(arrays["offsets"], ctx, where=f"{where} {kind} offsets")
    for name, a in (("connectivity", conn), ("offsets", offs)):
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                raise _BadVTP(f"{where}: {kind} {name} holds non-integer values")
    conn, offs = conn.astype(np.int64), offs.astype(np.int64)
    expected = piece.get(f"NumberOf{kind}")
    if expected is not None and int(expected) != offs.size:
        raise _BadVTP(f"{where}: NumberOf{kind}={expected} but {offs.size} offsets are stored")
    if offs.size and (np.any(np.diff(offs) < 0) or offs[0] < 0 or offs[-1] != conn.size):
        raise _BadVTP(
            f"{where}: {kind} offsets must rise to the connectivity length {conn.size}"
        )
    return conn, offs


def fan_triangles(conn: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """Fan-triangulate polygons: cell (c0..ck-1) -> (c0, cj, cj+1) for j = 1..k-2. -> (F, 3)"""
    starts = np.concatenate([[0], offs[:-1]]) if offs.size else offs
    sizes = offs - starts
    n_tri = np.maximum(sizes - 2, 0)
    first = np.repeat(starts, n_tri)
    j = np.arange(n_tri.sum()) - np.repeat(np.cumsum(n_tri) - n_tri, n_tri) + 1
    return np.stack([conn[first], conn[first + j], conn[first + j + 1]], axis=1)


def strip_triangles(conn: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """Decompose triangle strips; odd triangles swap their first two corners. -> (F, 3)"""
    starts = np.concatenate([[0], offs[:-1]]) if offs.size else offs
    n_tri = np.maximum(offs - starts - 2, 0)
    i = np.arange(n_tri.sum()) - np.repeat(np.cumsum(n_tri) - n_tri, n_tri)
    base = np.repeat(starts, n_tri) + i
    odd = (i % 2).astype(bool)
    a = np.where(odd, base + 1, base)
    b = np.where(odd, base, base + 1)
    return np.stack([conn[a], conn[b], conn[base + 2]], axis=1)


def _decode(el: ET.Element, ctx: _Context, *, where: str, n_values: int | None = None
            ) -> np.ndarray:
    """The flat values of one DataArray, in its own numeric type (native byte order).

    n_values: how many values the array must hold, when the file says so elsewhere
    (NumberOfPoints x components); compressed data declaring another size is refused before it
    is inflated.
    """
    vtk_type = el.get("type")
    if vtk_type not in VTK_TO_NUMPY:
        raise _BadVTP(f"{where}: unsupported DataArray type {vtk_type!r}")
    fmt = el.get("format", "ascii")
    dtype = np.dtype(VTK_TO_NUMPY[vtk_type])
    if fmt == "ascii":
        tokens = (el.text or "").split()
        try:
            values = np.array(tokens, dtype=np.float64 if dtype.kind == "f" else np.int64)
        except ValueError:
            raise _BadVTP(f"{where}: ascii data holds a value that is not a number") from None
        return values.astype(dtype)
    if fmt == "binary":
        blob = _b64decode((el.text or "").encode("ascii", "replace"), where=where)
    elif fmt == "appended":
        blob = _appended_blob(el, ctx, where=where)
    else:
        raise _BadVTP(f"{where}: unknown DataArray format {fmt!r}")
    n_bytes = None if n_values is None else n_values * dtype.itemsize
    data = _unpack_blob(blob, ctx, where=where, n_bytes=n_bytes)
    if len(data) % dtype.itemsize:
        raise _BadVTP(f"{where}: {len(data)} bytes is not a whole number of {vtk_type} values")
    values = np.frombuffer(data, dtype=dtype.newbyteorder(ctx.byte_order))
    return values.astype(dtype)


def _b64decode(text: bytes, *, where: str) -> bytes:
    """Decode base64 text that may be several padded runs back to back (header, then data)."""
    text = text.translate(None, _WHITESPACE)
    if text.translate(None, _BASE64_ALPHABET):
        raise _BadVTP(f"{where}: binary data is not valid base64")
    runs, pos = [], 0
    while pos < len(text):
        pad = text.find(b"=", pos)
        end = len(text) if pad < 0 else pad + 1
        while end < len(text) and text[end : end + 1] == b"=":
            end += 1
        runs.append(text[pos:end])
        pos = end
    try:
        return b"".join(base64.b64decode(run, validate=True) for run in runs)
    except binascii.Error as exc:
        raise _BadVTP(f"{where}: binary data is not valid base64 ({exc})") from None


def _appended_blob(el: ET.Element, ctx: _Context, *, where: str) -> bytes:
    """The header-plus-data bytes of an appended DataArray (decoded when base64)."""
    try:
        offset = int(el.get("offset", ""))
    except ValueError:
        raise _BadVTP(f"{where}: appended DataArray without an integer offset") from None
    if offset < 0 or offset >= len(ctx.appended):
        raise _BadVTP(
            f"{where}: offset {offset} lies outside the appended data ({len(ctx.appended)} bytes)"
        )
    if not ctx.appended_base64:
        return ctx.appended[offset:]
    nxt = bisect.bisect_right(ctx.appended_offsets, offset)
    end = ctx.appended_offsets[nxt] if nxt < len(ctx.appended_offsets) else len(ctx.appended)
    return _b64decode(ctx.appended[offset:end], where=where)


def _unpack_blob(blob: bytes, ctx: _Context, *, where: str, n_bytes: int | None = None) -> bytes:
    """Strip the header of a binary blob and decompress; trailing bytes are ignored."""
    hsize = ctx.header.itemsize
    if ctx.decompress is None:
        if len(blob) < hsize:
            raise _BadVTP(f"{where}: binary data shorter than its header")
        declared = int(np.frombuffer(blob[:hsize], dtype=ctx.header)[0])
        if len(blob) - hsize < declared:
            raise _BadVTP(
                f"{where}: header announces {declared} bytes but {len(blob) - hsize} follow"
            )
        return blob[hsize : hsize + declared]
    if len(blob) < 3 * hsize:
        raise _BadVTP(f"{where}: compressed data shorter than its header")
    n_blocks, block_size, last_size = map(int, np.frombuffer(blob[: 3 * hsize], dtype=ctx.header))
    head_len = (3 + n_blocks) * hsize
    if len(blob) < head_len:
        raise _BadVTP(f"{where}: compressed-data header for {n_blocks} blocks is cut short")
    if n_blocks and (block_size <= 0 or last_size > block_size):
        raise _BadVTP(
            f"{where}: compressed-data header declares blocks of {block_size} bytes and a last "
            f"block of {last_size}"
        )
    sizes = np.frombuffer(blob[3 * hsize : head_len], dtype=ctx.header).astype(np.int64)
    if head_len + int(sizes.sum()) > len(blob):
        raise _BadVTP(f"{where}: compressed blocks are cut short")
    # The last block has `last_size` bytes, or a full block when last_size is 0.
    total = (n_blocks - 1) * block_size + (last_size or block_size) if n_blocks else 0
    if n_bytes is not None and total != n_bytes:
        raise _BadVTP(
            f"{where}: compressed-data header declares {total} bytes, expected {n_bytes}"
        )
    try:
        ctx.budget.take(total, what=f"{where}: compressed data")
    except ValueError as exc:
        raise _BadVTP(str(exc)) from None
    out, pos = [], head_len
    for k, size in enumerate(sizes):
        expected = last_size if (k == n_blocks - 1 and last_size) else block_size
        out.append(_inflate(ctx.decompress(), blob[pos : pos + int(size)], expected,
                            where=f"{where}: block {k}"))
        pos += int(size)
    return b"".join(out)


def _inflate(decompressor, data: bytes, expected: int, *, where: str) -> bytes:
    """Decompress one block to exactly `expected` bytes, never producing more than that."""
    # max_length + 1 tells "exactly as declared" from "more than declared" without inflating it.
    block = decompressor.decompress(data, max_length=expected + 1)
    if len(block) > expected:
        raise _BadVTP(f"{where} inflates to more than the {expected} bytes its header declares")
    if len(block) != expected or not decompressor.eof:
        raise _BadVTP(f"{where} inflates to {len(block)} bytes, expected {expected}")
    return block


# ---------------------------------------------------------------------------------- writing
def write_vtp(
    path: str | Path,
    vertices: np.ndarray,
    faces: np.ndarray,
    point_data: Mapping[str, np.ndarray] | None = None,
    *,
    binary: bool = True,
) -> None:
    """Write a triangle mesh as VTK XML PolyData, atomically.

    vertices: (V, 3) finite coordinates, written as Float64 Points.
    faces: (F, 3) integer triangles, written as Int64 Polys connectivity/offsets.
    point_data: name -> (V,) or (V, C) numeric array, written with NumberOfComponents C in its own
        type (bool as UInt8, float16 as Float32).
    binary: True writes inline base64 DataArrays, uncompressed, little-endian, each a UInt64 byte
        count followed by the data, the two base64-encoded separately as VTK itself does
        (`version="1.0" header_type="UInt64"`, readable by VTK >= 6 / ParaView / Slicer); False
        writes ascii (floats with shortest round-trip digits, so both forms read back exactly).

    Raises `MeshError(path, ...)` for arrays of the wrong shape or type.
    """
    path = Path(path)
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or not np.issubdtype(v.dtype, np.number):
        raise MeshError(path, f"vertices must be a numeric (V, 3) array, got {v.dtype} {v.shape}")
    v = v.astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise MeshError(path, "vertices hold NaN or infinite coordinates; nothing written")
    if f.size == 0:
        f = np.zeros((0, 3), dtype=np.int64)
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise MeshError(path, f"faces must be an integer (F, 3) array, got {f.dtype} {f.shape}")
    f = f.astype(np.int64)
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise MeshError(path, f"faces index vertices {f.min()}..{f.max()} but there are {len(v)}")
    arrays = []
    for name, arr in dict(point_data or {}).items():
        a = np.asarray(arr)
        if a.dtype == bool:
            a = a.astype(np.uint8)
        elif a.dtype == np.float16:
            a = a.astype(np.float32)
        if a.dtype.newbyteorder("<").str not in _NUMPY_TO_VTK:
            raise MeshError(
                path, f"point_data[{name!r}] has dtype {a.dtype}, which VTK cannot store"
            )
        if a.ndim not in (1, 2) or a.shape[0] != len(v):
            raise MeshError(
                path,
                f"point_data[{name!r}] has shape {a.shape}, expected ({len(v)},) or ({len(v)}, C)",
            )
        arrays.append((str(name), a))

    enc = _binary_data_array if binary else _ascii_data_array
    lines = [
        '<?xml version="1.0"?>',
        '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">',
        "  <PolyData>",
        f'    <Piece NumberOfPoints="{len(v)}" NumberOfVerts="0" NumberOfLines="0" '
        f'NumberOfStrips="0" NumberOfPolys="{len(f)}">',
        "      <PointData>",
        *(enc(a, name=name) for name, a in arrays),
        "      </PointData>",
        "      <Points>",
        enc(v, name="Points"),
        "      </Points>",
        "      <Polys>",
        enc(f.reshape(-1), name="connectivity"),
        enc(np.arange(3, 3 * len(f) + 1, 3, dtype=np.int64), name="offsets"),
        "      </Polys>",
        "    </Piece>",
        "  </PolyData>",
        "</VTKFile>",
        "",
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    log.debug("wrote %s (%d points, %d triangles, %d point arrays)",
              path, len(v), len(f), len(arrays))


def _open_tag(a: np.ndarray, *, name: str, fmt: str) -> str:
    vtk_type = _NUMPY_TO_VTK[a.dtype.newbyteorder("<").str]
    comps = a.shape[1] if a.ndim == 2 else 1
    return (
        f'        <DataArray type="{vtk_type}" Name={quoteattr(name)} '
        f'NumberOfComponents="{comps}" format="{fmt}">'
    )


def _binary_data_array(a: np.ndarray, *, name: str) -> str:
    data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    header = np.array([len(data)], dtype="<u8").tobytes()
    text = (base64.b64encode(header) + base64.b64encode(data)).decode("ascii")
    return f"{_open_tag(a, name=name, fmt='binary')}\n          {text}\n        </DataArray>"


def _ascii_data_array(a: np.ndarray, *, name: str) -> str:
    rows = a.reshape(len(a), -1) if a.ndim == 2 else a.reshape(-1, 1)
    fmt = repr if a.dtype.kind == "f" else str
    if a.dtype.kind == "f" and a.dtype != np.float64:
        # repr of the float64 widening is exact, and rounds back to the same float32.
        rows = rows.astype(np.float64)
    body = "\n".join("          " + " ".join(map(fmt, row)) for row in rows.tolist())
    return f"{_open_tag(a, name=name, fmt='ascii')}\n{body}\n        </DataArray>"
