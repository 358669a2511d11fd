"""Reading legacy VTK (.vtk) surface meshes: POLYDATA, and UNSTRUCTURED_GRID surface cells.

Hand-written because meshio (5.3) reads only the grid datasets of the legacy format and stops at
`DATASET POLYDATA` ("Only VTK 'UNSTRUCTURED_GRID', ... supported"), yet polydata is what VTK,
3D Slicer, ITK-SNAP and ShapeWorks write for a surface. The `vtk` wheel reads it, but it is
over 100 MB and an optional dependency at best. The format is simple enough to read in full
here, with every declared count checked against the bytes present before anything is allocated.

What is understood (VTK's "File Formats" description, file versions 2.0 to 5.1):

- `ASCII` and `BINARY` (big-endian) data, every numeric type name (`float`, `double`, `int`,
  `vtktypeint64`, ..., `bit`).
- Geometry: `POINTS`; `POLYGONS` and `TRIANGLE_STRIPS` (versions before 5 as `n size` followed by
  `k i0 .. ik-1` per cell, version 5 as `OFFSETS` and `CONNECTIVITY` arrays); `VERTICES` and
  `LINES` are read and ignored. For `UNSTRUCTURED_GRID`, `CELLS` and `CELL_TYPES`, keeping
  triangles, quads, polygons (fan-triangulated) and triangle strips.
- Attributes: `POINT_DATA` arrays of one row per point (`SCALARS`, `VECTORS`, `NORMALS`,
  `TEXTURE_COORDINATES`, `TENSORS`, `FIELD` arrays, ...) are kept; `CELL_DATA`, dataset `FIELD`
  data, lookup tables and `METADATA` blocks are skipped. An attribute of a type this reader
  cannot skip (string arrays) ends the reading of attributes, with a log message; the geometry,
  which always comes first, is kept.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np

from shapeatlas.errors import MeshError
from shapeatlas.mesh.limits import check_declared
from shapeatlas.mesh.vtp import fan_triangles, strip_triangles

log = logging.getLogger(__name__)

#: Legacy VTK type names and the NumPy type codes they correspond to (big-endian when binary).
VTK_TYPES = {
    "bit": "u1",
    "unsigned_char": "u1", "char": "i1", "signed_char": "i1",
    "unsigned_short": "u2", "short": "i2",
    "unsigned_int": "u4", "int": "i4",
    "unsigned_long": "u8", "long": "i8",
    "unsigned_long_long": "u8", "long_long": "i8", "vtkidtype": "i8",
    "float": "f4", "double": "f8",
    "vtktypeint8": "i1", "vtktypeuint8": "u1", "vtktypeint16": "i2", "vtktypeuint16": "u2",
    "vtktypeint32": "i4", "vtktypeuint32": "u4", "vtktypeint64": "i8", "vtktypeuint64": "u8",
    "vtktypefloat32": "f4", "vtktypefloat64": "f8",
}
#: UNSTRUCTURED_GRID cell types that are surface pieces: triangle, triangle strip, polygon, quad.
_TRIANGLE, _STRIP, _POLYGON, _QUAD = 5, 6, 7, 9
_CELL_SECTIONS = ("VERTICES", "LINES", "POLYGONS", "TRIANGLE_STRIPS", "CELLS")


class _BadVTK(Exception):
    """Internal: why a file is not valid legacy VTK; turned into `MeshError` at the boundary."""


class _Unsupported(_BadVTK):
    """Internal: an attribute this reader cannot step over (the geometry is still usable)."""


def read_vtk_legacy(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Read the points, triangles and point data of a legacy VTK polydata or unstructured grid.

    Returns
    -------
    vertices: (V, 3) float64 point coordinates.
    faces: (F, 3) int64 triangles: polygons fan-triangulated, then triangle strips decomposed.
    point_data: name -> (V,) or (V, C) array of each numeric POINT_DATA attribute.

    Raises `MeshError(path, "could not be parsed as VTK: <reason>")` for anything malformed.
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        return _parse(raw)
    except (_BadVTK, ValueError, OverflowError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MeshError(path, f"could not be parsed as VTK: {reason}") from exc


class _Cursor:
    """A read position in the file: text lines for keywords, values in ASCII or binary."""

    def __init__(self, raw: bytes, *, binary: bool):
        self.raw = raw
        self.pos = 0
        self.binary = binary
        self.last_words: list[str] | None = None  # the line that ended an attribute section

    def line(self) -> bytes | None:
        """The next line (without its end), or None at the end of the file."""
        if self.pos >= len(self.raw):
            return None
        end = self.raw.find(b"\n", self.pos)
        end = len(self.raw) if end < 0 else end
        out = self.raw[self.pos : end]
        self.pos = end + 1
        return out.rstrip(b"\r")

    def words(self) -> list[str] | None:
        """The words of the next non-blank line, or None at the end of the file."""
        while (line := self.line()) is not None:
            if line.strip():
                return line.decode("latin-1").split()
        return None

    def values(self, n: int, vtk_type: str, *, what: str) -> np.ndarray:
        """n values of a legacy type name, in native byte order; 'bit' as 0/1 uint8. -> (n,)"""
        kind = vtk_type.lower()
        if kind not in VTK_TYPES:
            raise _Unsupported(f"{what}: data type {vtk_type!r} is not supported")
        dtype = np.dtype(VTK_TYPES[kind])
        available = len(self.raw) - self.pos
        if self.binary:
            n_bytes = (n + 7) // 8 if kind == "bit" else n * dtype.itemsize
            check_declared(n_bytes, min_bytes_each=1, available=available, what=f"bytes of {what}")
            big = np.dtype(np.uint8) if kind == "bit" else dtype.newbyteorder(">")
            data = np.frombuffer(self.raw, dtype=big, count=n_bytes // big.itemsize,
                                 offset=self.pos)
            self.pos += n_bytes
            if kind == "bit":
                return np.unpackbits(data)[:n]
            return data.astype(dtype)
        # Each ASCII value takes at least one character and one separator.
        check_declared(n, min_bytes_each=2, available=available + 1, what=f"values of {what}")
        start, found = self.pos, 0
        while found < n:
            line = self.line()
            if line is None:
                raise _BadVTK(f"{what}: the file ends after {found} of {n} values")
            found += len(line.split())
        if found != n:
            raise _BadVTK(f"{what}: {found} values where {n} were declared")
        text = self.raw[start : self.pos].decode("latin-1")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy warns or raises at a word that is no number
                out = np.fromstring(text, dtype=np.float64 if dtype.kind == "f" else np.int64,
                                    sep=" ")
        except ValueError:
            out = np.zeros(0)
        if out.size != n:
            raise _BadVTK(f"{what}: holds a value that is not a number")
        return out.astype(dtype)

    def skip_metadata(self) -> None:
        """Step over a METADATA block: everything up to the next blank line."""
        while (line := self.line()) is not None and line.strip():
            pass


def _count(word: str, *, what: str) -> int:
    try:
        n = int(word)
    except ValueError:
        raise _BadVTK(f"{what}: {word!r} is not a count") from None
    if n < 0:
        raise _BadVTK(f"{what}: negative count {n}")
    return n


def _name(word: str) -> str:
    """Legacy VTK writes special characters in names as %XX."""
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), word)


def _parse(raw: bytes) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    cur = _Cursor(raw, binary=False)
    first = cur.line()
    match = re.match(rb"\s*#\s*vtk\s+DataFile\s+Version\s+(\d+)(?:\.(\d+))?", first or b"", re.I)
    if not match:
        raise _BadVTK("the first line is not '# vtk DataFile Version x.y'")
    major = int(match.group(1))
    cur.line()  # the title: free text
    encoding = (cur.words() or ["(nothing)"])[0].upper()
    if encoding not in ("ASCII", "BINARY"):
        raise _BadVTK(f"the third line says {encoding!r}, expected ASCII or BINARY")
    cur.binary = encoding == "BINARY"
    words = cur.words() or ["(nothing)"]
    if words[0].upper() != "DATASET" or len(words) < 2:
        raise _BadVTK(f"expected a DATASET line, found {' '.join(words)!r}")
    dataset = words[1].upper()
    if dataset not in ("POLYDATA", "UNSTRUCTURED_GRID"):
        raise _BadVTK(f"the file holds a {dataset} dataset, not a surface "
                      "(POLYDATA or UNSTRUCTURED_GRID)")

    points = None
    cells: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    cell_types = None
    point_data: dict[str, np.ndarray] = {}
    in_attributes = False
    pending = None
    while (words := pending or cur.words()) is not None:
        pending = None
        key = words[0].upper()
        if key == "POINTS":
            if len(words) < 3:
                raise _BadVTK("POINTS needs a count and a type")
            n = _count(words[1], what="POINTS")
            points = cur.values(3 * n, words[2], what="POINTS").astype(np.float64).reshape(n, 3)
        elif key in _CELL_SECTIONS:
            cells[key] = _read_cells(cur, words, major=major)
        elif key == "CELL_TYPES":
            n = _count(words[1] if len(words) > 1 else "", what="CELL_TYPES")
            cell_types = cur.values(n, "int", what="CELL_TYPES").astype(np.int64)
        elif key == "METADATA":
            cur.skip_metadata()
        elif key == "FIELD":
            _read_field(cur, words, n_rows=None)
        elif key in ("POINT_DATA", "CELL_DATA"):
            if points is None:
                raise _BadVTK(f"{key} before POINTS")
            n = _count(words[1] if len(words) > 1 else "", what=key)
            if key == "POINT_DATA" and n != len(points):
                raise _BadVTK(f"POINT_DATA for {n} points, but the file has {len(points)}")
            in_attributes = True
            try:
                arrays = _read_attributes(cur, n)
            except _Unsupported as exc:
                log.info("legacy VTK attributes skipped from %s on: %s", key, exc)
                break
            if key == "POINT_DATA":
                point_data.update({k: v for k, v in arrays.items() if k not in point_data})
            pending = cur.last_words
        elif in_attributes:
            log.info("legacy VTK: unknown attribute %r; the attributes after it are skipped",
                     words[0])
            break
        else:
            raise _BadVTK(f"unknown section {words[0]!r}")
    if points is None:
        raise _BadVTK("no POINTS section")
    faces = _triangles(cells, cell_types, dataset=dataset)
    if faces.size and (faces.min() < 0 or faces.max() >= len(points)):
        bad = faces.min() if faces.min() < 0 else faces.max()
        raise _BadVTK(f"cells refer to point {bad} but the file has {len(points)} points")
    return points, faces, point_data


def _read_cells(cur: _Cursor, words: list[str], *, major: int) -> tuple[np.ndarray, np.ndarray]:
    """One cell section -> (connectivity, offsets) with offsets[i] the end of cell i."""
    key = words[0].upper()
    if len(words) < 3:
        raise _BadVTK(f"{key} needs two counts")
    n_a, n_b = _count(words[1], what=key), _count(words[2], what=key)
    if major >= 5:
        # "KEY n_offsets n_connectivity", then "OFFSETS type" and "CONNECTIVITY type" arrays.
        arrays = {}
        for expected, n in (("OFFSETS", n_a), ("CONNECTIVITY", n_b)):
            head = cur.words() or ["(end of file)"]
            if head[0].upper() != expected or len(head) < 2:
                raise _BadVTK(f"{key}: expected {expected}, found {' '.join(head)!r}")
            arrays[expected] = cur.values(n, head[1], what=f"{key} {expected}").astype(np.int64)
        offs, conn = arrays["OFFSETS"], arrays["CONNECTIVITY"]
        if offs.size == 0:
            return conn[:0], offs
        if offs[0] != 0 or np.any(np.diff(offs) < 0) or offs[-1] != conn.size:
            raise _BadVTK(f"{key}: offsets must rise from 0 to the connectivity length")
        return conn, offs[1:]
    # "KEY n_cells size", then n_cells records "k i0 .. ik-1" holding `size` integers in all.
    flat = cur.values(n_b, "int", what=key).astype(np.int64)
    if n_a == 0:
        return flat[:0], flat[:0]
    k = int(flat[0]) if n_b else -1
    if k >= 0 and n_b == n_a * (k + 1) and np.all(flat[:: k + 1] == k):
        # Every cell the same size (all triangles, say): no loop.
        conn = flat.reshape(n_a, k + 1)[:, 1:].reshape(-1)
        return conn, np.arange(1, n_a + 1, dtype=np.int64) * k
    sizes = np.empty(n_a, dtype=np.int64)
    keep = np.ones(n_b, dtype=bool)
    pos = 0
    for i in range(n_a):
        if pos >= n_b or flat[pos] < 0:
            raise _BadVTK(f"{key}: {n_a} cells do not fit in {n_b} integers")
        sizes[i] = flat[pos]
        keep[pos] = False
        pos += int(flat[pos]) + 1
    if pos != n_b:
        raise _BadVTK(f"{key}: {n_a} cells hold {pos} integers, but {n_b} were declared")
    return flat[keep], np.cumsum(sizes)


def _read_attributes(cur: _Cursor, n_rows: int) -> dict[str, np.ndarray]:
    """The arrays of one POINT_DATA or CELL_DATA section, up to the next section or the end.

    The words of the line that ended it are left in `cur.last_words` (None at the end).
    """
    arrays: dict[str, np.ndarray] = {}
    while (words := cur.words()) is not None:
        key = words[0].upper()
        if key == "METADATA":
            cur.skip_metadata()
            continue
        if key in ("POINT_DATA", "CELL_DATA") or key not in _ATTRIBUTE_READERS:
            cur.last_words = words
            return arrays
        for name, arr in _ATTRIBUTE_READERS[key](cur, words, n_rows):
            if name is not None and name not in arrays and arr.shape[:1] == (n_rows,):
                arrays[name] = arr
    cur.last_words = None
    return arrays


def _need(words: list[str], n: int) -> None:
    if len(words) < n:
        raise _BadVTK(f"{words[0]}: the line {' '.join(words)!r} is incomplete")


def _columns(arr: np.ndarray, n_rows: int, comps: int) -> np.ndarray:
    return arr if comps == 1 else arr.reshape(n_rows, comps)


def _scalars(cur: _Cursor, words: list[str], n_rows: int):
    _need(words, 3)
    comps = _count(words[3], what="SCALARS") if len(words) > 3 else 1
    mark = cur.pos
    table = cur.words()
    if not table or table[0].upper() != "LOOKUP_TABLE":
        cur.pos = mark  # the table line is optional in practice
    arr = cur.values(n_rows * comps, words[2], what=f"SCALARS {words[1]}")
    return [(_name(words[1]), _columns(arr, n_rows, comps))]


def _color_scalars(cur: _Cursor, words: list[str], n_rows: int):
    _need(words, 3)
    comps = _count(words[2], what="COLOR_SCALARS")
    arr = cur.values(n_rows * comps, "unsigned_char" if cur.binary else "float",
                     what=f"COLOR_SCALARS {words[1]}")
    return [(_name(words[1]), _columns(arr, n_rows, comps))]


def _lookup_table(cur: _Cursor, words: list[str], n_rows: int):
    _need(words, 3)
    size = _count(words[2], what="LOOKUP_TABLE")
    cur.values(4 * size, "unsigned_char" if cur.binary else "float", what="LOOKUP_TABLE")
    return []


def _fixed(comps: int, type_at: int = 2):
    def read(cur: _Cursor, words: list[str], n_rows: int):
        _need(words, type_at + 1)
        arr = cur.values(n_rows * comps, words[type_at], what=f"{words[0]} {words[1]}")
        return [(_name(words[1]), _columns(arr, n_rows, comps))]
    return read


def _texture_coordinates(cur: _Cursor, words: list[str], n_rows: int):
    _need(words, 4)
    comps = _count(words[2], what="TEXTURE_COORDINATES")
    arr = cur.values(n_rows * comps, words[3], what=f"TEXTURE_COORDINATES {words[1]}")
    return [(_name(words[1]), _columns(arr, n_rows, comps))]


def _read_field(cur: _Cursor, words: list[str], n_rows: int | None):
    """A FIELD block: `FIELD name k`, then k arrays `name comps tuples type` and their values."""
    _need(words, 3)
    out = []
    for _ in range(_count(words[2], what="FIELD")):
        head = cur.words()
        while head is not None and head[0].upper() == "METADATA":
            cur.skip_metadata()
            head = cur.words()
        if head is None:
            raise _BadVTK("FIELD: the file ends before all its arrays")
        if head[0].upper() == "NULL_ARRAY":
            continue
        _need(head, 4)
        comps = _count(head[1], what=f"FIELD array {head[0]}")
        tuples = _count(head[2], what=f"FIELD array {head[0]}")
        arr = cur.values(comps * tuples, head[3], what=f"FIELD array {head[0]}")
        if n_rows is not None and tuples == n_rows:
            out.append((_name(head[0]), _columns(arr, n_rows, comps)))
    return out


_ATTRIBUTE_READERS = {
    "SCALARS": _scalars,
    "COLOR_SCALARS": _color_scalars,
    "LOOKUP_TABLE": _lookup_table,
    "VECTORS": _fixed(3),
    "NORMALS": _fixed(3),
    "TENSORS": _fixed(9),
    "TENSORS6": _fixed(6),
    "TEXTURE_COORDINATES": _texture_coordinates,
    "GLOBAL_IDS": _fixed(1),
    "PEDIGREE_IDS": _fixed(1),
    "EDGE_FLAGS": _fixed(1),
    "FIELD": _read_field,
}


def _triangles(cells: dict, cell_types: np.ndarray | None, *, dataset: str) -> np.ndarray:
    """Triangles of the surface cells. -> (F, 3) int64"""
    parts = []
    if dataset == "POLYDATA":
        if "POLYGONS" in cells:
            parts.append(fan_triangles(*cells["POLYGONS"]))
        if "TRIANGLE_STRIPS" in cells:
            parts.append(strip_triangles(*cells["TRIANGLE_STRIPS"]))
    elif "CELLS" in cells:
        conn, offs = cells["CELLS"]
        if cell_types is None or len(cell_types) != len(offs):
            raise _BadVTK(f"CELL_TYPES must give a type for each of the {len(offs)} cells")
        starts = np.concatenate([[0], offs[:-1]]).astype(np.int64)
        for types, split in (((_TRIANGLE, _POLYGON, _QUAD), fan_triangles),
                             ((_STRIP,), strip_triangles)):
            pick = np.isin(cell_types, types)
            if pick.any():
                c, o = _subset(conn, starts[pick], offs[pick])
                parts.append(split(c, o))
        other = ~np.isin(cell_types, (_TRIANGLE, _POLYGON, _QUAD, _STRIP))
        if other.any():
            log.info("legacy VTK: %d cells that are not surface pieces ignored", int(other.sum()))
    if not parts:
        return np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(parts, axis=0).astype(np.int64)


def _subset(conn: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """Connectivity and end offsets of the chosen cells only."""
    sizes = ends - starts
    idx = np.repeat(starts - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes) \
        + np.arange(int(sizes.sum()))
    return conn[idx], np.cumsum(sizes)
