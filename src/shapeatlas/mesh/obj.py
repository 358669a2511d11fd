"""Reading Wavefront OBJ surface meshes.

Hand-written because meshio (5.3) refuses a legal OBJ whose normals or texture coordinates are
indexed apart from its vertices (`f v//vn`, `f v/vt/vn` with more normals than vertices, as
many exporters write, 3D-IRCADb's liver surfaces among them): it insists on one normal per
vertex. trimesh reads such files, but splits a vertex for every distinct (vertex, normal) pair,
which opens the surface at every crease. Only the geometry is needed here, so the reader keeps
`v` and `f` and drops the rest:

- `v x y z [w]` (and `v x y z r g b` colours): the first three numbers.
- `f` corners `i`, `i/t`, `i//n`, `i/t/n`: only `i`; negative indices count back from the last
  vertex read so far; polygons are fan-triangulated.
- `vn`, `vt`, `vp`, `o`, `g`, `s`, `usemtl`, `mtllib`, `l`, `p`, comments and blank lines are
  ignored; `\\` continues a line; CRLF line ends are fine.

Memory is bounded by the file: nothing is allocated for a count the file only declares.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from shapeatlas.errors import MeshError

log = logging.getLogger(__name__)


class _BadOBJ(Exception):
    """Internal: why a file is not valid OBJ; turned into `MeshError` at the boundary."""


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the vertices and triangles of an OBJ file.

    Returns vertices (V, 3) float64 and faces (F, 3) int64 (polygons fan-triangulated).
    Raises `MeshError(path, "could not be parsed as OBJ: <reason>")` for anything malformed.
    """
    path = Path(path)
    try:
        return _parse(path.read_bytes())
    except _BadOBJ as exc:
        raise MeshError(path, f"could not be parsed as OBJ: {exc}") from None


def _parse(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    text = raw.decode("latin-1").replace("\\\r\n", " ").replace("\\\n", " ")
    verts: list[list[float]] = []
    tris: list[tuple[int, int, int]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        key = words[0]
        if key == "v":
            if len(words) < 4:
                raise _BadOBJ(f"line {number}: a vertex needs three coordinates")
            try:
                verts.append([float(w) for w in words[1:4]])
            except ValueError:
                raise _BadOBJ(f"line {number}: a vertex coordinate is not a number") from None
        elif key == "f":
            if len(words) < 4:
                raise _BadOBJ(f"line {number}: a face needs at least three corners")
            corners = [_corner(w, len(verts), number) for w in words[1:]]
            tris.extend((corners[0], corners[j], corners[j + 1])
                        for j in range(1, len(corners) - 1))
    v = np.array(verts, dtype=np.float64).reshape(-1, 3)
    f = np.array(tris, dtype=np.int64).reshape(-1, 3)
    if f.size and f.max() >= len(v):
        raise _BadOBJ(f"a face refers to vertex {f.max() + 1} but the file has {len(v)}")
    return v, f


def _corner(word: str, n_verts: int, number: int) -> int:
    """The 0-based vertex index of one face corner `i[/t[/n]]`."""
    try:
        i = int(word.split("/", 1)[0])
    except ValueError:
        raise _BadOBJ(f"line {number}: face corner {word!r} is not a vertex index") from None
    if i > 0:
        return i - 1  # checked against the final vertex count
    if i == 0 or n_verts + i < 0:
        raise _BadOBJ(f"line {number}: face corner {word!r} refers to no vertex "
                      f"({n_verts} defined before it)")
    return n_verts + i
