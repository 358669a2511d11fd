"""Turning groomed meshes into network inputs: cohort normalisation, graphs, the initial atlas.

All per-mesh work (normals, graph, area weights) is done once here, outside the training loop.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree

from shapeatlas.errors import MeshError, ShapeAtlasError
from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.align import align_to_reference, solid_frame, symmetric_icp
from shapeatlas.mesh.cap import turn_cap
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.io import read_mesh
from shapeatlas.mesh.remesh import decimate, decimate_even
from shapeatlas.nn.graph import mesh_graph, node_features
from shapeatlas.nn.rasm import AtlasGraph, GraphInput

log = logging.getLogger(__name__)

#: Vertices per shape used to rank shapes for the medoid (a subsample keeps it fast).
MEDOID_POINTS = 600
#: Up to this many shapes the medoid compares every pair; a larger cohort is screened first
#: (`medoid_index`), since all pairs cost about a millisecond each: 10 minutes for 1,000 shapes.
MEDOID_ALL_PAIRS_MAX = 200
#: Screening of a larger cohort: every shape against this many evenly spaced shapes, with
#: `MEDOID_SCREEN_POINTS` vertices each; the `MEDOID_CANDIDATES` best are then ranked exactly.
MEDOID_PANEL = 64
MEDOID_SCREEN_POINTS = 200
MEDOID_CANDIDATES = 16
#: A shape with fewer vertices than atlas_vertices / this is too coarse to match the atlas.
MAX_COARSENESS = 10
#: A shape with more vertices than this is refused (decimate it with `groom --target-vertices`).
MAX_VERTICES = 200_000


@dataclass(frozen=True)
class Normalisation:
    """Map to the network's units: x_norm = (x_mm - center) @ inv(linear).T.

    center: (3,) mm; scale: mm, an RMS radius (the cohort's mean, or one shape's own);
    matrix: (3, 3) the linear part of the map back to mm (normalised -> mm), or None for the
    isotropic `scale * I`. A whitening `matrix` maps each shape's own covariance to I / 3 (about
    unit RMS radius), so shapes of different proportions are matched proportionally.
    """

    center: np.ndarray
    scale: float
    matrix: np.ndarray | None = None

    @staticmethod
    def fit(meshes: Sequence[Mesh], *, whiten: bool = False) -> "Normalisation":
        """The cohort's map: mean centre and RMS radius (and mean un-whitening matrix)."""
        centres = np.array([m.centroid for m in meshes])
        radii = [_rms_radius(m) for m in meshes]
        matrix = (np.mean([_moments(m)[1] for m in meshes], axis=0) if whiten else None)
        return Normalisation(center=centres.mean(axis=0), scale=float(np.mean(radii)),
                             matrix=matrix)

    @staticmethod
    def of_shape(mesh: Mesh, *, whiten: bool = False) -> "Normalisation":
        """One shape's own centroid and RMS radius (size-invariant coordinates), or with
        `whiten` its own centroid and covariance (invariant to anisotropic scaling too)."""
        if not whiten:
            return Normalisation(center=np.asarray(mesh.centroid), scale=_rms_radius(mesh))
        center, matrix = _moments(mesh)
        return Normalisation(center=center, scale=_rms_radius(mesh), matrix=matrix)

    @property
    def linear(self) -> np.ndarray:
        """(3, 3) normalised -> mm linear part."""
        return self.scale * np.eye(3) if self.matrix is None else np.asarray(self.matrix)

    def to_model(self, points: np.ndarray) -> np.ndarray:
        if self.matrix is None:
            return (np.asarray(points) - self.center) / self.scale
        return np.linalg.solve(self.linear, (np.asarray(points) - self.center).T).T

    def to_mm(self, points: np.ndarray) -> np.ndarray:
        if self.matrix is None:
            return np.asarray(points) * self.scale + self.center
        return np.asarray(points) @ self.linear.T + self.center

    def to_dict(self) -> dict:
        d = {"center": np.asarray(self.center).tolist(), "scale": float(self.scale)}
        if self.matrix is not None:
            d["matrix"] = np.asarray(self.matrix).tolist()
        return d

    @staticmethod
    def from_dict(d: dict, *, source: str = "normalisation") -> "Normalisation":
        matrix = d.get("matrix")
        if matrix is not None:
            matrix = np.asarray(matrix, dtype=np.float64)
            if matrix.shape != (3, 3) or not np.isfinite(matrix).all() \
                    or np.linalg.det(matrix) <= 0:
                raise ShapeAtlasError(f"{source}: the normalisation matrix must be a finite 3x3 "
                                      "matrix with a positive determinant")
        return Normalisation(center=np.asarray(d["center"], dtype=np.float64),
                             scale=float(d["scale"]), matrix=matrix)


