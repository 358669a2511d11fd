"""Every reader on files written by other tools (VTK, trimesh, meshio, and hand-written files in
the conventions of 3D Slicer, MeshLab, ShapeWorks and 3D-IRCADb): see tests/data/meshes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shapeatlas.mesh.io import READ_FORMATS, read_mesh

HERE = Path(__file__).resolve().parents[1] / "data" / "meshes"
EXPECTED = json.loads((HERE / "expected.json").read_text())
FILES = sorted(p.name for p in HERE.iterdir() if p.suffix in READ_FORMATS)


def test_every_format_is_covered():
    assert {Path(name).suffix for name in FILES} == set(READ_FORMATS)
    assert sum(p.stat().st_size for p in HERE.iterdir()) < 320_000


@pytest.mark.parametrize("name", FILES)
def test_fixture_reads_with_expected_size_and_volume(name):
    mesh = read_mesh(HERE / name)
    assert mesh.n_vertices == EXPECTED["n_vertices"]
    assert mesh.n_faces == EXPECTED["n_faces"]
    assert mesh.is_watertight
    # float32 files keep about 7 digits; the volume is VTK's own (vtkMassProperties).
    assert mesh.volume == pytest.approx(EXPECTED["volume"], rel=1e-5)


@pytest.mark.parametrize("name", ["vtk42_ascii.vtk", "vtk51_binary.vtk", "slicer_lps_42.vtk",
                                  "slicer_lps_51.vtk", "vtk_binary_zlib.vtp"])
def test_point_normals_are_kept_and_unit(name):
    mesh = read_mesh(HERE / name)
    normals = np.asarray(mesh.point_data["Normals"], dtype=np.float64)
    assert normals.shape == (mesh.n_vertices, 3)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)


def test_shapeworks_scalar_kept_and_cell_data_skipped():
    mesh = read_mesh(HERE / "shapeworks_42_binary.vtk")
    dist = np.asarray(mesh.point_data["distance"])
    np.testing.assert_allclose(dist, np.linalg.norm(
        mesh.vertices - np.asarray(mesh.vertices).mean(0), axis=1))
    assert "region" not in mesh.point_data
