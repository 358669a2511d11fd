"""The initial atlas's shape: the cohort's medoid, exact or screened for large cohorts."""

from __future__ import annotations

import numpy as np
import trimesh

from shapeatlas.mesh.core import Mesh
from shapeatlas.models import inputs


def _cohort(n: int) -> list[Mesh]:
    """Ellipsoids of growing length, in shuffled order: the medoid is the median one."""
    base = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
    order = np.random.default_rng(1).permutation(n)
    return [Mesh(base.vertices * [1.0 + 0.1 * k, 1.0, 1.0], base.faces, name=f"e{k}")
            for k in order]


def test_the_medoid_is_the_middle_shape():
    meshes = _cohort(9)
    assert meshes[inputs.medoid_index(meshes)].name == "e4"
    assert inputs.medoid_index(meshes[:1]) == 0


def test_a_large_cohort_is_screened_to_a_near_medoid(monkeypatch):
    meshes = _cohort(41)
    pts = [inputs._strided(m, inputs.MEDOID_POINTS) for m in meshes]
    trees = [inputs.cKDTree(p) for p in pts]
    sums = [inputs._chamfer_sum(i, range(41), pts, trees) for i in range(41)]
    calls = []
    real = inputs._chamfer_sum
    monkeypatch.setattr(inputs, "_chamfer_sum", lambda i, others, *a: calls.append(
        len(others)) or real(i, others, *a))
    monkeypatch.setattr(inputs, "MEDOID_ALL_PAIRS_MAX", 20)
    monkeypatch.setattr(inputs, "MEDOID_PANEL", 12)
    monkeypatch.setattr(inputs, "MEDOID_CANDIDATES", 6)
    screened = inputs.medoid_index(meshes)
    # Not always the medoid itself, but one whose summed distance is within 2% of its.
    assert sums[screened] <= 1.02 * min(sums)
    # Linear work: 41 screenings against the panel, then 6 exact sums over the cohort.
    assert calls == [12] * 41 + [41] * 6
