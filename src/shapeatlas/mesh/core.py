"""The `Mesh` container: an immutable triangle mesh with cached derived quantities.

A `Mesh` checks its arrays once when it is built (finite coordinates, integer faces in range) and
raises `MeshError` naming the mesh otherwise, so nothing downstream has to re-check. Derived
quantities are computed on first use by the pure functions in `shapeatlas.mesh.geometry` and
cached on the instance; the arrays themselves are read-only, so the cache can never go stale.

Meshes of other libraries are taken by duck typing, without importing them: `as_mesh` turns a
`trimesh.Trimesh` (`vertices`, `faces`) or a `pyvista.PolyData` (`points` and the flat VTK cell
array `faces`) into a `Mesh`, and every estimator calls it (through `as_meshes`) where meshes
come in. `Mesh.to_trimesh` and `Mesh.to_pyvista` go the other way; pyvista is optional and is
named, with its install command, only when `to_pyvista` is called without it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from shapeatlas.errors import MeshError, OpenMeshError, ShapeAtlasError
from shapeatlas.mesh import geometry as geo

#: Surface area (in squared mesh units) at or below which a mesh counts as having no area.
ZERO_AREA_EPS = 1e-12
#: Linear maps with |det| at or below this are rejected as singular by `Mesh.transformed`.
SINGULAR_EPS = 1e-12


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Mesh:
    """An immutable triangle surface mesh.

    Parameters
    ----------
    vertices: (V, 3) float coordinates (millimetres by convention).
    faces: (F, 3) integer vertex indices; counter-clockwise seen from outside for closed surfaces.
    name: used in every error message about this mesh (usually the file name).
    point_data: optional per-vertex arrays, each with first dimension V.

    Examples
    --------
    >>> import numpy as np
    >>> tet = Mesh(np.array([[0., 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]),
    ...            np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]), name="tet")
    >>> round(tet.volume, 6), tet.is_watertight, tet.euler_characteristic
    (0.166667, True, 2)
    """

    vertices: np.ndarray
    faces: np.ndarray
    name: str = "mesh"
    point_data: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices)
        f = np.asarray(self.faces)
        if v.ndim != 2 or v.shape[1] != 3:
            raise MeshError(self.name, f"vertices must have shape (V, 3), got {v.shape}")
        if v.shape[0] == 0:
            raise MeshError(self.name, "the mesh has no vertices (empty mesh)")
        if not np.issubdtype(v.dtype, np.number):
            raise MeshError(self.name, f"vertex coordinates must be numbers, got dtype {v.dtype}")
        v = v.astype(np.float64)
        bad = ~np.isfinite(v).all(axis=1)
        if bad.any():
            idx = np.flatnonzero(bad)
            raise MeshError(
                self.name,
                f"{idx.size} vertices have NaN or infinite coordinates (first: vertex {idx[0]})",
            )
        if f.size == 0:
            raise MeshError(
                self.name, f"the mesh has {v.shape[0]} vertices but no faces (a point cloud?)"
            )
        if f.ndim != 2 or f.shape[1] != 3:
            raise MeshError(self.name, f"faces must be triangles of shape (F, 3), got {f.shape}")
        if not np.issubdtype(f.dtype, np.integer):
            if (np.issubdtype(f.dtype, np.floating) and np.isfinite(f).all()
                    and np.all(f == np.round(f))):
                f = f.astype(np.int64)
            else:
                raise MeshError(self.name, f"face indices must be integers, got dtype {f.dtype}")
        f = f.astype(np.int64)
        if f.min() < 0 or f.max() >= v.shape[0]:
            raise MeshError(
                self.name,
                f"faces index vertices out of range (indices {f.min()}..{f.max()}, "
                f"but the mesh has {v.shape[0]} vertices)",
            )
        pdata = {}
        for key, arr in dict(self.point_data).items():
            arr = np.asarray(arr)
            if arr.shape[:1] != (v.shape[0],):
                raise MeshError(
                    self.name,
                    f"point_data[{key!r}] has shape {arr.shape}, expected first dimension {v.shape[0]}",
                )
            pdata[key] = _readonly(arr)
        object.__setattr__(self, "vertices", _readonly(v))
        object.__setattr__(self, "faces", _readonly(f))
        object.__setattr__(self, "point_data", MappingProxyType(pdata))

    # ------------------------------------------------------------------ sizes
    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    # ------------------------------------------------------------ geometry
    @cached_property
    def face_areas(self) -> np.ndarray:
        """(F,) triangle areas."""
        return _readonly(geo.face_areas(self.vertices, self.faces))

    @cached_property
    def area(self) -> float:
        """Total surface area (squared mesh units)."""
        return float(self.face_areas.sum())

    @cached_property
    def face_normals(self) -> np.ndarray:
        """(F, 3) unit face normals (zero for degenerate faces)."""
        return _readonly(geo.face_normals(self.vertices, self.faces))

    @cached_property
    def vertex_normals(self) -> np.ndarray:
        """(V, 3) area-weighted unit vertex normals."""
        return _readonly(geo.vertex_normals(self.vertices, self.faces))

    @cached_property
    def edges(self) -> np.ndarray:
        """(E, 2) undirected edges, each once as a sorted pair."""
        return _readonly(geo.unique_edges(self.faces))

    @cached_property
    def is_watertight(self) -> bool:
        """Closed, edge-manifold and consistently oriented (so the volume is defined)."""
        return geo.is_watertight(self.faces)

    @cached_property
    def signed_volume(self) -> float:
        """Signed enclosed volume (cubic mesh units); positive for outward normals."""
        if not self.is_watertight:
            raise OpenMeshError(
                self.name,
                "the enclosed volume is undefined because the surface is not watertight "
                "(groom it with --watertight first)",
            )
        return geo.signed_volume(self.vertices, self.faces)

    @property
    def volume(self) -> float:
        """Enclosed volume (cubic mesh units; mm^3 for meshes in mm). Raises for open meshes."""
        return abs(self.signed_volume)

    @cached_property
    def euler_characteristic(self) -> int:
        """V - E + F (2 for a closed genus-0 surface)."""
        return geo.euler_characteristic(self.n_vertices, self.faces)

    @cached_property
    def component_labels(self) -> np.ndarray:
        """(V,) connected-component index of each vertex."""
        return _readonly(geo.component_labels(self.faces, self.n_vertices))

    @cached_property
    def n_components(self) -> int:
        """Number of connected components among the vertices used by faces."""
        return int(np.unique(self.component_labels[np.unique(self.faces)]).size)

    @cached_property
    def bounds(self) -> np.ndarray:
        """(2, 3) axis-aligned bounding box: [min, max]."""
        return _readonly(np.stack([self.vertices.min(axis=0), self.vertices.max(axis=0)]))

    @property
    def extent(self) -> np.ndarray:
        """(3,) bounding-box side lengths."""
        return self.bounds[1] - self.bounds[0]

    @cached_property
    def centroid(self) -> np.ndarray:
        """(3,) area-weighted centroid of the surface."""
        return _readonly(geo.area_weighted_centroid(self.vertices, self.faces))

    # ---------------------------------------------------------- conversions
    def with_vertices(self, vertices: np.ndarray) -> "Mesh":
        """A new mesh with the same faces, name and point data and new vertex positions."""
        return Mesh(vertices, self.faces, name=self.name, point_data=self.point_data)

    def transformed(self, matrix: np.ndarray) -> "Mesh":
        """A new mesh with a 4x4 homogeneous transform applied to the vertices.

        A transform with negative determinant also flips the faces so normals stay outward.
        Point data is copied unchanged (vector-valued arrays such as normals are not rotated).
        """
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (4, 4) or not np.isfinite(m).all():
            raise MeshError(self.name, f"the transform must be a finite (4, 4) matrix, got {m.shape}")
        det = np.linalg.det(m[:3, :3])
        if abs(det) <= SINGULAR_EPS:
            raise MeshError(self.name, "the transform is singular (it would flatten the mesh)")
        v = self.vertices @ m[:3, :3].T + m[:3, 3]
        faces = self.faces if det > 0 else self.faces[:, ::-1]
        return Mesh(v, faces, name=self.name, point_data=self.point_data)

    def to_trimesh(self):
        """A `trimesh.Trimesh` copy (no processing, so vertex order is kept)."""
        import trimesh

        return trimesh.Trimesh(
            vertices=np.array(self.vertices), faces=np.array(self.faces), process=False
        )

    def to_pyvista(self):
        """A `pyvista.PolyData` copy with the point data as point arrays (vertex order kept).
        pyvista is optional: without it this raises `ShapeAtlasError` saying how to install it."""
        try:
            import pyvista
        except ImportError:
            raise ShapeAtlasError("Mesh.to_pyvista needs pyvista, which is not installed: "
                                  "pip install pyvista") from None
        cells = np.hstack([np.full((self.n_faces, 1), 3, dtype=np.int64), self.faces]).ravel()
        poly = pyvista.PolyData(np.array(self.vertices), cells)
        for key, arr in self.point_data.items():
            poly.point_data[key] = np.array(arr)
        return poly

    def __repr__(self) -> str:
        return f"Mesh(name={self.name!r}, n_vertices={self.n_vertices}, n_faces={self.n_faces})"

    def check_area(self) -> None:
        """Raise `MeshError` if the surface has no area (all faces degenerate)."""
        if self.area <= ZERO_AREA_EPS:
            raise MeshError(self.name, "the surface has zero area (all faces are degenerate)")


# ------------------------------------------------------------------ meshes of other libraries
def _foreign_name(obj: Any) -> str | None:
    """The name an object of another library carries, if any (trimesh keeps the file it was
    loaded from in `metadata`)."""
    meta = getattr(obj, "metadata", None)
    if isinstance(meta, Mapping):
        for key in ("file_name", "name"):
            if isinstance(meta.get(key), str) and meta[key]:
                return meta[key]
    return None


def _vertex_arrays(arrays: Any, n_vertices: int) -> dict[str, np.ndarray]:
    """The numeric per-vertex arrays of a mapping (trimesh's `vertex_attributes`, pyvista's
    `point_data`); others are left out."""
    out = {}
    if arrays is None:
        return out
    try:
        items = list(arrays.items())
    except (AttributeError, TypeError, KeyError):
        return out
    for key, arr in items:
        a = np.asarray(arr)
        if isinstance(key, str) and a.shape[:1] == (n_vertices,) and np.issubdtype(a.dtype,
                                                                                 np.number):
            out[key] = a
    return out


def _vtk_triangles(cells: Any, name: str) -> np.ndarray:
    """(F, 3) triangles from a flat VTK cell array `[3, i, j, k, 3, ...]`; any other cell
    (a quad, a polygon) is refused."""
    c = np.asarray(cells).ravel()
    if c.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    if not np.issubdtype(c.dtype, np.integer):
        raise MeshError(name, f"the VTK face array must hold integers, got dtype {c.dtype}")
    if c.size % 4 == 0 and np.all(c[::4] == 3):
        return c.reshape(-1, 4)[:, 1:].astype(np.int64)
    i = 0
    while i < c.size:  # find the first cell that is not a triangle, to name it
        if c[i] != 3:
            break
        i += 4
    size = int(c[i]) if i < c.size else -1
    what = f"a cell of {size} points" if size > 0 else "a malformed face array"
    raise MeshError(name, f"only triangle meshes are accepted, but the pyvista mesh has {what}: "
                    "triangulate it first (mesh.triangulate())")


def as_mesh(obj: Any, *, name: str | None = None) -> Mesh:
    """A `Mesh` from a `Mesh` (returned as is unless `name` renames it), a `trimesh.Trimesh`
    or anything with `vertices` (V, 3) and `faces` (F, 3), or a `pyvista.PolyData` or anything
    with `points` (V, 3) and `faces`, a flat VTK cell array `[3, i, j, k, 3, ...]` of triangles
    only. Numeric per-vertex arrays (trimesh's `vertex_attributes`, pyvista's `point_data`)
    become `point_data`. Neither library is imported.

    name: the mesh's name in error messages and results; default: the name the object carries
    (trimesh's `metadata["file_name"]`), else "mesh".
    Raises `MeshError` (invalid arrays, non-triangle cells) or `ShapeAtlasError` (not a mesh).
    """
    if isinstance(obj, Mesh):
        if name is None or name == obj.name:
            return obj
        return Mesh(obj.vertices, obj.faces, name=name, point_data=obj.point_data)
    if isinstance(obj, (str, Path)):
        raise ShapeAtlasError(f"expected a mesh, got the path {str(obj)!r}: read it with "
                              "shapeatlas.read_mesh first")
    label = name or _foreign_name(obj) or "mesh"
    if hasattr(obj, "vertices") and hasattr(obj, "faces"):  # trimesh
        vertices = np.asarray(obj.vertices)
        faces = np.asarray(obj.faces)
        arrays = getattr(obj, "vertex_attributes", None)
    elif hasattr(obj, "points") and hasattr(obj, "faces"):  # pyvista
        if int(getattr(obj, "n_strips", 0) or 0):
            raise MeshError(label, "only triangle meshes are accepted, but the pyvista mesh "
                            "has triangle strips: triangulate it first (mesh.triangulate())")
        vertices = np.asarray(obj.points)
        faces = _vtk_triangles(obj.faces, label)
        arrays = getattr(obj, "point_data", None)
    else:
        raise ShapeAtlasError(
            f"expected a mesh (a shapeatlas Mesh, a trimesh.Trimesh or a pyvista.PolyData: an "
            f"object with vertices and faces, or points and faces), got {type(obj).__name__}")
    n = vertices.shape[0] if vertices.ndim == 2 else -1
    return Mesh(vertices, faces, name=label, point_data=_vertex_arrays(arrays, n))


class MeshSequence(Sequence[Mesh]):
    """A cohort read one mesh at a time (a groomed folder's files, a fit's prepared shapes),
    so that a cohort of thousands never sits in memory at once: `seq[i]` reads the i-th mesh
    each time it is asked for. Subclasses give `__len__`, `names` (each mesh's name, known
    without reading it) and `_read(i)`."""

    names: Sequence[str]

    def __len__(self) -> int:
        return len(self.names)

    def _read(self, i: int) -> Mesh:
        raise NotImplementedError

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._read(j) for j in range(len(self))[i]]
        n = len(self)
        j = operator.index(i)
        if not -n <= j < n:
            raise IndexError(f"mesh {i} of a cohort of {n}")
        return self._read(j % n)


def as_meshes(objs: Iterable[Any], *, lazy: bool = False) -> list[Mesh] | MeshSequence:
    """`as_mesh` of each item of a list; an item without a name of its own is called
    `mesh_000`, `mesh_001`... by its place. One mesh instead of a list is refused (pass
    `[mesh]`). lazy: a `MeshSequence` is returned as it is, to be read one mesh at a time
    (else it is read into a list)."""
    if lazy and isinstance(objs, MeshSequence):
        return objs
    if isinstance(objs, Mesh) or hasattr(objs, "faces"):
        raise ShapeAtlasError(f"expected a list of meshes, got one {type(objs).__name__}: "
                              "pass [mesh]")
    if isinstance(objs, (str, Path)):
        raise ShapeAtlasError(f"expected a list of meshes, got the path {str(objs)!r}: read "
                              "the files with shapeatlas.read_mesh first")
    out = []
    for i, obj in enumerate(objs):
        own = obj.name if isinstance(obj, Mesh) else _foreign_name(obj)
        out.append(as_mesh(obj, name=None if own else f"mesh_{i:03d}"))
    return out
