"""Tiny meshes built in code for the nn tests, as fixtures (torch tensors)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch
import trimesh

TET_V = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
TET_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def _ellipsoid(subdivisions: int = 2, axes: tuple[float, float, float] = (1.0, 1.0, 1.0)):
    s = trimesh.creation.icosphere(subdivisions=subdivisions)
    v = torch.as_tensor(np.asarray(s.vertices) * np.asarray(axes), dtype=torch.float32)
    return v, torch.as_tensor(np.asarray(s.faces), dtype=torch.long)


@pytest.fixture(autouse=True)
def _one_thread():
    """Run on one intra-op thread: these tensors are tiny, and on a busy 2-core machine two OpenMP
    threads wait on each other at every operation (measured: a 30-step training test took 32 s
    with 2 threads under load, 0.2 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_ellipsoid() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """Factory: (subdivisions, axes) -> float32 vertices (V, 3), long faces (F, 3) of a scaled
    icosphere (subdivisions 1: 42 vertices, 2: 162, 3: 642, 4: 2562)."""
    return _ellipsoid


@pytest.fixture
def tet() -> tuple[np.ndarray, np.ndarray]:
    """The unit right tetrahedron, outward faces: vertices (4, 3), faces (4, 3)."""
    return TET_V.copy(), TET_F.copy()
