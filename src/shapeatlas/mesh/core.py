"""The `Mesh` container: an immutable triangle mesh with cached derived quantities.

A `Mesh` checks its arrays once when it is built (finite coordinates, integer faces in range) and
raises `MeshError` naming the mesh otherwise, so nothing downstream has to re-check. Derived
quantities are computed on first use by the pure functions in `shapeatlas.mesh.geometry` and
cached on the instance; the arrays themselves are read-only, so the cache can never go stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Mapping

import numpy as np

from shapeatlas.errors import MeshError, OpenMeshError
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

    def __repr__(self) -> str:
        return f"Mesh(name={self.name!r}, n_vertices={self.n_vertices}, n_faces={self.n_faces})"

    def check_area(self) -> None:
        """Raise `MeshError` if the surface has no area (all faces degenerate)."""
        if self.area <= ZERO_AREA_EPS:
            raise MeshError(self.name, "the surface has zero area (all faces are degenerate)")
