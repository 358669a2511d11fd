"""Diagnosis of a mesh: the problems a user should know about before shape modelling.

`diagnose` never raises for a mesh that `Mesh` accepted; it returns human-readable findings.
`unusable` says why a mesh cannot be used for shape modelling at all (grooming refuses it);
the validity check of `shapeatlas.mesh.validity` (closed, manifold, outward, no
self-intersections, no degenerate faces) is part of `summary`.
"""

from __future__ import annotations

import numpy as np

from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.units import PLAUSIBLE_DIAGONAL_MM, implausible_size
from shapeatlas.mesh.validity import (
    DEGENERATE_QUALITY,
    Validity,
    degenerate_mask,
    mesh_validity,
)


def unusable(mesh: Mesh) -> str | None:
    """Why `mesh` cannot be used for shape modelling (no surface to model), or None.

    A surface whose faces are all degenerate (zero area, collinear corners) or whose vertices
    all lie on one line has no area to model; cleaning cannot repair it. (A flat sheet has an
    area, and is left to the other checks.)
    """
    n_bad = int(degenerate_mask(mesh.vertices, mesh.faces).sum())
    if n_bad == mesh.n_faces:
        return (f"all {mesh.n_faces} faces are degenerate (zero area or collinear corners): "
                "no surface to model")
    v = np.asarray(mesh.vertices)
    spread = np.linalg.svd(v - v.mean(axis=0), compute_uv=False)
    if len(spread) < 2 or spread[1] <= DEGENERATE_QUALITY * spread[0]:
        return ("all vertices lie on one line: every face is a needle of no area, no surface "
                "to model")
    return None


def diagnose(mesh: Mesh, validity: Validity | None = None) -> list[str]:
    """Problems found in `mesh`, each a short sentence; an empty list when none.

    The failed conditions of the mesh check (`validity`, computed when not given) come first,
    then what only matters before grooming: several components, unused vertices, duplicate
    faces, an implausible size, handles.
    """
    val = validity if validity is not None else mesh_validity(mesh.vertices, mesh.faces)
    problems = [p + (" (volume undefined; groom with --watertight)"
                     if p.startswith("open surface") else "") for p in val.problems]
    f = np.asarray(mesh.faces)
    if mesh.n_components > 1:
        problems.append(f"{mesh.n_components} connected components (grooming keeps the largest)")
    unused = mesh.n_vertices - np.unique(f).size
    if unused:
        problems.append(f"{unused} vertices used by no face")
    n_dup = len(f) - len(np.unique(np.sort(f, axis=1), axis=0))
    if n_dup:
        problems.append(f"{n_dup} duplicate faces")
    diag = float(np.linalg.norm(mesh.extent))
    hint = implausible_size(diag)
    if hint:
        small = diag < PLAUSIBLE_DIAGONAL_MM[0]
        problems.append(f"bounding-box diagonal is {diag:.3g}: too "
                        f"{'small' if small else 'large'} for an organ in mm; {hint}")
    if mesh.is_watertight and mesh.euler_characteristic != 2:
        genus = (2 - mesh.euler_characteristic) // 2
        problems.append(f"closed surface of genus {genus} (handles), not a sphere-like organ")
    return problems


def summary(mesh: Mesh) -> dict:
    """Counts, watertightness, volume, area, bounds, problems, `unusable` (why the mesh cannot
    be modelled, or None) and `validity` (`Validity.as_dict`) of `mesh`, JSON-ready."""
    validity = mesh_validity(mesh.vertices, mesh.faces)
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
        "problems": diagnose(mesh, validity),
        "unusable": unusable(mesh),
        "validity": validity.as_dict(),
    }
    return out
