"""Tiny exact test shapes built in code (importable from any test module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from shapeatlas.data.synthetic_lv import write_lv_cohort
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.groom import GroomOptions, groom_cohort, load_groomed


def asymmetric_blob(n_sub: int = 3, *, seed: int = 0) -> Mesh:
    """A closed, clearly asymmetric shape (ellipsoid with an off-axis bump), in mm."""
    t = trimesh.creation.icosphere(subdivisions=n_sub, radius=1.0)
    v = np.asarray(t.vertices) * np.array([40.0, 25.0, 15.0])
    bump = np.exp(-np.sum((np.asarray(t.vertices) - np.array([0.6, 0.6, 0.5])) ** 2, axis=1) / 0.1)
    v = v * (1.0 + 0.35 * bump)[:, None]
    return Mesh(v, t.faces, name=f"blob{seed}")


def groomed_lv_cohort(root: Path, *, n: int, seed: int):
    """A small two-phenotype synthetic LV cohort (1,000-1,200 vertices) in root/raw, groomed to
    500 vertices in root/groomed. -> (meshes, manifest) of the groomed folder."""
    write_lv_cohort(root / "raw", n=n, seed=seed, phenotypes="mixed", n_vertices=(1000, 1200))
    groom_cohort(root / "raw", root / "groomed", GroomOptions(target_vertices=500, n_jobs=1))
    return load_groomed(root / "groomed")
