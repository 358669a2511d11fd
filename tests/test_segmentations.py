"""Label maps on the command line: `info` and `groom` on tiny synthetic segmentations.

The label maps are drawn in code on thick slices (1.5 x 1.5 x 4-5 mm), with the affines chosen
so that world x (RAS+) is known: the blob at larger x is on the patient's right. Both "kidneys"
share label 1, as in KiTS23; label 2 is a "tumour" on the right one.
"""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import nrrd
import numpy as np
import pytest
from scipy.spatial import cKDTree
from shapes import asymmetric_blob

from shapeatlas.cli import main
from shapeatlas.mesh.io import read_mesh, write_mesh
from shapeatlas.mesh.segmentation import MIRROR_X

SHAPE = (72, 36, 14)
SPACING = (1.5, 1.5, 4.0)


def _affine(*, flip_x: bool = False) -> np.ndarray:
    """Voxel -> RAS mm, centred on x = 0 so voxel centres are mirror images across x = 0."""
    dx, dy, dz = SPACING
    a = np.diag([-dx if flip_x else dx, dy, dz, 1.0])
    a[:3, 3] = [(1 if flip_x else -1) * (SHAPE[0] - 1) / 2 * dx, -25.0, -30.0]
    return a


def _world(affine: np.ndarray, shape=SHAPE) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _right_kidney(xyz: np.ndarray) -> np.ndarray:
    """An asymmetric blob on the patient's right (x > 0): an ellipsoid with a lateral bump."""
    body = (((xyz - [30.0, 0.0, 0.0]) / [11.0, 9.0, 18.0]) ** 2).sum(-1) <= 1
    bump = (((xyz - [40.0, 5.0, 6.0]) / 6.0) ** 2).sum(-1) <= 1
    return body | bump


def _kidneys(affine: np.ndarray, *, tumour: bool = True) -> np.ndarray:
    """Label 1: a right kidney and its exact mirror image on the left; label 2: a tumour."""
    xyz = _world(affine)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[_right_kidney(xyz) | _right_kidney(xyz * [-1.0, 1.0, 1.0])] = 1
    if tumour:
        labels[(((xyz - [33.0, -7.0, -4.0]) / 5.0) ** 2).sum(-1) <= 1] = 2
    return labels


def _save(path, labels, affine, *, oriented: bool = True):
    img = nib.Nifti1Image(labels, affine)
    if not oriented:
        img.set_sform(affine, code=0)
        img.set_qform(affine, code=0)
    nib.save(img, str(path))
    return path


def _voxel_ml(labels, affine, values) -> float:
    return np.isin(labels, values).sum() * abs(np.linalg.det(affine[:3, :3])) / 1000.0


def _manifest(folder) -> dict:
    return json.loads((folder / "groom.json").read_text())


def _one_line_per_problem(text: str, fragments: list[str]) -> None:
    for fragment in fragments:
        lines = [ln for ln in text.splitlines() if fragment in ln]
        assert len(lines) == 1, (fragment, text)
    assert "Traceback" not in text


# ------------------------------------------------------------------------------ conventions
def test_ras_x_grows_to_the_patients_right():
    # nibabel labels the positive end of each world axis: the identity affine is R, A, S.
    assert nib.aff2axcodes(np.eye(4)) == ("R", "A", "S")
    assert nib.aff2axcodes(_affine(flip_x=True)) == ("L", "A", "S")


