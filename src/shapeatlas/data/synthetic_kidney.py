"""Synthetic kidney cohorts with exact ground truth: a second organ for the correspondence benches.

The LV cohort (`synthetic_lv`) is the only other organ with ground truth, and its feature
directions (apex shift, basal tilt) are jittered about the long axis on purpose, which leaves the
true twist of each shape only weakly fixed by its geometry. A kidney has a different topology of
landmarks: a bean whose concave medial side carries the hilum, with one pole fuller than the
other. Every shape is the image of the unit sphere under an analytic map `kidney_surface`, so
points of two shapes with the same domain coordinate correspond; the truth files use the same
layout as the LV cohort's, and `shapeatlas.metrics.correspondence` scores both.

The map, for a domain point `u` (unit vector):

1. a triaxial ellipsoid `(a u_x, b s u_y, c s u_z)`, `a` half the length along x, with the
   cross-section scaled by `s = 1 + pole_asymmetry * u_x` (the upper pole, +x, is fuller);
2. displaced along the normal of the plain ellipsoid `(a, b, c)` by the hilum, a Gaussian dent
   of depth `hilum_depth_mm` centred at the domain point (0, 1, 0) (the medial side), and by
   random bumps;
3. bent in the xy plane: `y += bend_mm * (x / a)**2`, so the poles turn medially (+y) and the
   medial side is concave.

The hilum, the pole asymmetry and the bend sit at fixed domain positions (no jitter), so the
truth is fixed by the geometry up to what the random bumps and the triangulation blur.
Units: millimetres for lengths, millilitres for volumes. Each file is placed in a random rigid
pose (`pose`: domain frame -> file frame), as in the LV cohort.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
from scipy.spatial import ConvexHull

from shapeatlas.data.surface_sampling import area_candidates, farthest_points
from shapeatlas.data.synthetic_lv import random_pose
from shapeatlas.data.truth_files import (
    ShapeTruth,
    cohort_vertex_range,
    read_cohort_truth,
    write_cohort_index,
    write_shape_truth,
)
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh import geometry as geo
from shapeatlas.outputs import staged_output

log = logging.getLogger(__name__)

#: Name written into truth.json and checked by `load_kidney_truth`.
GENERATOR = "shapeatlas.data.synthetic_kidney"
#: Version of the generator; bump it whenever the same seed would give different shapes.
GENERATOR_VERSION = "1"
#: Domain point at the centre of the hilum (the medial side).
HILUM_DIRECTION = (0.0, 1.0, 0.0)
#: Ranges drawn for each shape (adult kidneys: about 10-13 cm long, 5-6.5 cm wide, 3-4.5 cm
#: thick, 120-220 mL).
LENGTH_RANGE_MM = (100.0, 130.0)
WIDTH_RATIO_RANGE = (0.45, 0.55)
THICKNESS_RATIO_RANGE = (0.28, 0.38)
POLE_ASYMMETRY_RANGE = (0.05, 0.2)
BEND_RANGE_MM = (4.0, 12.0)
HILUM_DEPTH_RANGE_MM = (5.0, 10.0)
HILUM_WIDTH_RANGE = (0.35, 0.5)
BUMPS_RANGE = (0, 3)
BUMP_AMPLITUDE_MAX_MM = 2.5
BUMP_WIDTH_RANGE = (0.2, 0.4)
#: Fewest vertices `triangulate_kidney` accepts.
MIN_VERTICES = 100
#: Candidate points drawn per output vertex before farthest-point sampling.
CANDIDATE_OVERSAMPLING = 8
#: Icosphere subdivisions of the grid candidates are drawn from, and of the two volume grids.
CANDIDATE_GRID_LEVEL = 4
VOLUME_GRID_LEVELS = (5, 6)
#: Largest accepted deviation of a domain point's norm from 1.
DOMAIN_NORM_TOL = 1e-6

ML_PER_MM3 = 1e-3


@dataclass(frozen=True, kw_only=True)
class KidneyParams:
    """Shape parameters of one synthetic kidney (lengths in mm).

    length_mm: pole-to-pole length of the ellipsoid before bending (2a).
    width_ratio, thickness_ratio: b / a and c / a (y and z semi-axes over the x semi-axis).
    pole_asymmetry: the cross-section is scaled by 1 + pole_asymmetry * u_x.
    bend_mm: medial (+y) displacement of the poles.
    hilum_depth_mm, hilum_width: depth of the hilar dent and its Gaussian width (chord length
        on the unit domain sphere).
    bump_centers: (nb, 3) unit domain vectors; bump_amplitudes_mm: (nb,) signed normal
        displacements (positive outward); bump_widths: (nb,) Gaussian widths (chord lengths).
    """

    length_mm: float
    width_ratio: float
    thickness_ratio: float
    pole_asymmetry: float = 0.0
    bend_mm: float = 0.0
    hilum_depth_mm: float = 0.0
    hilum_width: float = 0.4
    bump_centers: tuple[tuple[float, float, float], ...] = ()
    bump_amplitudes_mm: tuple[float, ...] = ()
    bump_widths: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for key in ("length_mm", "width_ratio", "thickness_ratio", "pole_asymmetry", "bend_mm",
                    "hilum_depth_mm", "hilum_width"):
            object.__setattr__(self, key, float(getattr(self, key)))
        for key in ("bump_amplitudes_mm", "bump_widths"):
            object.__setattr__(self, key, tuple(float(x) for x in getattr(self, key)))
        object.__setattr__(self, "bump_centers",
                           tuple(tuple(float(x) for x in c) for c in self.bump_centers))
        values = [self.length_mm, self.width_ratio, self.thickness_ratio, self.pole_asymmetry,
                  self.bend_mm, self.hilum_depth_mm, self.hilum_width, *self.bump_amplitudes_mm,
                  *self.bump_widths, *sum(self.bump_centers, ())]
        if not np.isfinite(values).all():
            raise ValueError(f"KidneyParams: every parameter must be finite, got {self}")
        if not (self.length_mm > 0 and 0 < self.width_ratio <= 1
                and 0 < self.thickness_ratio <= 1):
            raise ValueError("KidneyParams needs length_mm > 0 and width/thickness ratios in "
                             f"(0, 1], got {self.length_mm}, {self.width_ratio}, "
                             f"{self.thickness_ratio}")
        if not 0 <= self.pole_asymmetry < 0.5:
            raise ValueError(f"KidneyParams: pole_asymmetry must be in [0, 0.5), got "
                             f"{self.pole_asymmetry}")
        if not 0 <= self.hilum_depth_mm < 0.5 * self.width_ratio * self.length_mm:
            raise ValueError(f"KidneyParams: hilum_depth_mm must be in [0, b), got "
                             f"{self.hilum_depth_mm}")
        nb = len(self.bump_centers)
        if any(len(c) != 3 for c in self.bump_centers):
            raise ValueError("KidneyParams: each bump centre must be a 3-vector")
        if not len(self.bump_amplitudes_mm) == nb == len(self.bump_widths):
            raise ValueError("KidneyParams: bump_centers, bump_amplitudes_mm and bump_widths "
                             "must have the same length")
        if self.hilum_width <= 0 or (nb and min(self.bump_widths) <= 0):
            raise ValueError("KidneyParams: the hilum's and the bumps' widths must be positive")

    @property
    def semi_axes_mm(self) -> tuple[float, float, float]:
        """(a, b, c): the ellipsoid's semi-axes along x, y, z."""
        a = 0.5 * self.length_mm
        return a, self.width_ratio * a, self.thickness_ratio * a

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; `KidneyParams.from_dict` inverts it exactly."""
        d = {k: float(getattr(self, k)) for k in (
            "length_mm", "width_ratio", "thickness_ratio", "pole_asymmetry", "bend_mm",
            "hilum_depth_mm", "hilum_width")}
        d["bumps"] = [{"center": list(c), "amplitude_mm": a, "width": w} for c, a, w in
                      zip(self.bump_centers, self.bump_amplitudes_mm, self.bump_widths)]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "KidneyParams":
        bumps = d.get("bumps", [])
        return cls(**{k: d[k] for k in d if k != "bumps"},
                   bump_centers=tuple(tuple(b["center"]) for b in bumps),
                   bump_amplitudes_mm=tuple(b["amplitude_mm"] for b in bumps),
                   bump_widths=tuple(b["width"] for b in bumps))


def _check_domain_points(u: np.ndarray) -> np.ndarray:
    u = np.asarray(u, dtype=np.float64)
    if u.ndim != 2 or u.shape[1] != 3 or not np.isfinite(u).all():
        raise ValueError(f"domain_points must be a finite (K, 3) array, got shape {u.shape}")
    dev = np.abs(np.linalg.norm(u, axis=1) - 1.0)
    if dev.size and dev.max() > DOMAIN_NORM_TOL:
        raise ValueError(f"domain_points must be unit vectors; the worst norm is off by "
                         f"{dev.max():.3g} (normalise them first)")
    return u


def kidney_surface(params: KidneyParams | Mapping[str, Any], *,
                   domain_points: np.ndarray) -> np.ndarray:
    """Evaluate the shape map at domain points. (K, 3) unit vectors -> (K, 3) mm, domain frame."""
    p = params if isinstance(params, KidneyParams) else KidneyParams.from_dict(params)
    u = _check_domain_points(domain_points)
    a, b, c = p.semi_axes_mm
    s = 1.0 + p.pole_asymmetry * u[:, 0]
    pts = np.stack([a * u[:, 0], b * s * u[:, 1], c * s * u[:, 2]], axis=1)
    normal = u / np.array([a, b, c])  # gradient of the unscaled ellipsoid's implicit function
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    hilum = np.asarray(HILUM_DIRECTION)
    disp = -p.hilum_depth_mm * np.exp(-((u - hilum) ** 2).sum(axis=1) / (2 * p.hilum_width**2))
    if p.bump_centers:
        d2 = ((u[:, None, :] - np.asarray(p.bump_centers)[None]) ** 2).sum(axis=2)
        disp += (np.asarray(p.bump_amplitudes_mm)
                 * np.exp(-d2 / (2 * np.asarray(p.bump_widths) ** 2))).sum(axis=1)
    pts += disp[:, None] * normal
    pts[:, 1] += p.bend_mm * (pts[:, 0] / a) ** 2
    return pts


@functools.lru_cache(maxsize=4)
def _icosphere(level: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere (vertices (V, 3), outward faces (F, 3)); cached, read-only."""
    import trimesh

    ico = trimesh.creation.icosphere(subdivisions=level)
    u = np.asarray(ico.vertices, dtype=np.float64)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    f = np.asarray(ico.faces, dtype=np.int64)
    u.setflags(write=False)
    f.setflags(write=False)
    return u, f


