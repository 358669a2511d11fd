"""Synthetic left-ventricle (LV) cavity cohorts with exact ground truth.

Every shape is the image of one shared parametric domain, the unit sphere, under an analytic map
`X_params`, so the true correspondence between any two shapes is known: the points of two shapes
with the same domain coordinate correspond.

The domain
----------
A domain point `u` (unit vector) has polar angle `alpha = angle(u, APEX_DIRECTION)` measured from
the apex direction `(0, 0, -1)` and azimuth `phi = atan2(u_y, u_x)`.

- `alpha` in `[0, ALPHA_BASE]` is the wall: a prolate spheroid with long semi-axis `c_mm` (centre
  at the origin, apex at `z = -c_mm`) and short semi-axis `b_mm`, truncated by the basal (mitral)
  plane `z = h_mm`; the spheroidal angle `theta = theta_base * alpha / ALPHA_BASE`.
- `alpha` in `[ALPHA_BASE, pi]` is the flat basal cap, a disc whose radius falls linearly in
  `alpha` from the rim to the cap centre `(0, 0, 1)`.

The wall is then modified, in this order: Gaussian bumps along the spheroid's normal (tapered to
zero at the rim so the cap stays planar), a lateral apex shift weighted by
`((h - z) / (h + c))**2`, and a basal tilt, the shear
`z += (tilt . (x, y)) * ((z + c) / (h + c))**2` that turns the cap into a tilted plane. All
weights use the unmodified spheroid's `z`, so the map stays analytic, and all lengths scale
together: `X_{s*params} = s * X_params`. The apex shift's and the tilt's weights and their first
derivatives vanish where needed (the apex shift at the base, the tilt at the apex), so the cap
stays one plane and the apex stays smooth.

Units: millimetres for lengths, millilitres for volumes. The "domain frame" is the frame of
`X_params`; each cohort file is placed in a random rigid pose (`pose`: domain frame -> file frame).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Mapping

import numpy as np
from scipy.spatial import Delaunay, cKDTree

from shapeatlas.data.surface_sampling import area_candidates, farthest_points
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

#: Version of the generator; bump it whenever the same seed would give different shapes.
GENERATOR_VERSION = "2"
#: Domain polar angle (from the apex) of the wall/cap rim, the mitral annulus; the wall then
#: takes about 85 % of the domain, close to its share of a real LV cavity's area.
ALPHA_BASE = 0.75 * np.pi
#: Domain direction of the apex.
APEX_DIRECTION = (0.0, 0.0, -1.0)
#: Width (radians of `alpha`) over which bumps fade out towards the rim.
BUMP_TAPER_WIDTH = 0.35
#: Largest accepted deviation of a domain point's norm from 1.
DOMAIN_NORM_TOL = 1e-6
#: Rim vertex spacing as a fraction of the target mesh spacing (a finer rim keeps the crease).
RIM_SPACING_FACTOR = 0.9
#: Candidate points closer than this many rim spacings to a rim vertex are dropped, so every
#: triangle touching the rim is well shaped and the rim polygon bounds both halves.
RIM_BAND_FACTOR = 0.7
#: Candidate points drawn per output vertex before farthest-point sampling.
CANDIDATE_OVERSAMPLING = 8
#: Fewest vertices `triangulate_lv` accepts.
MIN_VERTICES = 200
#: Fewest rim vertices.
MIN_RIM_VERTICES = 12
#: Rings per quarter-turn of `alpha` for the reference volume (two grids, Richardson-extrapolated).
VOLUME_RESOLUTION = 48
#: Rings per quarter-turn of the coarse grid from which candidate points are drawn.
CANDIDATE_GRID_RESOLUTION = 16

#: Vertex region codes stored in `region`.
REGION_WALL, REGION_RIM, REGION_CAP = 0, 1, 2

#: Ranges drawn for each phenotype: end-diastolic volume (mL), sphericity (short-axis diameter /
#: long axis of the spheroid part), truncation ratio h/c.
PHENOTYPES = {
    "healthy": {"edv_ml": (90.0, 170.0), "sphericity": (0.50, 0.62)},
    "dilated": {"edv_ml": (170.0, 250.0), "sphericity": (0.66, 0.80)},
}
TRUNCATION_RANGE = (0.25, 0.45)
APEX_SHIFT_MAX_MM = 8.0
TILT_MAX_DEG = 15.0
BUMPS_RANGE = (1, 4)
BUMP_AMPLITUDE_MAX_MM = 3.0
BUMP_WIDTH_RANGE = (0.25, 0.5)
#: Domain polar angles of bump centres: clear of the apex and of the rim's taper.
BUMP_ALPHA_RANGE = (0.25, ALPHA_BASE - 0.45)
TRANSLATION_MAX_MM = 50.0
#: Septal flattening fraction range, and the mean azimuths (with normal jitter) of the apex
#: shift and of the basal-plane tilt.
SEPTAL_FLATTENING_RANGE = (0.12, 0.25)
APEX_SHIFT_AZIMUTH = 0.0
TILT_AZIMUTH = np.pi / 2
DIRECTION_JITTER_RAD = np.radians(20.0)

ML_PER_MM3 = 1e-3


# ----------------------------------------------------------------------------------- parameters
@dataclass(frozen=True, kw_only=True)
class LVParams:
    """Shape parameters of one synthetic LV cavity (all lengths in mm).

    c_mm: long semi-axis of the spheroid (its centre to the apex).
    b_mm: short semi-axis (radius at the equator).
    h_mm: height of the basal plane above the spheroid's centre, in (-c_mm, c_mm).
    apex_shift_mm: (2,) lateral (x, y) displacement of the apex, fading to zero at the base.
    base_tilt: (2,) slopes dz/dx, dz/dy of the basal plane.
    bump_centers: (nb, 3) unit domain vectors of the bumps' centres.
    bump_amplitudes_mm: (nb,) signed normal displacement at each centre (positive outward).
    bump_widths: (nb,) Gaussian width, as a chord length on the unit domain sphere.
    septal_flattening: fraction by which the radius shrinks at the septum (azimuth phi = pi),
        fading to zero over the septal half (a D-shaped cross-section, as in real LVs). It gives
        the cavity a consistent circumferential landmark, without which the azimuth of the
        ground-truth correspondence could not be recovered from the geometry at all.
    """

    c_mm: float
    b_mm: float
    h_mm: float
    apex_shift_mm: tuple[float, float] = (0.0, 0.0)
    base_tilt: tuple[float, float] = (0.0, 0.0)
    bump_centers: tuple[tuple[float, float, float], ...] = ()
    bump_amplitudes_mm: tuple[float, ...] = ()
    bump_widths: tuple[float, ...] = ()
    septal_flattening: float = 0.0

    def __post_init__(self) -> None:
        for key in ("c_mm", "b_mm", "h_mm", "septal_flattening"):
            object.__setattr__(self, key, float(getattr(self, key)))
        for key in ("apex_shift_mm", "base_tilt", "bump_amplitudes_mm", "bump_widths"):
            object.__setattr__(self, key, tuple(float(x) for x in getattr(self, key)))
        object.__setattr__(self, "bump_centers",
                           tuple(tuple(float(x) for x in c) for c in self.bump_centers))
        if len(self.apex_shift_mm) != 2 or len(self.base_tilt) != 2:
            raise ValueError("LVParams: apex_shift_mm and base_tilt must have two entries each")
        if any(len(c) != 3 for c in self.bump_centers):
            raise ValueError("LVParams: each bump centre must be a 3-vector")
        values = [self.c_mm, self.b_mm, self.h_mm, *self.apex_shift_mm, *self.base_tilt,
                  *self.bump_amplitudes_mm, *self.bump_widths, *sum(self.bump_centers, ())]
        if not np.isfinite(values).all():
            raise ValueError(f"LVParams: every parameter must be finite, got {self}")
        if not (self.c_mm > 0
                and self.b_mm > 0 and -self.c_mm < self.h_mm < self.c_mm):
            raise ValueError(
                f"LVParams needs c_mm > 0, b_mm > 0 and -c_mm < h_mm < c_mm, got "
                f"c_mm={self.c_mm}, b_mm={self.b_mm}, h_mm={self.h_mm}"
            )
        nb = len(self.bump_centers)
        if not (len(self.bump_amplitudes_mm) == nb == len(self.bump_widths)):
            raise ValueError("LVParams: bump_centers, bump_amplitudes_mm and bump_widths "
                             "must have the same length")
        if not 0.0 <= self.septal_flattening < 0.5:
            raise ValueError(f"LVParams: septal_flattening must be in [0, 0.5), "
                             f"got {self.septal_flattening}")
        if nb and min(self.bump_widths) <= 0:
            raise ValueError(f"LVParams: bump widths must be positive, got {self.bump_widths}")

    @property
    def theta_base(self) -> float:
        """Spheroidal angle of the basal plane (pi/2 when the plane passes the centre)."""
        return float(np.arccos(-self.h_mm / self.c_mm))

    @property
    def base_radius_mm(self) -> float:
        """Radius of the (untilted) basal cap."""
        return float(self.b_mm * np.sin(self.theta_base))

    def scaled(self, factor: float) -> "LVParams":
        """The same shape scaled by `factor` about the domain-frame origin."""
        return LVParams(
            c_mm=self.c_mm * factor, b_mm=self.b_mm * factor, h_mm=self.h_mm * factor,
            apex_shift_mm=tuple(factor * a for a in self.apex_shift_mm),
            base_tilt=self.base_tilt, bump_centers=self.bump_centers,
            bump_amplitudes_mm=tuple(factor * a for a in self.bump_amplitudes_mm),
            bump_widths=self.bump_widths, septal_flattening=self.septal_flattening,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; `LVParams.from_dict` inverts it exactly."""
        return {
            "c_mm": float(self.c_mm), "b_mm": float(self.b_mm), "h_mm": float(self.h_mm),
            "apex_shift_mm": [float(a) for a in self.apex_shift_mm],
            "base_tilt": [float(t) for t in self.base_tilt],
            "bumps": [
                {"center": [float(x) for x in c], "amplitude_mm": float(a), "width": float(w)}
                for c, a, w in zip(self.bump_centers, self.bump_amplitudes_mm, self.bump_widths)
            ],
            "septal_flattening": float(self.septal_flattening),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LVParams":
        bumps = d.get("bumps", [])
        return cls(
            c_mm=float(d["c_mm"]), b_mm=float(d["b_mm"]), h_mm=float(d["h_mm"]),
            apex_shift_mm=tuple(float(a) for a in d.get("apex_shift_mm", (0.0, 0.0))),
            base_tilt=tuple(float(t) for t in d.get("base_tilt", (0.0, 0.0))),
            bump_centers=tuple(tuple(float(x) for x in b["center"]) for b in bumps),
            bump_amplitudes_mm=tuple(float(b["amplitude_mm"]) for b in bumps),
            bump_widths=tuple(float(b["width"]) for b in bumps),
            septal_flattening=float(d.get("septal_flattening", 0.0)),
        )


def _unit(alpha: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Domain points from polar angle (from the apex) and azimuth. -> (K, 3)"""
    sa = np.sin(alpha)
    return np.stack([sa * np.cos(phi), sa * np.sin(phi), -np.cos(alpha)], axis=-1)


def _check_domain_points(u: np.ndarray, what: str) -> np.ndarray:
    u = np.asarray(u, dtype=np.float64)
    if u.ndim != 2 or u.shape[1] != 3:
        raise ValueError(f"{what} must have shape (K, 3), got {u.shape}")
    if not np.isfinite(u).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    dev = np.abs(np.linalg.norm(u, axis=1) - 1.0)
    if dev.size and dev.max() > DOMAIN_NORM_TOL:
        raise ValueError(
            f"{what} must be unit vectors on the domain sphere; the worst norm is off by "
            f"{dev.max():.3g} (normalise them first)"
        )
    return u


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def lv_surface(params: LVParams | Mapping[str, Any], *,
               domain_points: np.ndarray) -> np.ndarray:
    """Evaluate the shape map: points of the LV surface (domain frame, mm) at domain points.

    params: `LVParams` or its `to_dict()` form (as stored in truth.json).
    domain_points: (K, 3) unit vectors on the domain sphere.
    Returns (K, 3) surface points in the domain frame (apply the shape's `pose` for file frame).
    """
    p = params if isinstance(params, LVParams) else LVParams.from_dict(params)
    u = _check_domain_points(domain_points, "domain_points")
    c, b, h = p.c_mm, p.b_mm, p.h_mm
    alpha = np.arctan2(np.hypot(u[:, 0], u[:, 1]), -u[:, 2])
    phi = np.arctan2(u[:, 1], u[:, 0])
    cphi, sphi = np.cos(phi), np.sin(phi)
    wall = alpha <= ALPHA_BASE
    theta = p.theta_base * np.minimum(alpha, ALPHA_BASE) / ALPHA_BASE
    sth, cth = np.sin(theta), np.cos(theta)
    s_cap = np.clip((np.pi - alpha) / (np.pi - ALPHA_BASE), 0.0, 1.0)
    # Septal flattening: the same azimuthal factor on wall and cap keeps the rim continuous.
    septum = 1.0 - p.septal_flattening * np.clip(-cphi, 0.0, None) ** 2
    radial = np.where(wall, b * sth, p.base_radius_mm * s_cap) * septum
    z_base = np.where(wall, -c * cth, h)
    x, y, z = radial * cphi, radial * sphi, z_base.copy()

    if p.bump_centers:
        centers = np.asarray(p.bump_centers, dtype=np.float64)
        amps = np.asarray(p.bump_amplitudes_mm, dtype=np.float64)
        widths = np.asarray(p.bump_widths, dtype=np.float64)
        d2 = ((u[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
        delta = (amps * np.exp(-d2 / (2.0 * widths**2))).sum(axis=1)
        delta *= _smoothstep((ALPHA_BASE - alpha) / BUMP_TAPER_WIDTH)  # zero on the cap
        # Outward normal of the spheroid: gradient of x^2/b^2 + y^2/b^2 + z^2/c^2.
        n = np.stack([sth * cphi / b, sth * sphi / b, -cth / c], axis=1)
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        x, y, z = x + delta * n[:, 0], y + delta * n[:, 1], z + delta * n[:, 2]

    span = h + c
    w_apex = ((h - z_base) / span) ** 2
    x = x + p.apex_shift_mm[0] * w_apex
    y = y + p.apex_shift_mm[1] * w_apex
    w_tilt = ((z_base + c) / span) ** 2
    z = z + (p.base_tilt[0] * x + p.base_tilt[1] * y) * w_tilt
    return np.stack([x, y, z], axis=1)


# --------------------------------------------------------------------------- reference grids
@functools.lru_cache(maxsize=8)
def _grid_domain(m: int) -> tuple[np.ndarray, np.ndarray]:
    """A latitude-longitude triangulation of the domain with a ring exactly on the rim.

    `m` rings per quarter turn of `alpha` (3m on the wall, m on the cap), 8m points per ring.
    -> domain points (V, 3), outward faces (F, 3)
    """
    n_wall, n_cap, n_phi = 3 * m, m, 8 * m
    alphas = np.concatenate([ALPHA_BASE * np.arange(1, n_wall + 1) / n_wall,
                             ALPHA_BASE + (np.pi - ALPHA_BASE) * np.arange(1, n_cap) / n_cap])
    phis = 2.0 * np.pi * np.arange(n_phi) / n_phi
    a, f = np.meshgrid(alphas, phis, indexing="ij")
    pts = np.concatenate([[APEX_DIRECTION], _unit(a.ravel(), f.ravel()), [[0.0, 0.0, 1.0]]])
    n_rings = alphas.size
    ring = 1 + np.arange(n_rings)[:, None] * n_phi + np.arange(n_phi)[None, :]
    nxt = np.roll(ring, -1, axis=1)
    faces = [np.stack([np.zeros(n_phi, int), nxt[0], ring[0]], axis=1)]
    lo, lo_n, hi, hi_n = ring[:-1].ravel(), nxt[:-1].ravel(), ring[1:].ravel(), nxt[1:].ravel()
    faces += [np.stack([lo, lo_n, hi_n], axis=1), np.stack([lo, hi_n, hi], axis=1)]
    last = len(pts) - 1
    faces.append(np.stack([ring[-1], nxt[-1], np.full(n_phi, last)], axis=1))
    faces = np.concatenate(faces).astype(np.int64)
    pts.setflags(write=False)  # cached: shared between calls
    faces.setflags(write=False)
    return pts, faces


def lv_volume(params: LVParams | Mapping[str, Any], *,
              resolution: int = VOLUME_RESOLUTION) -> float:
    """Enclosed volume (mm^3) of the continuous surface.

    Volumes of two inscribed latitude-longitude meshes (`resolution` and `resolution // 2` rings
    per quarter turn, about 74k and 18k vertices at the default) are Richardson-extrapolated; the
    error falls as the fourth power of the ring spacing, about 1e-8 relative at the default.
    """
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8, got {resolution}")
    vols = []
    for m in (resolution, resolution // 2):
        u, faces = _grid_domain(m)
        vols.append(geo.signed_volume(lv_surface(params, domain_points=u), faces))
    return float((4.0 * vols[0] - vols[1]) / 3.0)


def lv_long_axis(params: LVParams | Mapping[str, Any]) -> float:
    """Long-axis length (mm): distance from the apex to the centre of the basal cap."""
    ends = lv_surface(params, domain_points=np.array([APEX_DIRECTION, (0.0, 0.0, 1.0)]))
    return float(np.linalg.norm(ends[1] - ends[0]))


def sample_lv_params(rng: np.random.Generator, *,
                     phenotype: Literal["healthy", "dilated"] = "healthy") -> LVParams:
    """Draw the parameters of one LV whose exact volume is uniform in the phenotype's EDV range.

    Shape features are drawn first; the result is then scaled (the map is homogeneous in its
    lengths) so that its exact volume equals the drawn end-diastolic volume (to about 1e-6).
    """
    if phenotype not in PHENOTYPES:
        raise ValueError(f"phenotype must be one of {sorted(PHENOTYPES)}, got {phenotype!r}")
    ranges = PHENOTYPES[phenotype]
    edv_mm3 = rng.uniform(*ranges["edv_ml"]) / ML_PER_MM3
    sphericity = rng.uniform(*ranges["sphericity"])
    tau = rng.uniform(*TRUNCATION_RANGE)
    c = 65.0  # provisional, about a typical LV; fixed by the final scaling
    # Directions are anatomical (apex displaced laterally, phi ~ 0; basal plane tilted towards
    # the anterior/aortic side, phi ~ pi/2), with jitter; magnitudes vary freely.
    shift_dir = rng.normal(APEX_SHIFT_AZIMUTH, DIRECTION_JITTER_RAD)
    shift = rng.uniform(0.0, APEX_SHIFT_MAX_MM) * _unit(np.pi / 2, shift_dir)[:2]
    tilt_deg = rng.uniform(0.0, TILT_MAX_DEG)
    tilt_dir = rng.normal(TILT_AZIMUTH, DIRECTION_JITTER_RAD)
    tilt = np.tan(np.radians(tilt_deg)) * _unit(np.pi / 2, tilt_dir)[:2]
    septal = rng.uniform(*SEPTAL_FLATTENING_RANGE)
    nb = int(rng.integers(BUMPS_RANGE[0], BUMPS_RANGE[1] + 1))
    centers = _unit(rng.uniform(*BUMP_ALPHA_RANGE, nb), rng.uniform(0, 2 * np.pi, nb))
    draft = LVParams(
        c_mm=c, b_mm=sphericity * (1.0 + tau) * c / 2.0, h_mm=tau * c,
        apex_shift_mm=tuple(shift), base_tilt=tuple(tilt),
        bump_centers=tuple(map(tuple, centers)),
        bump_amplitudes_mm=tuple(rng.uniform(-BUMP_AMPLITUDE_MAX_MM, BUMP_AMPLITUDE_MAX_MM, nb)),
        bump_widths=tuple(rng.uniform(*BUMP_WIDTH_RANGE, nb)),
        septal_flattening=septal,
    )
    # Bump amplitudes and the apex shift were drawn in mm for an LV of typical size: scale them
    # with the rest so the drawn mm figures describe the final shape approximately.
    return draft.scaled(float(np.cbrt(edv_mm3 / lv_volume(draft, resolution=16))))


# ----------------------------------------------------------------------------- triangulation
@dataclass(frozen=True, kw_only=True)
class LVTriangulation:
    """One triangulation of an LV surface, in the domain frame.

    domain: (V, 3) unit domain coordinates of the vertices.
    vertices: (V, 3) vertex positions (mm), exactly `lv_surface(params, domain_points=domain)`.
    faces: (F, 3) outward-oriented triangles; also a valid triangulation of the domain sphere.
    region: (V,) `REGION_WALL`, `REGION_RIM` or `REGION_CAP`; vertex 0 is the apex.
    """

    domain: np.ndarray
    vertices: np.ndarray
    faces: np.ndarray
    region: np.ndarray


def _conformal_radius(params: LVParams, theta: np.ndarray) -> np.ndarray:
    """Radius in a conformal flattening of the (unmodified) spheroid wall onto a disc.

    For a surface of revolution with meridian arc length s and radius r(s), the map
    (s, phi) -> q(s)(cos phi, sin phi) with d(ln q)/ds = 1/r is conformal, so points evenly spaced
    on the surface stay evenly spaced (up to a slowly varying scale) and their planar Delaunay
    triangles are well shaped in 3D. Here d(ln q)/dtheta = 1/sin(theta) + (f - b)/(b sin(theta))
    with f = |dP/dtheta|; the first term integrates to ln tan(theta/2).
    """
    c, b = params.c_mm, params.b_mm
    grid = np.linspace(0.0, params.theta_base, 2049)
    s, co = np.sin(grid), np.cos(grid)
    f = np.sqrt(c * c * s * s + b * b * co * co)
    integrand = (c * c - b * b) * s / (b * (f + b))  # (f - b)/(b sin) without cancellation
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(grid))])
    return np.tan(theta / 2.0) * np.exp(np.interp(theta, grid, cum))


def _delaunay_ccw(points2d: np.ndarray, what: str) -> np.ndarray:
    """Planar Delaunay triangles, each counter-clockwise. (P, 2) -> (T, 3) local indices"""
    tri = Delaunay(points2d)
    simplices = tri.simplices.astype(np.int64)
    if np.unique(simplices).size != len(points2d):
        raise ShapeAtlasError(f"synthetic LV: the {what} triangulation dropped vertices")
    p = points2d[simplices]
    cross = ((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1])
             - (p[:, 1, 1] - p[:, 0, 1]) * (p[:, 2, 0] - p[:, 0, 0]))
    return np.where((cross < 0)[:, None], simplices[:, ::-1], simplices)


def triangulate_lv(params: LVParams, *, n_vertices: int,
                   rng: np.random.Generator) -> LVTriangulation:
    """Triangulate the LV surface with exactly `n_vertices` evenly spaced vertices.

    Vertices: the apex, a ring exactly on the rim (so the wall/cap crease is kept), and points
    spread by farthest-point sampling (in 3D) from candidates drawn uniformly by area. The wall is
    triangulated by planar Delaunay in a conformal flattening, the cap by planar Delaunay of the
    disc; both are bounded by the rim polygon, so they close up into a watertight surface.
    The random candidates and the rim's phase make the connectivity differ from draw to draw.
    """
    if n_vertices < MIN_VERTICES:
        raise ValueError(f"n_vertices must be at least {MIN_VERTICES}, got {n_vertices}")
    grid_u, grid_f = _grid_domain(CANDIDATE_GRID_RESOLUTION)
    grid_x = lv_surface(params, domain_points=grid_u)
    areas = geo.face_areas(grid_x, grid_f)
    spacing = np.sqrt(2.0 * areas.sum() / (np.sqrt(3.0) * n_vertices))

    ring_phi = np.linspace(0.0, 2.0 * np.pi, 1024, endpoint=False)
    fine_rim = lv_surface(params, domain_points=_unit(np.full(1024, ALPHA_BASE), ring_phi))
    perimeter = np.linalg.norm(fine_rim - np.roll(fine_rim, 1, axis=0), axis=1).sum()
    n_rim = max(MIN_RIM_VERTICES, int(round(perimeter / (RIM_SPACING_FACTOR * spacing))))
    n_free = n_vertices - n_rim - 1
    if n_free < n_rim:
        raise ValueError(f"n_vertices={n_vertices} is too few for this shape's rim "
                         f"({n_rim} vertices); ask for at least {2 * n_rim + 1}")
    rim_phi = rng.uniform(0.0, 2.0 * np.pi / n_rim) + 2.0 * np.pi * np.arange(n_rim) / n_rim
    rim_u = _unit(np.full(n_rim, ALPHA_BASE), rim_phi)
    apex_u = np.array([APEX_DIRECTION])
    rim_x = lv_surface(params, domain_points=rim_u)
    apex_x = lv_surface(params, domain_points=apex_u)

    cand_u = area_candidates(grid_u, grid_f, areas, CANDIDATE_OVERSAMPLING * n_free, rng=rng)
    cand_x = lv_surface(params, domain_points=cand_u)
    rim_gap, _ = cKDTree(rim_x).query(cand_x)
    keep = rim_gap >= RIM_BAND_FACTOR * perimeter / n_rim
    cand_u, cand_x = cand_u[keep], cand_x[keep]
    free = farthest_points(cand_x, np.concatenate([apex_x, rim_x]), n_free)
    free_u = cand_u[free]

    free_alpha = np.arctan2(np.hypot(free_u[:, 0], free_u[:, 1]), -free_u[:, 2])
    u = np.concatenate([apex_u, free_u, rim_u])
    alpha = np.concatenate([[0.0], free_alpha, np.full(n_rim, ALPHA_BASE)])
    phi = np.arctan2(u[:, 1], u[:, 0])
    region = np.where(alpha < ALPHA_BASE, REGION_WALL, REGION_CAP).astype(np.int8)
    region[-n_rim:] = REGION_RIM
    # Order vertices from apex to cap centre (memory locality; apex stays vertex 0).
    order = np.lexsort((phi, alpha))
    u, alpha, phi, region = u[order], alpha[order], phi[order], region[order]

    circle = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    wall_idx = np.flatnonzero(region != REGION_CAP)
    theta = params.theta_base * alpha[wall_idx] / ALPHA_BASE
    # (q, phi) is oriented against the outward normal of the wall: flip its triangles.
    flat = _conformal_radius(params, theta)[:, None] * circle[wall_idx]
    wall_faces = wall_idx[_delaunay_ccw(flat, "wall")][:, ::-1]
    cap_idx = np.flatnonzero(region != REGION_WALL)
    s = np.where(region[cap_idx] == REGION_RIM, 1.0,
                 (np.pi - alpha[cap_idx]) / (np.pi - ALPHA_BASE))
    cap_faces = cap_idx[_delaunay_ccw(s[:, None] * circle[cap_idx], "cap")]
    faces = np.concatenate([wall_faces, cap_faces])

    vertices = lv_surface(params, domain_points=u)
    uf = u[faces]
    domain_det = np.einsum("ij,ij->i", uf[:, 0], np.cross(uf[:, 1], uf[:, 2]))
    if not (geo.is_watertight(faces) and geo.euler_characteristic(len(u), faces) == 2
            and geo.signed_volume(vertices, faces) > 0 and (domain_det > 0).all()):
        raise ShapeAtlasError("synthetic LV: triangulation is not a closed outward sphere "
                              "(this is a bug in shapeatlas.data.synthetic_lv)")
    return LVTriangulation(domain=u, vertices=vertices, faces=faces, region=region)


# ----------------------------------------------------------------------------------- cohorts
def random_pose(rng: np.random.Generator, *,
                max_translation_mm: float = TRANSLATION_MAX_MM) -> np.ndarray:
    """A uniformly random rotation and a translation uniform in a cube. -> (4, 4)"""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    rot = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    pose = np.eye(4)
    pose[:3, :3] = rot
    pose[:3, 3] = rng.uniform(-max_translation_mm, max_translation_mm, 3)
    return pose


DOMAIN_DESCRIPTION = (
    "unit sphere; alpha = angle from the apex direction (0,0,-1), phi = atan2(y,x); "
    f"alpha in [0, {ALPHA_BASE!r}] maps to the wall (truncated prolate spheroid, theta = "
    "theta_base*alpha/alpha_base), alpha in [alpha_base, pi] to the flat basal cap (radius "
    "falling linearly to the cap centre (0,0,1)); evaluate with "
    "shapeatlas.data.synthetic_lv.lv_surface(params, domain_points=domain)"
)


def write_lv_cohort(
    out_dir: str | Path,
    *,
    n: int = 50,
    seed: int = 0,
    phenotypes: Literal["healthy", "mixed"] = "healthy",
    n_vertices: tuple[int, int] = (1000, 4000),
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write a synthetic LV cohort with exact ground truth; return the mesh paths.

    Writes `out_dir/lv_000.ply`, ... (file frame, mm, no point data), `out_dir/truth/<name>.npz`
    (`domain` (V, 3), `vertices_domain` (V, 3), `faces` (F, 3), `region` (V,)) and, last,
    `out_dir/truth.json` (per-shape records under "shapes", plus seed, generator version and
    domain description). Every file is written atomically; the same seed gives the same bytes.

    phenotypes: "healthy" only, or "mixed": half of the shapes (rounded down) "dilated", larger
    and more spherical. n_vertices: inclusive range of vertex counts, drawn without repetition
    where the range allows. progress: called as `progress(done, n)` after each shape.
    overwrite: replace a non-empty `out_dir` whole (else refused); the folder is built beside
    it and moved into place at the end (`shapeatlas.outputs`).

    Examples
    --------
    >>> paths = write_lv_cohort("cohort", n=3, seed=1)          # doctest: +SKIP
    >>> truth = load_truth("cohort"); truth["lv_000"].volume_ml  # doctest: +SKIP
    """
    lo, hi = cohort_vertex_range(n, n_vertices, MIN_VERTICES)
    if phenotypes not in ("healthy", "mixed"):
        raise ValueError(f"phenotypes must be 'healthy' or 'mixed', got {phenotypes!r}")

    with staged_output(out_dir, verb="synth lv", overwrite=overwrite) as staging:
        paths = _write_lv_cohort(staging.path, n=n, seed=seed, phenotypes=phenotypes, lo=lo,
                                 hi=hi, progress=progress)
    return [Path(out_dir) / p.name for p in paths]


def _write_lv_cohort(out_dir: Path, *, n: int, seed: int, phenotypes: str, lo: int, hi: int,
                     progress: Callable[[int, int], None] | None) -> list[Path]:
    """`write_lv_cohort`'s work, in the staging folder `out_dir`."""
    seq = np.random.SeedSequence(seed)
    cohort_rng = np.random.default_rng(seq.spawn(1)[0])
    labels = ["healthy"] * n
    if phenotypes == "mixed":
        labels = ["healthy"] * (n - n // 2) + ["dilated"] * (n // 2)
        labels = [labels[i] for i in cohort_rng.permutation(n)]
    counts = cohort_rng.choice(np.arange(lo, hi + 1), size=n, replace=n > hi - lo + 1)
    shape_seeds = seq.spawn(n)

    records, paths = {}, []
    for i, (label, count, shape_seed) in enumerate(zip(labels, counts, shape_seeds)):
        name = f"lv_{i:03d}"
        rng = np.random.default_rng(shape_seed)
        params = sample_lv_params(rng, phenotype=label)
        tri = triangulate_lv(params, n_vertices=int(count), rng=rng)
        pose = random_pose(rng)
        path, records[name] = write_shape_truth(
            out_dir, name, domain=tri.domain, vertices_domain=tri.vertices, faces=tri.faces,
            region=tri.region, pose=pose,
            head={"volume_ml": lv_volume(params) * ML_PER_MM3, "phenotype": label,
                  "long_axis_mm": lv_long_axis(params)},
            params=params.to_dict())
        paths.append(path)
        log.debug("%s: %s, %d vertices, %.1f mL", name, label, count, records[name]["volume_ml"])
        if progress is not None:
            progress(i + 1, n)
    write_cohort_index(out_dir, head={
        "generator": "shapeatlas.data.synthetic_lv", "generator_version": GENERATOR_VERSION,
        "seed": seed, "n": n, "phenotypes": phenotypes, "n_vertices_range": [lo, hi]},
        tail={"domain": DOMAIN_DESCRIPTION, "alpha_base": ALPHA_BASE}, shapes=records)
    log.info("wrote %d synthetic LV shapes", n)
    return paths


@dataclass(frozen=True, kw_only=True)
class LVTruth(ShapeTruth):
    """Ground truth of one LV of a cohort (see `write_lv_cohort`): the `ShapeTruth` fields
    (region: wall / rim / cap codes), the phenotype and the shape's `LVParams`."""

    phenotype: str
    params: LVParams
    LONG_AXIS: ClassVar[int] = 2  # apex (0, 0, -1) to cap centre (0, 0, 1)

    def surface(self, domain_points: np.ndarray) -> np.ndarray:
        return lv_surface(self.params, domain_points=domain_points)


def load_truth(directory: str | Path) -> dict[str, LVTruth]:
    """Read a cohort's ground truth: shape name -> `LVTruth`, in name order."""
    return read_cohort_truth(
        directory, generator="shapeatlas.data.synthetic_lv", writer="write_lv_cohort",
        organ="LV", build=lambda fields, rec: LVTruth(
            **fields, phenotype=rec["phenotype"], params=LVParams.from_dict(rec["params"])))