# ------------------------------------------------------------------------------------ info
def test_info_describes_labels_components_and_sides(tmp_path, capsys):
    a = _affine(flip_x=True)
    labels = _kidneys(a)
    f = _save(tmp_path / "case_1.nii.gz", labels, a)
    assert main(["info", str(f), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["kind"] == "label map" and row["shape"] == list(SHAPE)
    assert row["spacing_mm"] == pytest.approx(SPACING)
    assert row["orientation"] == "LAS" and row["midline_x_mm"] == pytest.approx(0.0)
    voxel_ml = np.prod(SPACING) / 1000.0
    assert [(r["label"], r["voxels"]) for r in row["labels"]] == [
        (1, int((labels == 1).sum())), (2, int((labels == 2).sum()))]
    assert row["labels"][0]["volume_ml"] == pytest.approx((labels == 1).sum() * voxel_ml)
    comps = {c["name"]: c for c in row["components"]}
    assert set(comps) == {"case_1_left", "case_1_right"}
    assert comps["case_1_right"]["side"] == "right" and comps["case_1_right"]["component"] == 1
    assert comps["case_1_right"]["centroid_mm"][0] > 20
    assert comps["case_1_left"]["centroid_mm"][0] < -20
    # The tumour is part of the right kidney's component: labels 1 and 2 are merged.
    left_ml = comps["case_1_left"]["volume_ml"]
    assert comps["case_1_right"]["volume_ml"] == pytest.approx(
        _voxel_ml(labels, a, [1, 2]) - left_ml)

    # --labels 2: the tumour alone, on the right.
    assert main(["info", str(f), "--labels", "2"]) == 0
    out = capsys.readouterr().out
    assert "components of label 2 (26-connected): 1 of 1" in out
    assert "case_1_right: 0.54 mL (60 voxels), patient's right" in out
    assert "surfaces: not made (--surface" in out
    # --surface makes the surfaces as groom would: within 2% of their voxels, valid.
    assert main(["info", str(f), "--labels", "1", "--surface", "--target-vertices", "300"]) == 0
    out = capsys.readouterr().out
    for side in ("left", "right"):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"  surface case_1_{side}"))
        assert "300 vertices" in line and "mesh check valid" in line
        assert abs(float(line.split("volume ")[1].split("%")[0])) < 2.0


def test_info_bad_label_maps_one_line_each(tmp_path, capsys):
    a = _affine()
    files = {
        "empty.nii.gz": ("empty", _save(tmp_path / "empty.nii.gz", np.zeros(SHAPE, np.uint8), a)),
        "four_d.nii.gz": ("3-D image", _save(tmp_path / "four_d.nii.gz",
                                             np.ones((*SHAPE[:3], 2), np.uint8), a)),
    }
    (tmp_path / "corrupt.nii.gz").write_bytes(gzip.compress(bytes(range(256)) * 4)[:100])
    files["corrupt.nii.gz"] = ("could not be read as NIfTI", tmp_path / "corrupt.nii.gz")
    _save(tmp_path / "kidneys.nii.gz", _kidneys(a), a)
    files["kidneys.nii.gz"] = ("no voxel has label 7", tmp_path / "kidneys.nii.gz")
    assert main(["info", *(str(p) for _, p in files.values()), "--labels", "7"]) == 1
    captured = capsys.readouterr()
    _one_line_per_problem(captured.out, [reason for reason, _ in files.values()])
    assert captured.err == ""
    for name in files:
        assert sum(name in ln for ln in captured.out.splitlines()) == 1


