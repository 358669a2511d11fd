"""A fit's prepared training shapes on disk (`shapeatlas.data.prepared`) and the groomed folder
read one mesh at a time (`GroomedMeshes`)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import trimesh
from shapes import groomed_lv_cohort

from shapeatlas.data.cache import DiskCache
from shapeatlas.data.prepared import PreparedMeshes
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh import remesh
from shapeatlas.mesh.core import Mesh, as_meshes
from shapeatlas.mesh.groom import GroomedMeshes, load_groomed


def cylinders(n: int) -> list[Mesh]:
    """Cylinders of different heights: long side triangles that `even_out` splits."""
    out = []
    for i in range(n):
        t = trimesh.creation.cylinder(radius=5.0, height=20.0 + 3 * i, sections=24)
        out.append(Mesh(t.vertices, t.faces, name=f"cyl_{i}"))
    return out


def test_each_shape_is_prepared_once_and_read_back_as_even_out_made_it(tmp_path, monkeypatch,
                                                                      caplog):
    source = cylinders(4)
    calls = []
    real = remesh.even_out
    monkeypatch.setattr("shapeatlas.data.prepared.even_out",
                        lambda m: calls.append(m.name) or real(m))
    prepared = PreparedMeshes(source, DiskCache(tmp_path), even_edges=True)
    assert calls == [m.name for m in source]
    assert len(prepared) == 4 and prepared.names == [m.name for m in source]
    assert len(list(tmp_path.rglob("*.npz"))) == 4
    for m, p in zip(source, prepared):
        want = real(m)
        assert p.name == m.name and p.n_vertices > m.n_vertices
        assert np.array_equal(p.vertices, want.vertices) and np.array_equal(p.faces, want.faces)
    assert prepared[-1].name == "cyl_3" and [m.name for m in prepared[1:3]] == ["cyl_1", "cyl_2"]
    with pytest.raises(IndexError):
        prepared[4]
    # Reading never prepares again; a second store on the same folder (a resumed fit) finds
    # every shape there.
    prepared[0], prepared[0]
    with caplog.at_level(logging.INFO):
        again = PreparedMeshes(source, DiskCache(tmp_path), even_edges=True)
    assert calls == [m.name for m in source] and "4 found there already" in caplog.text
    assert np.array_equal(again[2].vertices, prepared[2].vertices)
    # Without evening out, the shapes are kept as they are, under other keys.
    plain = PreparedMeshes(source, DiskCache(tmp_path), even_edges=False)
    assert np.array_equal(plain[1].vertices, source[1].vertices)
    assert len(list(tmp_path.rglob("*.npz"))) == 8


def test_a_lost_or_damaged_shape_is_prepared_again_and_a_changed_source_is_refused(tmp_path):
    source = cylinders(3)
    prepared = PreparedMeshes(source, DiskCache(tmp_path), even_edges=True)
    want = prepared[1].vertices
    for path in tmp_path.rglob("*.npz"):
        path.write_bytes(b"damaged")
    assert np.array_equal(prepared[1].vertices, want)
    # Lost again, a shape whose source changed since is refused, by name.
    for path in tmp_path.rglob("*.npz"):
        path.unlink()
    source[2] = Mesh(source[2].vertices * 2.0, source[2].faces, name="cyl_2")
    with pytest.raises(ShapeAtlasError, match="cyl_2: the training shape changed"):
        prepared[2]


def test_a_groomed_folder_is_read_one_mesh_at_a_time(tmp_path, monkeypatch):
    meshes, manifest = groomed_lv_cohort(tmp_path, n=3, seed=1)
    lazy, again = load_groomed(tmp_path / "groomed", lazy=True)
    assert isinstance(lazy, GroomedMeshes) and again == manifest
    assert lazy.names == [m.name for m in meshes] and len(lazy) == 3
    reads = []
    real = GroomedMeshes._read
    monkeypatch.setattr(GroomedMeshes, "_read", lambda self, i: reads.append(i) or real(self, i))
    assert as_meshes(lazy, lazy=True) is lazy and reads == []
    assert np.array_equal(lazy[1].vertices, meshes[1].vertices) and reads == [1]
    assert [m.name for m in as_meshes(lazy)] == lazy.names and reads == [1, 0, 1, 2]
    # A file that went bad after the folder was opened is named when it is read.
    (tmp_path / "groomed" / manifest["shapes"][2]["output"]).write_bytes(b"")
    with pytest.raises(ShapeAtlasError, match="empty"):
        lazy[2]
