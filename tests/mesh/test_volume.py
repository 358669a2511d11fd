"""Tetrahedral meshes with the optional mesher (TetGen), and the message when it is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import trimesh

from shapeatlas.errors import MeshError, ShapeAtlasError
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.volume import (
    Tetrahedralizer,
    require_mesher,
    tet_volumes,
    tetrahedralize,
    write_vtu,
)


def _sphere(sub: int = 2) -> Mesh:
    t = trimesh.creation.icosphere(subdivisions=sub, radius=20.0)
    return Mesh(t.vertices, t.faces, name="sphere")


def test_a_sphere_is_filled_with_tetrahedra_of_its_volume(tmp_path, monkeypatch):
    pytest.importorskip("tetgen")
    monkeypatch.chdir(tmp_path)
    s = _sphere()
    points, tets = tetrahedralize(s)
    assert tets.shape[1] == 4 and len(tets) > 100
    np.testing.assert_allclose(points[:s.n_vertices], s.vertices)  # the surface stays
    vol = tet_volumes(points, tets)
    assert np.all(vol > 0) and vol.sum() == pytest.approx(s.volume, rel=1e-9)
    write_vtu(tmp_path / "s.vtu", points, tets)
    import meshio

    back = meshio.read(tmp_path / "s.vtu")
    np.testing.assert_array_equal(back.cells_dict["tetra"], tets)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.vtu"]  # nothing else left here


def test_a_self_intersecting_surface_is_refused_with_the_reason_and_a_crash_is_survived(
        tmp_path, monkeypatch):
    pytest.importorskip("tetgen")
    monkeypatch.chdir(tmp_path)
    s = _sphere(3)
    v = np.array(s.vertices)
    top = int(np.argmax(v[:, 2]))
    bad, exact = v.copy(), v.copy()
    bad[top] = [0.26, 0.42, -30.0]
    exact[top] = [0.0, 0.0, -30.0]  # lines up exactly with the south pole: TetGen 1.6 crashes
    with Tetrahedralizer() as mesher:
        with pytest.raises(MeshError, match=r"^pushed: .*refused.*self-intersections$"):
            mesher(Mesh(bad, s.faces, name="pushed"))
        with pytest.raises(MeshError, match=r"^exact: the volume mesher \(TetGen\) crashed"):
            mesher(Mesh(exact, s.faces, name="exact"))
        points, tets = mesher(s)  # the same mesher goes on (restarted after a crash)
        assert tet_volumes(points, tets).sum() == pytest.approx(s.volume, rel=1e-9)
    assert list(tmp_path.iterdir()) == []  # TetGen's *_skipped files stay in its own folder


def test_a_missing_mesher_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tetgen", None)  # import tetgen -> ImportError
    with pytest.raises(ShapeAtlasError) as exc:
        require_mesher("--volume-mesh")
    assert str(exc.value) == ("--volume-mesh needs the optional mesher: "
                              "pip install 'shapeatlas[volume]'")
    with pytest.raises(ShapeAtlasError, match="pip install 'shapeatlas.volume.'"):
        tetrahedralize(_sphere(1))


def test_a_mesher_that_hangs_is_killed_and_the_next_surface_still_meshes(monkeypatch):
    pytest.importorskip("tetgen")
    from shapeatlas.mesh import volume

    hanging = volume._WORKER.replace("    try:\n        nodes", "    import time\n"
                                     "    if len(req['faces']) < 100: time.sleep(60)\n"
                                     "    try:\n        nodes", 1)
    assert hanging != volume._WORKER
    monkeypatch.setattr(volume, "_WORKER", hanging)
    monkeypatch.setattr(volume, "MESH_TIMEOUT_S", 1.0)
    with Tetrahedralizer() as mesher:
        with pytest.raises(MeshError, match="did not finish within 1 s"):
            mesher(_sphere(1))  # 80 faces: the child sleeps
        points, tets = mesher(_sphere(2))  # 320 faces: a fresh child meshes it
    assert len(tets) > 100