# ----------------------------------------------------------------------------------- groom
def test_groom_each_names_sides_keeps_volume_and_mirrors(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    las = _affine(flip_x=True)
    _save(src / "case_1.nii.gz", _kidneys(las), las)
    # The same segmentation as a 3D Slicer NRRD: LPS space, one row per axis.
    ras = _affine()
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ras
    labels2 = _kidneys(ras, tumour=False)
    nrrd.write(str(src / "case_2.nrrd"), labels2,
               {"space": "left-posterior-superior", "space directions": lps[:3, :3].T,
                "space origin": lps[:3, 3], "kinds": ["domain"] * 3})
    args = ["groom", str(src), "--components", "each", "--target-vertices", "400",
            "--jobs", "1", "-q", "--align", "none", "--no-center", "--no-cap-twist"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    out = capsys.readouterr().out
    assert "groomed 4 shapes from 2 files (2 label maps)" in out
    assert "2 left, 2 right, 0 side unknown; 0 mirrored" in out
    plain = _manifest(tmp_path / "plain")
    shapes = {s["name"]: s for s in plain["shapes"]}
    assert set(shapes) == {"case_1_left", "case_1_right", "case_2_left", "case_2_right"}
    for name, s in shapes.items():
        lm = s["label_map"]
        assert lm["side"] == name.split("_")[-1] and lm["n_components"] == 2
        assert lm["labels"] == ([1, 2] if name.startswith("case_1") else [1])
        assert s["source"].endswith("case_1.nii.gz" if name.startswith("case_1") else "case_2.nrrd")
        assert not s["mirrored"] and s["n_vertices"] == 400 and s["validity"]["valid"]
        # The surface keeps the labelled voxels' volume within 2%, on 4 mm slices.
        assert s["volume_ml"] == pytest.approx(lm["voxel_volume_ml"], rel=0.02)
        assert s["volume_check"]["verdict"] == "ok"
        assert s["volume_check"]["input_volume_from"] == "voxels"
    assert shapes["case_2_left"]["label_map"]["voxel_volume_ml"] == pytest.approx(
        _voxel_ml(labels2, ras, [1]) / 2)
    left = read_mesh(tmp_path / "plain" / "case_2_left.ply")
    right = read_mesh(tmp_path / "plain" / "case_2_right.ply")
    assert left.centroid[0] < -20 and right.centroid[0] > 20  # RAS+ x grows to the right

    assert main([*args, "--mirror", "left", "--out", str(tmp_path / "mirrored")]) == 0
    assert "2 mirrored" in capsys.readouterr().out
    mirrored = {s["name"]: s for s in _manifest(tmp_path / "mirrored")["shapes"]}
    assert [n for n, s in sorted(mirrored.items()) if s["mirrored"]] == [
        "case_1_left", "case_2_left"]
    t = np.asarray(mirrored["case_2_left"]["transform"])
    np.testing.assert_allclose(t, MIRROR_X, atol=1e-9)  # no alignment: the mirror alone
    flipped = read_mesh(tmp_path / "mirrored" / "case_2_left.ply")
    # x -> -x (decimated after the mirror, so the triangles may differ a little)
    gap = cKDTree(left.vertices * [-1, 1, 1]).query(flipped.vertices)[0]
    assert gap.mean() < 0.2
    assert flipped.volume == pytest.approx(left.volume, rel=0.005)  # faces flipped: outward
    assert all(s["validity"]["valid"] for s in mirrored.values())
    # The left kidney is the right one's mirror image: mirrored, it lies on the right one.
    gap = cKDTree(right.vertices).query(flipped.vertices)[0]
    assert gap.mean() < 0.6 and flipped.centroid == pytest.approx(right.centroid, abs=0.3)


def test_labels_merge_missing_labels_and_mixed_folder(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    a = _affine()
    xyz = _world(a)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    ball = ((xyz - [0.0, 0.0, 0.0]) ** 2).sum(-1) <= 16.0**2
    labels[ball & (xyz[..., 0] < -4)] = 1  # three labels side by side make one organ
    labels[ball & (np.abs(xyz[..., 0]) <= 4)] = 2
    labels[ball & (xyz[..., 0] > 4)] = 3
    _save(src / "organ.nii.gz", labels, a)
    write_mesh(asymmetric_blob(), src / "blob.ply")
    assert main(["groom", str(src), "--out", str(tmp_path / "g"), "--labels", "1,2,3",
                 "--target-vertices", "400", "--jobs", "1", "-q", "--align", "none"]) == 0
    out = capsys.readouterr().out
    assert "groomed 2 shapes from 2 files (1 label maps)" in out
    shapes = {s["name"]: s for s in _manifest(tmp_path / "g")["shapes"]}
    assert set(shapes) == {"organ", "blob"} and "label_map" not in shapes["blob"]
    organ = shapes["organ"]
    assert organ["label_map"]["labels"] == [1, 2, 3]
    assert organ["label_map"]["voxel_volume_ml"] == pytest.approx(_voxel_ml(labels, a, [1, 2, 3]))
    assert organ["volume_ml"] == pytest.approx(organ["label_map"]["voxel_volume_ml"], rel=0.02)

    # --labels 1,3: two pieces, the largest kept; --labels 9: the file skipped, the run goes on.
    assert main(["groom", str(src), "--out", str(tmp_path / "g13"), "--labels", "1,3",
                 "--target-vertices", "400", "--jobs", "1", "-q", "--align", "none"]) == 0
    organ = {s["name"]: s for s in _manifest(tmp_path / "g13")["shapes"]}["organ"]
    assert organ["label_map"]["labels"] == [1, 3] and organ["label_map"]["n_components"] == 2
    assert organ["label_map"]["voxel_volume_ml"] == pytest.approx(
        max(_voxel_ml(labels, a, [1]), _voxel_ml(labels, a, [3])))
    assert main(["groom", str(src), "--out", str(tmp_path / "g9"), "--labels", "9",
                 "--target-vertices", "400", "--jobs", "1", "-q", "--align", "none"]) == 1
    out = capsys.readouterr().out
    _one_line_per_problem(out, ["organ.nii.gz: no voxel has label 9 (labels present: 1, 2, 3)"])
    assert "--labels and --components apply to label maps only" in out
    assert [s["name"] for s in _manifest(tmp_path / "g9")["shapes"]] == ["blob"]


def test_groom_bad_label_maps_are_skipped_with_one_line(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    a = _affine()
    _save(src / "good.nii.gz", _kidneys(a), a)
    _save(src / "empty.nii.gz", np.zeros(SHAPE, np.uint8), a)
    _save(src / "four_d.nii", np.ones((8, 8, 8, 3), np.uint8), a)
    (src / "corrupt.nii.gz").write_bytes(b"\x1f\x8b" + bytes(range(200)))
    _save(src / "unoriented.nii.gz", _kidneys(a), a, oriented=False)
    assert main(["groom", str(src), "--out", str(tmp_path / "g"), "--components", "each",
                 "--target-vertices", "300", "--jobs", "1", "-q", "--align", "none"]) == 1
    captured = capsys.readouterr()
    _one_line_per_problem(captured.out, [
        "skipped: " + str(src / "empty.nii.gz") + ": the label map",
        "skipped: " + str(src / "four_d.nii") + ": a label map must be a 3-D image",
        "skipped: " + str(src / "corrupt.nii.gz") + ": could not be read as NIfTI",
        "note: " + str(src / "unoriented.nii.gz") + ": the header states no orientation"])
    assert "Traceback" not in captured.err
    names = sorted(s["name"] for s in _manifest(tmp_path / "g")["shapes"])
    # Without orientation the components are named by size, and their side is unknown.
    assert names == ["good_left", "good_right", "unoriented_c1", "unoriented_c2"]
    # Mirroring needs the side: the unoriented file is left out, with one line.
    assert main(["groom", str(src), "--out", str(tmp_path / "m"), "--mirror", "right",
                 "--target-vertices", "300", "--jobs", "1", "-q", "--align", "none"]) == 1
    out = capsys.readouterr().out
    _one_line_per_problem(out, [str(src / "unoriented.nii.gz") + ": the header states no "
                                "orientation, so the patient's right side cannot be told"])
    good = _manifest(tmp_path / "m")["shapes"]
    assert [(s["name"], s["mirrored"], s["label_map"]["side"]) for s in good] == [
        ("good", True, "right")]


def test_two_components_on_one_side_are_named_by_size(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    a = _affine()
    xyz = _world(a)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[((xyz - [20.0, 0.0, -15.0]) ** 2).sum(-1) <= 10.0**2] = 1
    labels[((xyz - [25.0, 0.0, 22.0]) ** 2).sum(-1) <= 12.0**2] = 1
    labels[((xyz - [-25.0, 0.0, 0.0]) ** 2).sum(-1) <= 3.5**2] = 1  # a speck: dropped
    _save(src / "two.nii.gz", labels, a)
    assert main(["groom", str(src), "--out", str(tmp_path / "g"), "--components", "each",
                 "--target-vertices", "300", "--jobs", "1", "-q", "--align", "none"]) == 0
    out = capsys.readouterr().out
    assert "note: " + str(src / "two.nii.gz") + ": 2 components lie on the patient's right" in out
    shapes = {s["name"]: s for s in _manifest(tmp_path / "g")["shapes"]}
    assert set(shapes) == {"two_c1", "two_c2"}
    assert shapes["two_c1"]["volume_ml"] > shapes["two_c2"]["volume_ml"]
    assert [shapes[n]["label_map"]["side"] for n in ("two_c1", "two_c2")] == ["right", "right"]
    # --min-component 0 keeps the speck too, on the left; two are still on the right, so all
    # three are named by size (the speck may fail groom's check: it is a few voxels).
    assert main(["groom", str(src), "--out", str(tmp_path / "g0"), "--components", "each",
                 "--min-component", "0", "--target-vertices", "300", "--jobs", "1", "-q",
                 "--align", "none", "--keep-failed"]) in (0, 1)
    names = {s["name"] for s in _manifest(tmp_path / "g0")["shapes"]} | {
        f["name"] for f in _manifest(tmp_path / "g0")["failed"]}
    assert names == {"two_c1", "two_c2", "two_c3"}


@pytest.mark.parametrize("spacing", [(0.8, 0.8, 5.0), (1.0, 3.0, 6.0)])
def test_thick_slice_volumes_within_two_percent(tmp_path, spacing, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shape = (int(80 / spacing[0]), int(70 / spacing[1]), int(90 / spacing[2]))
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = -(np.array(shape) - 1) / 2 * np.array(spacing)
    xyz = _world(a, shape)
    for k, radii in enumerate([(22.0, 16.0, 30.0), (14.0, 11.0, 19.0)]):
        labels = ((((xyz - [2.0, -1.0, 3.0]) / radii) ** 2).sum(-1) <= 1).astype(np.uint8)
        _save(src / f"ellipsoid_{k}.nii.gz", labels, a)
    assert main(["groom", str(src), "--out", str(tmp_path / "g"), "--jobs", "1", "-q",
                 "--align", "none", "--target-vertices", "800"]) == 0
    for s in _manifest(tmp_path / "g")["shapes"]:
        assert s["volume_ml"] == pytest.approx(s["label_map"]["voxel_volume_ml"], rel=0.02)
        assert s["validity"]["valid"]


def test_label_options_are_checked(capsys):
    for argv, fragment in ((["--labels", "1,x"], "separated by commas"),
                           (["--labels", "0,1"], "background"),
                           (["--min-component", "1.5"], "from 0 to 1"),
                           (["--mirror", "up"], "invalid choice"),
                           (["--components", "all"], "invalid choice")):
        with pytest.raises(SystemExit) as ex:
            main(["groom", "in", "--out", "out", *argv])
        assert ex.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and fragment in err


def test_fit_grooms_a_folder_of_label_maps(tmp_path):
    from shapeatlas.runs.fit import load_cohort
    from shapeatlas.training.config import FitConfig

    src = tmp_path / "in"
    src.mkdir()
    a = _affine()
    for k in range(2):
        _save(src / f"case_{k}.nii.gz", _kidneys(a, tumour=bool(k)), a)
    (tmp_path / "run").mkdir()
    meshes, info = load_cohort(src, tmp_path / "run", FitConfig(grooming={"target_vertices": 300}))
    assert info["groomed_by_fit"] and not info["failed"]
    assert [m.n_vertices for m in meshes] == [300, 300]
    manifest = _manifest(tmp_path / "run" / "groomed")
    # fit's defaults: every non-zero label, the largest component (case_0's two kidneys are
    # mirror images of one size: the first in index order, the left, counts as the largest).
    assert [(s["name"], s["label_map"]["side"]) for s in manifest["shapes"]] == [
        ("case_0", "left"), ("case_1", "right")]
