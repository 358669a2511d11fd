"""The mesh check as the verbs report it: info, groom, sample (--volume-mesh), correspond and
reconstruct."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import trimesh
from model_folders import save_cpd_model
from shapes import asymmetric_blob

from shapeatlas.cli import main
from shapeatlas.errors import MeshError
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.io import write_mesh


def _collinear_box() -> Mesh:
    """A closed 48-face box whose vertices were all moved onto one line (plus 1e-6 mm noise, so
    the total area is not exactly zero): every face is a needle of no area."""
    b = trimesh.creation.box(extents=[40.0, 40.0, 40.0]).subdivide()
    v = np.asarray(b.vertices)
    t = v @ [1.0, 0.37, 0.11]
    line = t[:, None] * [0.6, 0.3, 0.2] + 1e-6 * np.random.default_rng(0).standard_normal(v.shape)
    return Mesh(line, b.faces, name="flat")


def test_info_flags_a_collinear_mesh_and_exits_1(tmp_path, capsys):
    flat = write_mesh(_collinear_box(), tmp_path / "flat.ply")
    good = write_mesh(asymmetric_blob(), tmp_path / "blob.ply")
    assert main(["info", str(good)]) == 0
    out = capsys.readouterr().out
    assert "mesh check: valid" in out and "UNUSABLE" not in out
    assert main(["info", str(flat)]) == 1
    out = capsys.readouterr().out
    assert "UNUSABLE for shape modelling" in out and "mesh check: NOT valid" in out
    assert "of 48 faces are degenerate" in out
    assert main(["info", str(flat), "--json"]) == 1
    row = json.loads(capsys.readouterr().out)[0]
    assert row["unusable"] and not row["validity"]["valid"]


def test_groom_refuses_a_collinear_mesh_in_one_line_and_records_validity(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_mesh(_collinear_box(), src / "flat.ply")
    write_mesh(asymmetric_blob(), src / "blob.ply")
    assert main(["groom", str(src), "--out", str(tmp_path / "g"), "--align", "none", "-q"]) == 1
    out = capsys.readouterr().out
    skipped = [line for line in out.splitlines() if line.startswith("skipped:")]
    assert skipped == [f"skipped: {src / 'flat.ply'}: all vertices lie on one line: every face "
                       "is a needle of no area, no surface to model"]
    assert not (tmp_path / "g" / "flat.ply").exists()
    shapes = json.loads((tmp_path / "g" / "groom.json").read_text())["shapes"]
    assert [s["name"] for s in shapes] == ["blob"]
    assert shapes[0]["validity"]["valid"] and shapes[0]["validity"]["problems"] == []


def test_sample_records_the_check_and_counts_failures(tmp_path, capsys, monkeypatch):
    import shapeatlas.runs.sample as virtual

    run = save_cpd_model(tmp_path / "run")
    real = virtual.sample_validity

    def one_fails(model, vertices):
        rows = real(model, vertices)
        rows[0].update(valid=False, problems=["3 self-intersecting faces"])
        return rows

    monkeypatch.setattr(virtual, "sample_validity", one_fails)
    assert main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s"), "--device",
                 "cpu", "-q"]) == 0
    out = capsys.readouterr().out
    assert "1 of 4 shapes failed the mesh check (written anyway" in out
    s = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert s["n_invalid"] == 1 and s["volume_mesh"] is None
    assert (tmp_path / "s" / "sample_00000.ply").is_file()
    row = s["samples"][1]
    for key in ("volume_ml", "watertight", "self_intersecting_faces", "inverted_faces", "valid",
                "boundary_edges", "nonmanifold_edges", "nonmanifold_vertices",
                "misoriented_edges", "degenerate_faces", "problems"):
        assert key in row
    assert row["valid"] and row["problems"] == []


def test_sample_volume_mesh_writes_vtu_and_flags_refused_shapes(tmp_path, capsys, monkeypatch):
    pytest.importorskip("tetgen")
    import meshio

    from shapeatlas.mesh import volume

    run = save_cpd_model(tmp_path / "run")
    real = volume.Tetrahedralizer.__call__

    def refuse_one(self, mesh):
        if mesh.name == "sample_00002":
            raise MeshError(mesh.name, "the volume mesher (TetGen) refused it: for the test")
        return real(self, mesh)

    monkeypatch.setattr(volume.Tetrahedralizer, "__call__", refuse_one)
    out_dir = tmp_path / "s"
    assert main(["sample", str(run), "-n", "4", "--out", str(out_dir), "--volume-mesh",
                 "--device", "cpu", "-q"]) == 0
    out = capsys.readouterr().out
    assert "volume meshes (TetGen): 3 of 4 shapes written as NAME.vtu" in out
    assert "1 refused by the mesher" in out
    s = json.loads((out_dir / "samples.json").read_text())
    assert s["volume_mesh"] == {"mesher": "TetGen", "meshed": 3, "refused": 1}
    rows = s["samples"]
    assert [r["volume_mesh"] for r in rows] == [True, True, False, True]
    assert rows[2]["volume_mesh_reason"] == "the volume mesher (TetGen) refused it: for the test"
    assert not (out_dir / "sample_00002.vtu").exists()
    grid = meshio.read(out_dir / "sample_00000.vtu")
    assert len(grid.cells_dict["tetra"]) == rows[0]["tetrahedra"] > 0
    surface = meshio.read(out_dir / "sample_00000.ply")
    np.testing.assert_allclose(grid.points[:len(surface.points)], surface.points, atol=1e-5)


def test_sample_volume_mesh_without_the_mesher_is_one_line(tmp_path, capsys, monkeypatch):
    run = save_cpd_model(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "tetgen", None)
    assert main(["sample", str(run), "-n", "2", "--out", str(tmp_path / "s"),
                 "--volume-mesh", "-q"]) == 1
    err = capsys.readouterr().err
    assert err == ("shapeatlas: error: --volume-mesh needs the optional mesher: "
                   "pip install 'shapeatlas[volume]'\n")
    assert not (tmp_path / "s").exists()


def test_correspond_and_reconstruct_record_the_check(tmp_path, capsys):
    run = save_cpd_model(tmp_path / "run")
    t = trimesh.creation.icosphere(subdivisions=2, radius=21.0)
    (tmp_path / "in").mkdir()
    src = write_mesh(Mesh(np.asarray(t.vertices) * [1.1, 1.0, 0.9], t.faces, name="egg"),
                     tmp_path / "in" / "egg.ply")
    assert main(["correspond", str(run), str(src), "--out", str(tmp_path / "c"),
                 "--device", "cpu", "-q"]) == 0
    z = np.load(tmp_path / "c" / "egg.npz", allow_pickle=False)
    assert bool(z["valid"]) == (len(z["problems"]) == 0)
    assert int(z["self_intersecting_faces"]) >= 0
    assert "wrote 1 correspondences" in capsys.readouterr().out
    assert main(["reconstruct", str(run), str(src), "--out", str(tmp_path / "r"),
                 "--device", "cpu"]) == 0
    rec = json.loads((tmp_path / "r" / "reconstruct.json").read_text())
    row = rec["shapes"][0]
    assert row["name"] == "egg" and row["valid"] == row["validity"]["valid"]
    assert row["problems"] == row["validity"]["problems"]
    assert "wrote 1 reconstructions" in capsys.readouterr().out


def test_sample_projects_a_crossing_decoder_output_onto_a_valid_mesh(tmp_path, capsys,
                                                                     monkeypatch):
    from shapeatlas.mesh.validity import mesh_validity
    from shapeatlas.models.generator import PCAGenerator
    from shapeatlas.runs.load import load_model

    run = save_cpd_model(tmp_path / "run")
    atlas = load_model(run, device="cpu").atlas_vertices_
    real = PCAGenerator.decode

    def first_pushed_through(self, z):
        out = real(self, z)
        top = np.argmax(out[0][:, 2])
        out[0][top] = out[0][top] * [1.0, 1.0, -1.2]  # the top vertex pushed out of the bottom
        return out

    monkeypatch.setattr(PCAGenerator, "decode", first_pushed_through)
    raw = load_model(run, device="cpu").sample(3, project=False)
    assert not mesh_validity(raw.vertices[0], raw.faces, reference=atlas).valid
    assert main(["sample", str(run), "-n", "3", "--out", str(tmp_path / "s"), "--device",
                 "cpu", "-q"]) == 0
    out = capsys.readouterr().out
    assert "1 of 3 decoded shapes were moved locally onto valid meshes" in out
    assert "failed the mesh check" not in out
    s = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert s["n_invalid"] == 0 and s["n_projected"] == 1
    first, second = s["samples"][0], s["samples"][1]
    assert first["valid"] and first["projection"]["changed_vertices"] > 0
    assert second["projection"] == {"changed_vertices": 0, "max_move_mm": 0.0,
                                    "mean_move_mm": 0.0, "rounds": 0}
