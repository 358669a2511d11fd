"""Reading and writing surface meshes (OBJ, PLY, STL, OFF, legacy VTK, VTP).

PLY, STL and OFF are parsed by meshio; OBJ (`shapeatlas.mesh.obj`), legacy VTK polydata
(`shapeatlas.mesh.vtk_legacy`) and VTP (`shapeatlas.mesh.vtp`) by small readers of their own,
because meshio refuses common files of the first two and has no reader for the third. Before
meshio allocates anything, the counts a PLY, OFF or binary STL header declares are checked against
the bytes the file holds (`shapeatlas.mesh.limits`), so a few-byte file declaring a billion
faces is refused at once. This module turns every failure into one `MeshError` naming the file,
triangulates polygon cells, merges STL's per-face vertex copies, and writes atomically (a
temporary file in the same folder, then `os.replace`), so a crash or Ctrl-C never leaves a
half-written mesh behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from shapeatlas.atomic import write_atomic
from shapeatlas.errors import MeshError
from shapeatlas.mesh.core import Mesh, as_mesh
from shapeatlas.mesh.limits import MAX_MESH_FILE_BYTES, check_declared
from shapeatlas.mesh.obj import read_obj
from shapeatlas.mesh.ply import write_ply
from shapeatlas.mesh.vtk_legacy import read_vtk_legacy
from shapeatlas.mesh.vtp import fan_triangles, read_vtp, write_vtp

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


#: Bytes of one binary PLY scalar of each type name.
_PLY_SIZES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2,
              "int16": 2, "uint16": 2, "int": 4, "uint": 4, "int32": 4, "uint32": 4,
              "float": 4, "float32": 4, "double": 8, "float64": 8}
#: Most bytes of a PLY header read while looking for `end_header`.
_PLY_MAX_HEADER = 1 << 20


def _check_ply_header(raw_head: bytes, size: int) -> None:
    """Refuse element counts in a PLY header that the rest of the file cannot hold."""
    end = raw_head.find(b"end_header")
    if end < 0:
        raise ValueError("no 'end_header' line in the first megabyte")
    body_start = raw_head.find(b"\n", end) + 1 or len(raw_head)
    binary, need, elements = False, 0.0, []
    for line in raw_head[:end].decode("latin-1").splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "format" and len(words) > 1:
            binary = words[1].startswith("binary")
        elif words[0] == "element" and len(words) > 2:
            elements.append([words[1], int(words[2]), 0])
        elif words[0] == "property" and elements and len(words) > 2:
            # A list holds at least its length; an ASCII value at least a digit and a space.
            kind = words[2] if words[1] == "list" else words[1]
            elements[-1][2] += _PLY_SIZES.get(kind, 1) if binary else 2
    for name, count, each in elements:
        need += count * each
        check_declared(count, min_bytes_each=max(each, 1), available=size - body_start,
                       what=f"PLY {name} elements")
    if need > size - body_start:
        raise ValueError(
            f"the header declares elements needing at least {int(need):,} bytes, but "
            f"{size - body_start:,} follow it"
        )


def _check_declared_counts(path: Path, suffix: str) -> None:
    """Check a PLY, OFF or binary STL header's counts against the file size (ValueError)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(_PLY_MAX_HEADER)
    if suffix == ".ply":
        _check_ply_header(head, size)
    elif suffix == ".off":
        # "OFF" (maybe with the counts on the same line), comments, then "V F E".
        words = []
        for line in head.decode("latin-1").splitlines():
            line = line.split("#", 1)[0]
            words += line.split()
            if len(words) >= 4:
                break
        if words and words[0].upper().endswith("OFF"):
            words = words[1:]
        if len(words) >= 2 and all(w.lstrip("-").isdigit() for w in words[:2]):
            n_v, n_f = int(words[0]), int(words[1])
            # A vertex takes at least "0 0 0\n", a triangle "3 0 1 2\n".
            check_declared(n_v, min_bytes_each=6, available=size, what="OFF vertices")
            check_declared(n_f, min_bytes_each=8, available=size - 6 * n_v, what="OFF faces")
    elif suffix == ".stl" and not head[:5].lower() == b"solid" and size >= 84:
        n = int(np.frombuffer(head[80:84], dtype="<u4")[0])
        check_declared(n, min_bytes_each=50, available=size - 84, what="STL triangles")