def kidney_volume(params: KidneyParams | Mapping[str, Any]) -> float:
    """Enclosed volume (mm^3): two inscribed icosphere meshes (10k, 41k vertices),
    Richardson-extrapolated (the inscribed error falls as the square of the spacing)."""
    vols = [geo.signed_volume(kidney_surface(params, domain_points=u), f)
            for u, f in map(_icosphere, VOLUME_GRID_LEVELS)]
    return float((4.0 * vols[1] - vols[0]) / 3.0)


def kidney_long_axis(params: KidneyParams | Mapping[str, Any]) -> float:
    """Long-axis length (mm): distance between the two poles, domain points (+-1, 0, 0)."""
    poles = kidney_surface(params, domain_points=np.array([[1.0, 0, 0], [-1.0, 0, 0]]))
    return float(np.linalg.norm(poles[0] - poles[1]))


def sample_kidney_params(rng: np.random.Generator) -> KidneyParams:
    """Draw one kidney's parameters, each uniform in its range above."""
    nb = int(rng.integers(BUMPS_RANGE[0], BUMPS_RANGE[1] + 1))
    centers = rng.normal(size=(nb, 3))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    return KidneyParams(
        length_mm=rng.uniform(*LENGTH_RANGE_MM), width_ratio=rng.uniform(*WIDTH_RATIO_RANGE),
        thickness_ratio=rng.uniform(*THICKNESS_RATIO_RANGE),
        pole_asymmetry=rng.uniform(*POLE_ASYMMETRY_RANGE), bend_mm=rng.uniform(*BEND_RANGE_MM),
        hilum_depth_mm=rng.uniform(*HILUM_DEPTH_RANGE_MM),
        hilum_width=rng.uniform(*HILUM_WIDTH_RANGE),
        bump_centers=tuple(map(tuple, centers)),
        bump_amplitudes_mm=tuple(rng.uniform(-BUMP_AMPLITUDE_MAX_MM, BUMP_AMPLITUDE_MAX_MM, nb)),
        bump_widths=tuple(rng.uniform(*BUMP_WIDTH_RANGE, nb)),
    )


