"""Reading and writing surface meshes (OBJ, PLY, STL, OFF, legacy VTK through meshio; VTP in
`shapeatlas.mesh.vtp`, since meshio has no VTP support).

meshio does the parsing; this module turns its many failure modes into one `MeshError` naming the
file, triangulates polygon cells, merges STL's per-face vertex copies, and writes atomically (a
temporary file in the same folder, then `os.replace`), so a crash or Ctrl-C never leaves a
half-written mesh behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from shapeatlas.atomic import write_atomic
from shapeatlas.errors import MeshError
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.ply import write_ply
from shapeatlas.mesh.vtp import read_vtp, write_vtp

log = logging.getLogger(__name__)

#: Extensions read as surface meshes, and the meshio format name of each.
READ_FORMATS = {
    ".obj": "obj",
    ".ply": "ply",
    ".stl": "stl",
    ".off": "off",
    ".vtk": "vtk",
    ".vtp": "vtp",
}
#: Extensions written, and whether the format keeps per-vertex arrays.
WRITE_FORMATS = {".ply": True, ".obj": False, ".stl": False, ".vtk": True, ".vtp": True}


def mesh_suffix(path: str | Path) -> str:
    """The lower-case extension of a mesh path."""
    return Path(path).suffix.lower()


def is_mesh_file(path: str | Path) -> bool:
    """True for files whose extension `read_mesh` understands."""
    return mesh_suffix(path) in READ_FORMATS


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence meshio while it works: it prints to stdout/stderr and warns on its own."""
    mlog = logging.getLogger("meshio")
    level = mlog.level
    mlog.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
                contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        mlog.setLevel(level)


def _triangulate(cells) -> np.ndarray:
    """Collect triangles from meshio cell blocks; fan-triangulate quads and polygons."""
    tris = []
    for block in cells:
        data = np.asarray(block.data)
        if block.type == "triangle":
            tris.append(data)
        elif block.type in ("quad",) or block.type.startswith("polygon"):
            if data.ndim != 2 or data.shape[1] < 3:
                continue
            k = data.shape[1]
            for j in range(1, k - 1):
                tris.append(data[:, [0, j, j + 1]])
    if not tris:
        return np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(tris, axis=0).astype(np.int64)


def merge_duplicate_vertices(
    verts: np.ndarray, faces: np.ndarray, *, decimals: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge vertices with identical (optionally rounded) coordinates.

    verts: (V, 3), faces: (F, 3) -> (V', 3), (F, 3), (V,) map old index -> new index.
    Kept vertices appear in order of first occurrence, so the result is deterministic.
    """
    key = verts if decimals is None else np.round(verts, decimals)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    new_index = rank[inverse]
    new_verts = verts[first[order]]
    return new_verts, new_index[faces], new_index


def _read_meshio(path: Path, suffix: str) -> tuple[np.ndarray, np.ndarray, dict]:
    import meshio

    try:
        with _quiet():
            m = meshio.read(path, file_format=READ_FORMATS[suffix])
    except (Exception, SystemExit) as exc:  # meshio raises many types, even SystemExit
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MeshError(path, f"could not be parsed as {suffix[1:].upper()}: {reason}") from exc
    verts = np.asarray(m.points)
    if verts.ndim == 2 and verts.shape[1] == 2:
        verts = np.concatenate([verts, np.zeros((len(verts), 1))], axis=1)
    point_data = {}
    for key, arr in (m.point_data or {}).items():
        arr = np.asarray(arr)
        if arr.shape[:1] == verts.shape[:1]:
            point_data[key] = arr
    return verts, _triangulate(m.cells), point_data


def read_mesh(path: str | Path, *, check_area: bool = True) -> Mesh:
    """Read a triangle surface mesh from OBJ, PLY, STL, OFF, VTK or VTP.

    Per-vertex arrays stored in the file (PLY properties, VTK point data) are kept in
    `Mesh.point_data`. Raises `MeshError` naming the file for a missing, empty, unparsable or
    invalid mesh (NaN coordinates, out-of-range faces, no faces, zero area).
    """
    path = Path(path)
    suffix = mesh_suffix(path)
    if suffix not in READ_FORMATS:
        raise MeshError(
            path,
            f"unsupported mesh format {suffix or '(no extension)'!r}; "
            f"readable formats: {', '.join(sorted(READ_FORMATS))}",
        )
    if not path.exists():
        raise MeshError(path, "no such file")
    if path.is_dir():
        raise MeshError(path, "is a folder, not a mesh file")
    if path.stat().st_size == 0:
        raise MeshError(path, "the file is empty")
    if suffix == ".vtp":
        verts, faces, point_data = read_vtp(path)
    else:
        verts, faces, point_data = _read_meshio(path, suffix)
    if verts.size == 0:
        raise MeshError(path, "the file holds no vertices")
    if faces.size == 0:
        raise MeshError(
            path, f"the file holds {len(verts)} vertices but no triangles (a point cloud?)"
        )
    if suffix == ".stl" and len(verts) == 3 * len(faces):
        # STL stores every triangle's corners separately: weld them back into a surface.
        with np.errstate(invalid="ignore"):
            if np.isfinite(verts).all():
                verts, faces, _ = merge_duplicate_vertices(verts, faces)
    mesh = Mesh(verts, faces, name=str(path), point_data=point_data)
    if check_area:
        mesh.check_area()
    return mesh


def write_mesh(
    mesh: Mesh,
    path: str | Path,
    *,
    point_data: Mapping[str, np.ndarray] | None = None,
    binary: bool = True,
) -> Path:
    """Write `mesh` to PLY, OBJ, STL, VTK or VTP (chosen by extension), atomically.

    `point_data` (default: the mesh's own) is written where the format keeps per-vertex arrays
    (PLY, VTK, VTP); for OBJ and STL it is dropped with a logged warning. Binary PLY and VTP are
    written by shapeatlas itself and are byte-identical for identical input; the other formats
    go through meshio.
    Returns the path written.
    """
    path = Path(path)
    suffix = mesh_suffix(path)
    if suffix not in WRITE_FORMATS:
        raise MeshError(
            path,
            f"cannot write format {suffix or '(no extension)'!r}; "
            f"writable formats: {', '.join(sorted(WRITE_FORMATS))}",
        )
    pdata = dict(mesh.point_data if point_data is None else point_data)
    for key, arr in pdata.items():
        if np.asarray(arr).shape[:1] != (mesh.n_vertices,):
            raise MeshError(path, f"point_data[{key!r}] does not have one row per vertex")
    if pdata and not WRITE_FORMATS[suffix]:
        log.warning("%s: format %s cannot store per-vertex arrays %s; they are not written",
                    path, suffix, sorted(pdata))
        pdata = {}
    if suffix == ".vtp":
        write_vtp(path, mesh.vertices, mesh.faces, pdata, binary=binary)
        return path
    if suffix == ".ply" and binary:
        return write_ply(path, mesh.vertices, mesh.faces, pdata)
    import meshio

    m = meshio.Mesh(
        np.asarray(mesh.vertices, dtype=np.float64),
        [("triangle", np.asarray(mesh.faces, dtype=np.int64))],
        point_data={k: np.asarray(v) for k, v in pdata.items()},
    )
    kwargs = {}
    if suffix in (".ply", ".stl", ".vtk"):
        kwargs["binary"] = binary

    def _write(tmp: Path) -> None:
        with _quiet():
            meshio.write(tmp, m, file_format=READ_FORMATS[suffix], **kwargs)

    write_atomic(path, _write)
    return path
