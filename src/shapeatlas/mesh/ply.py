"""A deterministic binary PLY writer.

meshio writes a timestamp into every PLY header, so grooming the same cohort twice would not give
byte-identical files; this writer has a fixed header. Reading stays with meshio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from shapeatlas.atomic import atomic_path
from shapeatlas.errors import MeshError

#: numpy dtype -> (PLY type name, little-endian numpy type) for per-vertex properties.
_PLY_TYPES = {
    "f8": ("double", "<f8"), "f4": ("float", "<f4"),
    "i1": ("char", "i1"), "u1": ("uchar", "u1"), "b1": ("uchar", "u1"),
    "i2": ("short", "<i2"), "u2": ("ushort", "<u2"),
    "i4": ("int", "<i4"), "u4": ("uint", "<u4"),
    "i8": ("int", "<i4"), "u8": ("uint", "<u4"),  # PLY has no 64-bit integers
}


def _columns(point_data: Mapping[str, np.ndarray], n: int, path: Path):
    """Flatten point data into named scalar columns: (V,) -> name, (V, C) -> name_0..name_C-1."""
    cols = []
    for key, arr in point_data.items():
        arr = np.asarray(arr)
        if arr.shape[:1] != (n,) or arr.ndim > 2:
            raise MeshError(path, f"point_data[{key!r}] must have shape (V,) or (V, C), got {arr.shape}")
        code = f"{arr.dtype.kind}{arr.dtype.itemsize}"
        if code not in _PLY_TYPES:
            raise MeshError(path, f"point_data[{key!r}] has dtype {arr.dtype}, which PLY cannot store")
        ply_name, np_type = _PLY_TYPES[code]
        if code in ("i8", "u8"):
            info = np.iinfo(np.dtype(np_type))
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                raise MeshError(path, f"point_data[{key!r}] has integers too large for PLY")
        parts = [arr] if arr.ndim == 1 else [arr[:, j] for j in range(arr.shape[1])]
        names = [key] if arr.ndim == 1 else [f"{key}_{j}" for j in range(arr.shape[1])]
        cols += [(nm, ply_name, np_type, p) for nm, p in zip(names, parts)]
    return cols


def write_ply(
    path: str | Path,
    vertices: np.ndarray,
    faces: np.ndarray,
    point_data: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write a binary little-endian PLY atomically, byte-identical for identical input.

    vertices: (V, 3) written as doubles; faces: (F, 3) as int32 index lists;
    point_data: per-vertex arrays (V,) or (V, C), written as extra vertex properties.
    """
    path = Path(path)
    v = np.asarray(vertices, dtype="<f8")
    f = np.asarray(faces)
    cols = _columns(point_data or {}, len(v), path)
    header = ["ply", "format binary_little_endian 1.0", "comment written by shapeatlas",
              f"element vertex {len(v)}", "property double x", "property double y",
              "property double z"]
    header += [f"property {ply} {name}" for name, ply, _, _ in cols]
    header += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    vrow = np.empty(len(v), dtype=[("xyz", "<f8", (3,))] + [(n, t) for n, _, t, _ in cols])
    vrow["xyz"] = v
    for name, _, np_type, arr in cols:
        vrow[name] = arr.astype(np_type)
    frow = np.empty(len(f), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    frow["n"], frow["idx"] = 3, f
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(("\n".join(header) + "\n").encode("ascii"))
            fh.write(vrow.tobytes())
            fh.write(frow.tobytes())
    return path