@dataclass(frozen=True, kw_only=True)
class KidneyTriangulation:
    """One triangulation of a kidney surface, in the domain frame.

    domain: (V, 3) unit domain coordinates; vertices: (V, 3) mm, `kidney_surface` at them;
    faces: (F, 3) outward triangles, also a triangulation of the domain sphere.
    """

    domain: np.ndarray
    vertices: np.ndarray
    faces: np.ndarray


def triangulate_kidney(params: KidneyParams, *, n_vertices: int,
                       rng: np.random.Generator) -> KidneyTriangulation:
    """Triangulate the surface with exactly `n_vertices` vertices evenly spaced in 3D.

    Vertices: farthest-point sampling (in 3D) of candidates drawn uniformly by area. Faces: the
    convex hull of their domain points (the spherical Delaunay triangulation), mapped to the
    surface; the random candidates make the connectivity differ from draw to draw.
    """
    if n_vertices < MIN_VERTICES:
        raise ValueError(f"n_vertices must be at least {MIN_VERTICES}, got {n_vertices}")
    grid_u, grid_f = _icosphere(CANDIDATE_GRID_LEVEL)
    areas = geo.face_areas(kidney_surface(params, domain_points=grid_u), grid_f)
    cand_u = area_candidates(grid_u, grid_f, areas, CANDIDATE_OVERSAMPLING * n_vertices, rng=rng)
    cand_x = kidney_surface(params, domain_points=cand_u)
    picked = farthest_points(cand_x, cand_x[:1], n_vertices)
    u, x = cand_u[picked], cand_x[picked]
    faces = ConvexHull(u).simplices.astype(np.int64)
    det = np.einsum("ij,ij->i", u[faces[:, 0]], np.cross(u[faces[:, 1]], u[faces[:, 2]]))
    faces = np.where((det < 0)[:, None], faces[:, ::-1], faces)
    if not (geo.is_watertight(faces) and geo.euler_characteristic(len(u), faces) == 2
            and len(np.unique(faces)) == len(u) and geo.signed_volume(x, faces) > 0):
        raise ShapeAtlasError("synthetic kidney: triangulation is not a closed outward sphere "
                              "(this is a bug in shapeatlas.data.synthetic_kidney)")
    return KidneyTriangulation(domain=u, vertices=x, faces=faces)