def _read_meshio(path: Path, suffix: str) -> tuple[np.ndarray, np.ndarray, dict]:
    import meshio

    try:
        _check_declared_counts(path, suffix)
    except ValueError as exc:
        raise MeshError(path, f"could not be parsed as {suffix[1:].upper()}: {exc}") from None
    try:
        with _quiet():
            m = meshio.read(path, file_format=READ_FORMATS[suffix])
    except (Exception, SystemExit) as exc:  # meshio raises many types, even SystemExit
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if suffix == ".ply":
            return _read_ply_trimesh(path, reason)
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


def _read_ply_trimesh(path: Path, meshio_reason: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Geometry of a PLY that meshio cannot read: binary files whose faces carry properties
    after the index list (MeshLab writes face colours so), read with trimesh's PLY reader."""
    from trimesh.exchange.ply import load_ply

    try:
        with open(path, "rb") as fh, _quiet():
            out = load_ply(fh)
        verts = np.asarray(out["vertices"], dtype=np.float64).reshape(-1, 3)
        faces = np.asarray(out.get("faces", np.zeros((0, 3))), dtype=np.int64)
        if faces.ndim == 2 and faces.shape[1] > 3:  # quads or polygons of one size
            k = faces.shape[1]
            faces = fan_triangles(faces.ravel(), np.arange(k, faces.size + 1, k))
        faces = faces.reshape(-1, 3)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MeshError(path, f"could not be parsed as PLY: {meshio_reason}; {reason}") from exc
    log.info("%s: read with trimesh (%s in meshio); per-vertex properties are not kept",
             path, meshio_reason)
    return verts, faces, {}


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
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MeshError(path, "no such file") from None
    except OSError as exc:
        raise MeshError(path, f"cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise MeshError(path, "is a folder, not a mesh file")
    if not stat.S_ISREG(st.st_mode):
        raise MeshError(path, "not a regular file (a device, pipe or socket?)")
    if st.st_size == 0:
        raise MeshError(path, "the file is empty")
    if st.st_size > MAX_MESH_FILE_BYTES:
        raise MeshError(path, f"{st.st_size:,} bytes, more than the {MAX_MESH_FILE_BYTES:,} "
                        "a mesh file may have")
    try:
        if suffix == ".vtp":
            verts, faces, point_data = read_vtp(path)
        elif suffix == ".vtk":
            verts, faces, point_data = read_vtk_legacy(path)
        elif suffix == ".obj":
            (verts, faces), point_data = read_obj(path), {}
        else:
            verts, faces, point_data = _read_meshio(path, suffix)
    except OSError as exc:
        raise MeshError(path, f"cannot be read ({exc.strerror or exc})") from None
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
    mesh: Mesh | Any,
    path: str | Path,
    *,
    point_data: Mapping[str, np.ndarray] | None = None,
    binary: bool = True,
) -> Path:
    """Write `mesh` to PLY, OBJ, STL, VTK or VTP (chosen by extension), atomically.

    `point_data` (default: the mesh's own) is written where the format keeps per-vertex arrays
    (PLY, VTK, VTP); for OBJ and STL it is dropped with a logged warning. Binary PLY and VTP are
    written by shapeatlas itself and are byte-identical for identical input; the other formats
    go through meshio. `mesh` may also be a `trimesh.Trimesh` or a `pyvista.PolyData` of
    triangles (`shapeatlas.mesh.core.as_mesh`).
    Returns the path written.
    """
    path = Path(path)
    if not isinstance(mesh, Mesh):
        mesh = as_mesh(mesh, name=str(path))
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
