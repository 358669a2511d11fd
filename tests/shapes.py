"""Tiny exact test shapes built in code (importable from any test module)."""

from __future__ import annotations

import numpy as np
import trimesh

from shapeatlas.mesh.core import Mesh


def asymmetric_blob(n_sub: int = 3, *, seed: int = 0) -> Mesh:
    """A closed, clearly asymmetric shape (ellipsoid with an off-axis bump), in mm."""
    t = trimesh.creation.icosphere(subdivisions=n_sub, radius=1.0)
    v = np.asarray(t.vertices) * np.array([40.0, 25.0, 15.0])
    bump = np.exp(-np.sum((np.asarray(t.vertices) - np.array([0.6, 0.6, 0.5])) ** 2, axis=1) / 0.1)
    v = v * (1.0 + 0.35 * bump)[:, None]
    return Mesh(v, t.faces, name=f"blob{seed}")
