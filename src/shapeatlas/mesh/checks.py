"""Diagnosis of a mesh: the problems a user should know about before shape modelling.

`diagnose` never raises for a mesh that `Mesh` accepted; it returns human-readable findings.
"""

from __future__ import annotations

import numpy as np

from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.core import Mesh

#: Bounding-box diagonals (mm) outside this range suggest the file is not in millimetres.
PLAUSIBLE_DIAGONAL_MM = (5.0, 2000.0)
#: Faces below this fraction of the mean face area are reported as degenerate.
DEGENERATE_FRACTION = 1e-8


def diagnose(mesh: Mesh) -> list[str]:
    """Problems found in `mesh`, each a short sentence; an empty list when none."""
    problems = []
    f = np.asarray(mesh.faces)
    edges, counts = geo.edge_face_counts(f)
    n_boundary = int((counts == 1).sum())
    n_nonmanifold = int((counts > 2).sum())
    if n_boundary:
        problems.append(f"open surface: {n_boundary} boundary edges (volume undefined; "
                        "groom with --watertight)")
    if n_nonmanifold:
        problems.append(f"{n_nonmanifold} non-manifold edges (shared by more than two faces)")
    if not n_boundary and not n_nonmanifold and not mesh.is_watertight:
        problems.append("inconsistent face orientation")
    if mesh.n_components > 1:
        problems.append(f"{mesh.n_components} connected components (grooming keeps the largest)")
    unused = mesh.n_vertices - np.unique(f).size
    if unused:
        problems.append(f"{unused} vertices used by no face")
    areas = mesh.face_areas
    n_degenerate = int((areas <= DEGENERATE_FRACTION * max(areas.mean(), 1e-300)).sum())
    if n_degenerate:
        problems.append(f"{n_degenerate} degenerate (zero-area) faces")
    n_dup = len(f) - len(np.unique(np.sort(f, axis=1), axis=0))
    if n_dup:
        problems.append(f"{n_dup} duplicate faces")
    diag = float(np.linalg.norm(mesh.extent))
    lo, hi = PLAUSIBLE_DIAGONAL_MM
    if diag < lo:
        problems.append(f"bounding-box diagonal is {diag:.3g}: coordinates look like metres or "
                        "centimetres, not millimetres (groom --input-units m|cm)")
    elif diag > hi:
        problems.append(f"bounding-box diagonal is {diag:.3g}: too large for an organ in mm")
    if mesh.is_watertight and mesh.signed_volume < 0:
        problems.append("faces point inwards (negative enclosed volume)")
    if mesh.is_watertight and mesh.euler_characteristic != 2:
        genus = (2 - mesh.euler_characteristic) // 2
        problems.append(f"closed surface of genus {genus} (handles), not a sphere-like organ")
    return problems


def summary(mesh: Mesh) -> dict:
    """Counts, watertightness, volume, area and bounds of `mesh`, JSON-ready."""
    out = {
        "name": mesh.name,
        "n_vertices": mesh.n_vertices,
        "n_faces": mesh.n_faces,
        "n_components": mesh.n_components,
        "watertight": bool(mesh.is_watertight),
        "euler_characteristic": mesh.euler_characteristic,
        "area_mm2": float(mesh.area),
        "volume_ml": float(mesh.volume / 1000.0) if mesh.is_watertight else None,
        "bounds_min": [float(x) for x in mesh.bounds[0]],
        "bounds_max": [float(x) for x in mesh.bounds[1]],
        "problems": diagnose(mesh),
    }
    return out
