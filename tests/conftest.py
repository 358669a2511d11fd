"""Shared fixtures: tiny exact meshes built in code, and the real-data location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trimesh

from shapeatlas.mesh.core import Mesh

# Tests never read or fill the user's grooming cache (and commands they start inherit this);
# tests/test_cache.py names its own folders.
os.environ["SHAPEATLAS_CACHE"] = "off"

LIVER_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "liver-amos77"


@pytest.fixture
def icosphere() -> Mesh:
    t = trimesh.creation.icosphere(subdivisions=3, radius=20.0)
    return Mesh(t.vertices, t.faces, name="icosphere")


@pytest.fixture
def liver_dir() -> Path:
    if not LIVER_DIR.is_dir():
        pytest.skip(f"real liver data not found at {LIVER_DIR}")
    return LIVER_DIR
