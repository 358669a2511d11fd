"""Units of a cohort's meshes: the scale of each input unit, and shapes whose size says that
they were saved in another unit than the rest.

A liver exported in centimetres reads as a 10x smaller organ in millimetres, and nothing else
about the file looks wrong. Organs of one kind vary in size by far less than a unit's factor, so
each shape's size is compared with the cohort's: the log of its RMS radius against the cohort's
median, scaled by the median absolute deviation (robust to the outliers it looks for). A shape
at least `OUTLIER_FACTOR` times larger or smaller than the median, and far out in the cohort's
own spread (`OUTLIER_Z`), is flagged with the unit that would explain it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from shapeatlas.mesh.core import Mesh

#: Millimetres per input unit (`--input-units`).
UNIT_SCALE = {"um": 1e-3, "mm": 1.0, "cm": 10.0, "in": 25.4, "m": 1000.0}
UNIT_NAMES = {"um": "micrometres", "mm": "millimetres", "cm": "centimetres", "in": "inches",
              "m": "metres"}
#: A typical organ's bounding-box diagonal (mm), against which an implausible one is read.
TYPICAL_DIAGONAL_MM = 150.0
#: Bounding-box diagonals (mm) outside this range suggest the file is not in millimetres.
PLAUSIBLE_DIAGONAL_MM = (5.0, 2000.0)
#: Fewest shapes for which the cohort's median size means something.
MIN_COHORT = 5
#: Smallest size factor (RMS radius against the cohort's median) that flags a shape.
OUTLIER_FACTOR = 3.0
#: Smallest robust z-score (log radius, MAD-scaled) that flags a shape: a cohort whose sizes
#: truly spread widely flags nothing at 3x.
OUTLIER_Z = 3.5
#: A unit explains a factor when their ratio is within this factor of it.
UNIT_MATCH = 1.5
#: Gaussian consistency of the median absolute deviation.
_MAD_TO_SD = 1.4826
#: Floor of the MAD (in log radius) so that identical sizes do not make every shape an outlier.
_MIN_MAD = 0.02


def rms_radius(mesh: Mesh) -> float:
    """Area-weighted RMS distance (mm) of the vertices from their area-weighted centroid, each
    vertex weighted by a third of its faces' areas: a size that hardly depends on the
    triangulation (exact for a sphere's vertices)."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces)
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    w = np.bincount(f.ravel(), weights=np.repeat(area / 3.0, 3), minlength=len(v))
    if not w.sum() > 0:
        w = np.ones(len(v))
    centre = (v * w[:, None]).sum(axis=0) / w.sum()
    return float(np.sqrt((((v - centre) ** 2).sum(axis=1) * w).sum() / w.sum()))


def likely_unit(factor: float, input_units: str = "mm", *, tolerance: float = UNIT_MATCH
                ) -> str | None:
    """The unit the coordinates were probably in when a shape read in `input_units` comes out
    `factor` times the expected size (> 1: too large), or None when no unit explains it to
    within a factor `tolerance`."""
    want = UNIT_SCALE[input_units] / factor  # mm per unit that would give the expected size
    best = min(UNIT_SCALE, key=lambda u: abs(np.log(UNIT_SCALE[u] / want)))
    if best == input_units or abs(np.log(UNIT_SCALE[best] / want)) > np.log(tolerance):
        return None
    return best


def unit_hint(factor: float, input_units: str = "mm", *, tolerance: float = UNIT_MATCH
              ) -> str:
    """'is it in centimetres? use --input-units cm' for a shape `factor` times the expected
    size (`likely_unit`), or a plain question when no unit explains it."""
    unit = likely_unit(factor, input_units, tolerance=tolerance)
    if unit is None:
        return f"are its coordinates really in {UNIT_NAMES[input_units]}?"
    return f"is it in {UNIT_NAMES[unit]}? use --input-units {unit}"


def implausible_size(diagonal_mm: float, input_units: str = "mm") -> str | None:
    """`unit_hint` for a shape whose bounding-box diagonal (mm) is outside
    `PLAUSIBLE_DIAGONAL_MM` (no organ is that size), or None for a plausible one."""
    lo, hi = PLAUSIBLE_DIAGONAL_MM
    if lo <= diagonal_mm <= hi:
        return None
    return unit_hint(diagonal_mm / TYPICAL_DIAGONAL_MM, input_units, tolerance=4.0)


@dataclass(frozen=True)
class SizeOutlier:
    """A shape whose size is far from the cohort's: `factor` (its RMS radius over the median)."""

    index: int
    name: str
    factor: float
    message: str


def size_outliers(meshes: Sequence[Mesh], *, input_units: str = "mm",
                  names: Sequence[str] | None = None) -> list[SizeOutlier]:
    """Shapes at least `OUTLIER_FACTOR` times larger or smaller than the cohort's median RMS
    radius and beyond `OUTLIER_Z` robust deviations of its log; none for cohorts of fewer than
    `MIN_COHORT` shapes. names: for the messages (default: each mesh's name)."""
    if len(meshes) < MIN_COHORT:
        return []
    names = [m.name for m in meshes] if names is None else list(names)
    logr = np.log([max(rms_radius(m), 1e-300) for m in meshes])
    med = float(np.median(logr))
    mad = max(_MAD_TO_SD * float(np.median(np.abs(logr - med))), _MIN_MAD)
    out = []
    for i, lr in enumerate(logr):
        factor = float(np.exp(lr - med))
        if abs(lr - med) >= np.log(OUTLIER_FACTOR) and abs(lr - med) / mad >= OUTLIER_Z:
            size = (f"{factor:.3g}x larger" if factor > 1 else f"{1 / factor:.3g}x smaller")
            out.append(SizeOutlier(i, names[i], factor,
                                   f"{names[i]} is {size} than the cohort's median: "
                                   f"{unit_hint(factor, input_units)}"))
    return out