def write_kidney_cohort(
    out_dir: str | Path,
    *,
    n: int = 50,
    seed: int = 0,
    n_vertices: tuple[int, int] = (1000, 4000),
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write a synthetic kidney cohort with exact ground truth; return the mesh paths.

    Writes `out_dir/kidney_000.ply`, ... (file frame, mm), `out_dir/truth/<name>.npz` (`domain`,
    `vertices_domain`, `faces`, `region` (all 0: one region)) and, last, `out_dir/truth.json`,
    the same layout as `synthetic_lv.write_lv_cohort`. The same seed gives the same bytes.
    overwrite: replace a non-empty `out_dir` whole (else refused); the folder is built beside
    it and moved into place at the end (`shapeatlas.outputs`).

    Examples
    --------
    >>> paths = write_kidney_cohort("kidneys", n=3, seed=1)          # doctest: +SKIP
    >>> load_kidney_truth("kidneys")["kidney_000"].long_axis_mm      # doctest: +SKIP
    """
    lo, hi = cohort_vertex_range(n, n_vertices, MIN_VERTICES)

    with staged_output(out_dir, verb="synth kidney", overwrite=overwrite) as staging:
        paths = _write_kidney_cohort(staging.path, n=n, seed=seed, lo=lo, hi=hi,
                                     progress=progress)
    return [Path(out_dir) / p.name for p in paths]


def _write_kidney_cohort(out_dir: Path, *, n: int, seed: int, lo: int, hi: int,
                         progress: Callable[[int, int], None] | None) -> list[Path]:
    """`write_kidney_cohort`'s work, in the staging folder `out_dir`."""
    seq = np.random.SeedSequence(seed)
    counts = np.random.default_rng(seq.spawn(1)[0]).choice(
        np.arange(lo, hi + 1), size=n, replace=n > hi - lo + 1)
    records, paths = {}, []
    for i, (count, shape_seed) in enumerate(zip(counts, seq.spawn(n))):
        name = f"kidney_{i:03d}"
        rng = np.random.default_rng(shape_seed)
        params = sample_kidney_params(rng)
        tri = triangulate_kidney(params, n_vertices=int(count), rng=rng)
        pose = random_pose(rng)
        path, records[name] = write_shape_truth(
            out_dir, name, domain=tri.domain, vertices_domain=tri.vertices, faces=tri.faces,
            region=np.zeros(len(tri.domain), dtype=np.int8), pose=pose,
            head={"volume_ml": kidney_volume(params) * ML_PER_MM3,
                  "long_axis_mm": kidney_long_axis(params)},
            params=params.to_dict())
        paths.append(path)
        if progress is not None:
            progress(i + 1, n)
    write_cohort_index(out_dir, head={
        "generator": GENERATOR, "generator_version": GENERATOR_VERSION, "seed": seed, "n": n,
        "n_vertices_range": [lo, hi]}, tail={
        "domain": "unit sphere; evaluate with shapeatlas.data.synthetic_kidney.kidney_surface"
                  "(params, domain_points=domain)"}, shapes=records)
    log.info("wrote %d synthetic kidneys", n)
    return paths


@dataclass(frozen=True, kw_only=True)
class KidneyTruth(ShapeTruth):
    """Ground truth of one kidney of a cohort: the `ShapeTruth` fields (region all 0) and the
    shape's `KidneyParams`."""

    params: KidneyParams
    LONG_AXIS: ClassVar[int] = 0  # the poles are the domain points (+-1, 0, 0)

    def surface(self, domain_points: np.ndarray) -> np.ndarray:
        return kidney_surface(self.params, domain_points=domain_points)


def load_kidney_truth(directory: str | Path) -> dict[str, KidneyTruth]:
    """Read a kidney cohort's ground truth: shape name -> `KidneyTruth`, in name order."""
    return read_cohort_truth(
        directory, generator=GENERATOR, writer="write_kidney_cohort", organ="kidney",
        build=lambda fields, rec: KidneyTruth(
            **fields, params=KidneyParams.from_dict(rec["params"])))