def _rms_radius(mesh: Mesh) -> float:
    w = vertex_areas(mesh)
    c = (mesh.vertices * w[:, None]).sum(0) / w.sum()
    return float(np.sqrt((np.square(mesh.vertices - c).sum(1) * w).sum() / w.sum()))


def _moments(mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted centroid (3,) and un-whitening matrix (3, 3) of a surface.

    The matrix is sqrt(3) * C^(1/2) for the surface's covariance C, so its inverse maps the
    shape to covariance I / 3: about unit RMS radius, like the isotropic normalisation.
    """
    center, axes, moments = solid_frame(mesh)
    return center, np.sqrt(3.0) * (axes * np.sqrt(moments)) @ axes.T


def vertex_areas(mesh: Mesh) -> np.ndarray:
    """A third of the area of each incident triangle, per vertex. -> (V,)"""
    a = np.zeros(mesh.n_vertices)
    for k in range(3):
        np.add.at(a, mesh.faces[:, k], mesh.face_areas / 3.0)
    return a


def check_mesh_for_atlas(mesh: Mesh, *, atlas_vertices: int) -> None:
    """Refuse meshes the atlas cannot be matched to, with a message naming the mesh."""
    if mesh.n_vertices * MAX_COARSENESS < atlas_vertices:
        raise MeshError(mesh.name, f"only {mesh.n_vertices} vertices: too coarse for an atlas of "
                        f"{atlas_vertices} vertices (remesh it finer, or fit a smaller atlas)")
    if mesh.n_vertices > MAX_VERTICES:
        raise MeshError(mesh.name, f"{mesh.n_vertices} vertices is more than {MAX_VERTICES}: "
                        "decimate it first (shapeatlas groom --target-vertices N)")
    if mesh.n_components > 1:
        raise MeshError(mesh.name, f"{mesh.n_components} separate components: groom it first "
                        "(cleaning keeps the largest)")


def graph_input(mesh: Mesh, norm: Normalisation, *,
                features: Literal["spatial", "hybrid"], device: torch.device,
                dtype: torch.dtype = torch.float32) -> GraphInput:
    """The network's view of one mesh (normalised coordinates, features, graph, area weights)."""
    pts = norm.to_model(mesh.vertices)
    if not np.isfinite(pts).all():
        raise MeshError(mesh.name, "non-finite coordinates after normalisation")
    w = vertex_areas(mesh)
    w = w / w.sum()
    normals = np.array(mesh.vertex_normals)
    if norm.matrix is not None:
        # x_norm = inv(L) x maps normals by inv(L)^-T = L^T (as rows: n @ L).
        normals = normals @ norm.linear
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    p = torch.as_tensor(pts, dtype=dtype, device=device)
    n = torch.tensor(normals, dtype=dtype, device=device)
    return GraphInput(
        name=mesh.name,
        x=node_features(p, n, kind=features),
        points=p,
        edge_index=mesh_graph(p, torch.tensor(np.array(mesh.faces), device=device)),
        weights=torch.as_tensor(w, dtype=dtype, device=device),
    )


def atlas_graph(vertices_mm: np.ndarray, faces: np.ndarray, norm: Normalisation, *,
                features: Literal["spatial", "hybrid"], device: torch.device) -> AtlasGraph:
    """The atlas as network input (its faces give normals and the regulariser structures)."""
    mesh = Mesh(vertices_mm, faces, name="atlas")
    g = graph_input(mesh, norm, features=features, device=device)
    return AtlasGraph.build(g, torch.tensor(np.array(faces), device=device))


def medoid_index(meshes: Sequence[Mesh]) -> int:
    """The shape with the least summed symmetric Chamfer distance to all others (ties: first).

    Uses an evenly strided subsample of `MEDOID_POINTS` vertices per shape. Up to
    `MEDOID_ALL_PAIRS_MAX` shapes every pair is compared; a larger cohort's sums are first
    estimated against `MEDOID_PANEL` evenly spaced shapes at `MEDOID_SCREEN_POINTS` vertices,
    and the `MEDOID_CANDIDATES` best are then summed exactly against every shape (linear in
    the cohort's size instead of quadratic).
    """
    n = len(meshes)
    if n < 2:
        return 0
    pts = [_strided(m, MEDOID_POINTS) for m in meshes]
    trees = [cKDTree(p) for p in pts]
    if n <= MEDOID_ALL_PAIRS_MAX:
        d = np.zeros((n, n))  # d[i, j]: mean distance from shape i's points to shape j
        for i in range(n):
            for j in range(n):
                if i != j:
                    d[i, j] = trees[j].query(pts[i])[0].mean()
        return int(np.argmin((d + d.T).sum(axis=1)))
    coarse = [_strided(m, MEDOID_SCREEN_POINTS) for m in meshes]
    coarse_trees = [cKDTree(p) for p in coarse]
    panel = np.unique(np.linspace(0, n - 1, MEDOID_PANEL).astype(int))
    # (a mean over the panel: a panel shape has one distance fewer, its own)
    screened = [_chamfer_sum(i, panel, coarse, coarse_trees) / (len(panel) - (i in panel))
                for i in range(n)]
    candidates = np.sort(np.argsort(screened, kind="stable")[:MEDOID_CANDIDATES])
    exact = [_chamfer_sum(int(i), range(n), pts, trees) for i in candidates]
    return int(candidates[int(np.argmin(exact))])


def _strided(mesh: Mesh, points: int) -> np.ndarray:
    """An evenly strided subsample of at most `points` of the mesh's vertices. -> (P, 3)"""
    idx = np.linspace(0, mesh.n_vertices - 1, min(points, mesh.n_vertices)).astype(int)
    return np.asarray(mesh.vertices)[idx]


def _chamfer_sum(i: int, others, pts: Sequence[np.ndarray], trees: Sequence[cKDTree]) -> float:
    """Summed symmetric mean nearest-point distance of shape i to the shapes `others`."""
    total = 0.0
    for j in others:
        if j != i:
            total += trees[j].query(pts[i])[0].mean() + trees[i].query(pts[j])[0].mean()
    return total


def check_cohort(meshes: Sequence[Mesh], *, atlas_vertices: int, min_shapes: int = 3) -> None:
    """Refuse a cohort that cannot give an atlas: too few shapes, or a shape that cannot match."""
    if len(meshes) < min_shapes:
        raise ShapeAtlasError(f"a cohort needs at least {min_shapes} shapes to fit an atlas, "
                              f"got {len(meshes)}")
    for m in meshes:
        check_mesh_for_atlas(m, atlas_vertices=atlas_vertices)
        if not geo.is_watertight(np.asarray(m.faces)) and m.euler_characteristic > 2:
            raise MeshError(m.name, "not a surface (Euler characteristic above 2)")


def initial_shape_index(meshes: Sequence[Mesh], *, init: str, seed: int) -> int | None:
    """Which training shape the atlas starts from: init "medoid" (`medoid_index`) or "random"
    (drawn with `seed`); None for init a mesh path (not a training shape)."""
    if init == "medoid":
        return medoid_index(meshes)
    if init == "random":
        return int(np.random.default_rng(seed).integers(len(meshes)))
    return None


def atlas_mesh_of(start: Mesh, *, atlas_vertices: int, even_edges: bool = False) -> Mesh:
    """The initial atlas: `start` remeshed to K vertices. even_edges: QSlim to about K with
    flat parts keeping vertices (`remesh.decimate_even`), instead of a shortest-edge collapse
    to K (which leaves a QSlim-groomed shape's flat cap a few large triangles)."""
    if even_edges:
        return decimate_even(start, target_vertices=atlas_vertices)
    return decimate(start, target_vertices=atlas_vertices, method="uniform")


def initial_atlas(meshes: Sequence[Mesh], *, init: str, seed: int,
                  atlas_vertices: int, even_edges: bool = False) -> tuple[Mesh, Mesh]:
    """The canonical shape an atlas starts from (`initial_shape_index`; init a mesh path: that
    mesh), and its remeshing to K vertices (`atlas_mesh_of`).
    -> (the chosen shape, the K-vertex atlas mesh)
    """
    at = initial_shape_index(meshes, init=init, seed=seed)
    start = meshes[at] if at is not None else read_mesh(init)
    return start, atlas_mesh_of(start, atlas_vertices=atlas_vertices, even_edges=even_edges)


#: A `correspond` input whose size differs from the cohort's by more than this factor is refused.
MAX_SCALE_RATIO = 2.0
#: ...and one whose alignment residual exceeds this many cohort radii is refused.
MAX_ALIGN_RMS = 0.5
#: Threads for the rigid search of one new mesh in `correspond` (its ICP runs are independent
#: and give the same pose on any number; on the 2-core CPU 2 threads took a new 3k-vertex LV's
#: `correspond` from 2.3-3.0 to 1.7-1.9 s, bench/correspond_speed.py).
ALIGN_WORKERS = min(4, os.cpu_count() or 1)
#: The rigid search of a new mesh (`transform_to_atlas`): grooming's, without the starts that
#: pair principal axes whose lengths differ by more than half (`align_to_reference`'s
#: `axis_sd_ratio`): on the
#: two 50-LV cohorts and the 50 kidneys of docs/results.md, aligned from scratch, every
#: pose was the same (to 1e-6) as with all 24 starts, in 23-33% less time. CPD-PCA runs
#: align new shapes with it too (not measured separately).
NEW_SHAPE_AXIS_SD_RATIO = 1.5
#: ...and refines at full resolution only the finalists whose coarse RMS is within this factor
#: of the best's (`align_to_reference`'s `finalist_rms_ratio`; None: all of them). On the same
#: 150 shapes every pose was the same (to 5e-4 mm) in 17-23% less time; on 16 raw livers two
#: moved by 1-2 mm along a flat valley (final RMS within 0.03%); at 1.01 one LV moved 0.3 mm.
NEW_SHAPE_FINALIST_RMS_RATIO: float | None = 1.02


def new_shape_pose(mesh: Mesh, atlas: Mesh, *, cohort_scale: float, cap=None) -> np.ndarray:
    """The pose `correspond` gives a mesh it was not fitted on: the rigid search onto the atlas
    (`transform_to_atlas`), the turn about its flat cap (`turn_cap`), then what a training file
    gets from its groomed pose (`refine_pose_on_atlas`: a local ICP, which the turn moved away
    from its optimum, and the turn again). On the 50 seed-0 synthetic LVs corresponded from
    scratch the last step lowered the ground-truth error from 1.84 to 1.79 mm (docs/results.md). -> (4, 4)"""
    t = transform_to_atlas(mesh, atlas, cohort_scale=cohort_scale)
    t = turn_cap(mesh, t, cap, surface=np.asarray(atlas.vertices, dtype=np.float64))
    return refine_pose_on_atlas(mesh, atlas, t, cap=cap)


def refine_pose_on_atlas(mesh: Mesh, atlas: Mesh, start: np.ndarray, *, cap=None) -> np.ndarray:
    """Local symmetric ICP of `mesh` onto `atlas` from the pose `start` (4, 4), without the
    multi-start search of `transform_to_atlas`: for a training file, whose pose from grooming
    (onto one reference shape) is close, the atlas, a population mean, is the better reference.
    Keeps a similarity pose a similarity. cap: the model's cap outline (`mesh.cap.CapReference`),
    to turn the result about the mesh's flat cap again (`turn_cap`): the ICP moves the turn
    about the long axis, which grooming set from the caps (on the 50 synthetic LVs, from a
    median 0.87 to 1.22 degrees off the truth; turning it back gained 0.1 mm of ground-truth
    error, docs/results.md). -> (4, 4)"""

    start = np.asarray(start, dtype=np.float64)
    scaled = not np.isclose(np.cbrt(np.linalg.det(start[:3, :3])), 1.0, atol=1e-6)
    surface = np.asarray(atlas.vertices, dtype=np.float64)
    m, _, _ = symmetric_icp(np.asarray(mesh.vertices, dtype=np.float64), surface, start,
                            scale=scaled)
    return turn_cap(mesh, m, cap, surface=surface)


def transform_to_atlas(mesh: Mesh, atlas: Mesh, *, cohort_scale: float) -> np.ndarray:
    """Rigid (4, 4) map of a new mesh onto the atlas, refusing meshes that cannot be the organ:
    a size far from the cohort's (`cohort_scale`: mean RMS radius, mm) or a poor fit. The
    search skips starts by `NEW_SHAPE_AXIS_SD_RATIO`."""

    r = _rms_radius(mesh)
    ratio = r / cohort_scale
    if not 1 / MAX_SCALE_RATIO <= ratio <= MAX_SCALE_RATIO:
        raise MeshError(mesh.name, f"its size (RMS radius {r:.3g}) is {ratio:.2g} times the "
                        f"cohort's ({cohort_scale:.3g} mm): wrong units, or another organ?")
    al = align_to_reference(mesh, atlas, workers=ALIGN_WORKERS,
                            axis_sd_ratio=NEW_SHAPE_AXIS_SD_RATIO,
                            finalist_rms_ratio=NEW_SHAPE_FINALIST_RMS_RATIO)
    if al.rms > MAX_ALIGN_RMS * cohort_scale:
        raise MeshError(mesh.name, f"does not resemble the cohort: after rigid alignment it is "
                        f"still {al.rms:.1f} mm RMS from the atlas (another organ, or a very "
                        "different pose/scale?)")
    return al.matrix
