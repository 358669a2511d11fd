"""Tests of label-map reading and surface extraction on ellipsoids drawn in code.

The label maps mimic clinical thick-slice segmentations: 1 x 1 x 5 mm voxels, an x flip and an
offset in the affine (and an oblique rotation in one test), so any confusion of index and world
space, spacing, orientation or face winding shows up as a wrong volume, centre or sign.
"""

from __future__ import annotations

import nibabel as nib
import nrrd
import numpy as np
import pytest

from shapeatlas.errors import MeshError
from shapeatlas.mesh.labelmap import (
    label_surface,
    read_label_map,
    surface_from_label_file,
)

SPACING = np.array([1.0, 1.0, 5.0])
SHAPE = (64, 56, 14)
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _affine(*, rotation=None):
    """Voxel -> world RAS mm: x flipped, 1 x 1 x 5 mm, offset; optionally rotated (oblique)."""
    a = np.diag([-SPACING[0], SPACING[1], SPACING[2], 1.0])
    a[:3, 3] = [40.0, -25.0, 100.0]
    if rotation is not None:
        a[:3, :3] = rotation @ a[:3, :3]
    return a


def _voxel_centre(affine):
    """World position of a point near the middle of the grid, off the voxel lattice."""
    ijk = (np.array(SHAPE) - 1) / 2 + np.array([0.3, -0.4, 0.27])
    return affine[:3, :3] @ ijk + affine[:3, 3]


def _ellipsoid_labels(affine, centre, radii, *, value=1, shape=SHAPE):
    """(I, J, K) uint8 map: `value` where the voxel centre lies in the axis-aligned ellipsoid."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    inside = (((xyz - centre) / radii) ** 2).sum(axis=-1) <= 1.0
    return np.where(inside, value, 0).astype(np.uint8)


def _radial_errors(mesh, centre, radius):
    return np.linalg.norm(mesh.vertices - centre, axis=1) - radius


def _save_nifti(path, labels, affine):
    nib.save(nib.Nifti1Image(labels, affine), str(path))


def _save_nrrd_lps(path, labels, affine):
    """Store the way 3D Slicer does: LPS space, one row per axis in 'space directions'."""
    lps = LPS_FROM_RAS @ affine
    header = {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,
        "space origin": lps[:3, 3],
        "kinds": ["domain"] * 3,
    }
    nrrd.write(str(path), labels, header)


# ------------------------------------------------------------------------------ accuracy
def test_ellipsoid_from_nifti_and_nrrd(tmp_path):
    affine = _affine()
    centre = _voxel_centre(affine)
    radii = np.array([22.0, 16.0, 24.0])
    labels = _ellipsoid_labels(affine, centre, radii, value=3)
    _save_nifti(tmp_path / "seg.nii.gz", labels, affine)
    _save_nrrd_lps(tmp_path / "seg.nrrd", labels, affine)

    meshes = []
    for name in ("seg.nii.gz", "seg.nrrd"):
        lab, aff = read_label_map(tmp_path / name)
        np.testing.assert_array_equal(lab, labels)
        np.testing.assert_allclose(aff, affine, atol=1e-5)  # NRRD: LPS converted back to RAS
        mesh = surface_from_label_file(tmp_path / name)
        assert mesh.name == str(tmp_path / name)
        assert mesh.is_watertight and mesh.n_components == 1
        assert mesh.signed_volume > 0  # outward normals despite the x flip
        analytic = 4 / 3 * np.pi * radii.prod()
        assert mesh.volume == pytest.approx(analytic, rel=0.03)
        assert np.linalg.norm(mesh.centroid - centre) < 1.0
        meshes.append(mesh)
    np.testing.assert_allclose(meshes[0].vertices, meshes[1].vertices, atol=1e-4)


def test_thick_slice_staircase_is_smoothed_away():
    """20 mm ball at 1 x 1 x 5 mm: radial error std 0.8 mm raw, about 0.27 mm smoothed."""
    affine = _affine()
    centre = _voxel_centre(affine)
    labels = _ellipsoid_labels(affine, centre, 20.0)
    smooth = label_surface(labels, affine)
    raw = label_surface(labels, affine, smoothing_mm=0)
    err_smooth = _radial_errors(smooth, centre, 20.0)
    err_raw = _radial_errors(raw, centre, 20.0)
    assert err_raw.std() > 0.6  # the terraces are really there without smoothing
    assert err_smooth.std() < 0.35
    assert abs(err_smooth.mean()) < 0.3  # no shrinkage: the level preserves the voxel volume
    assert smooth.volume == pytest.approx(4 / 3 * np.pi * 20.0**3, rel=0.03)
    assert smooth.is_watertight and raw.is_watertight


def test_oblique_mirrored_affine():
    rot = np.array([[0.9, -0.3, 0.3146], [0.3824, 0.8878, -0.2560], [-0.2025, 0.3480, 0.9154]])
    rot, _ = np.linalg.qr(rot)  # an exact rotation close to the one written above
    rot = rot * np.sign(np.diag(rot))
    affine = _affine(rotation=rot)
    assert np.linalg.det(affine[:3, :3]) < 0
    centre = _voxel_centre(affine)
    labels = _ellipsoid_labels(affine, centre, np.array([21.0, 17.0, 19.0]))
    mesh = label_surface(labels, affine, name="oblique")
    assert mesh.is_watertight and mesh.signed_volume > 0
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * 21 * 17 * 19, rel=0.03)
    assert np.linalg.norm(mesh.centroid - centre) < 1.0


def test_label_choice_and_largest_component():
    affine = _affine()
    centre = _voxel_centre(affine)
    labels = _ellipsoid_labels(affine, centre, 18.0, value=1)
    labels[2:6, 2:6, 1:3] = 2  # a 4 x 4 x 10 mm box of another label, far from the ball
    ball = 4 / 3 * np.pi * 18.0**3
    mesh_any = label_surface(labels, affine)  # all non-zero: only the larger piece survives
    assert mesh_any.n_components == 1 and mesh_any.volume == pytest.approx(ball, rel=0.03)
    mesh_box = label_surface(labels, affine, label=2, smoothing_mm=0)
    assert mesh_box.is_watertight and mesh_box.volume == pytest.approx(160.0, rel=0.15)
    with pytest.raises(MeshError, match=r"my seg: label 7 does not occur \(labels present: 1, 2\)"):
        label_surface(labels, affine, label=7, name="my seg")


def test_label_touching_the_border_still_closes():
    """A box touching five image faces gives the same closed surface as the box well inside."""
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    at_border = np.zeros((30, 30, 15), dtype=np.int16)
    at_border[:12, :, :8] = 5
    inside = np.zeros((40, 40, 25), dtype=np.int16)
    inside[5:17, 5:35, 5:13] = 5
    mesh = label_surface(at_border, affine)
    ref = label_surface(inside, affine)
    assert mesh.is_watertight and mesh.signed_volume > 0
    np.testing.assert_allclose(mesh.vertices + [5.0, 5.0, 10.0], ref.vertices, atol=1e-4)
    # 12 x 30 x 16 mm of voxels; the 1 mm smoothing rounds its edges and corners a little.
    assert mesh.volume == pytest.approx(12 * 30 * 16, rel=0.05)
    # The surface reaches about half a voxel beyond the outermost voxel centres, never further.
    assert mesh.bounds[0].min() > -1.5 and mesh.bounds[1][1] < 29 + 1.5


def test_nrrd_spaces_and_nifti_units(tmp_path):
    labels = np.zeros((8, 8, 8), dtype=np.uint8)
    labels[2:6, 2:6, 2:6] = 1
    ras = {"space": "right-anterior-superior", "space directions": np.diag([2.0, 2.0, 3.0]),
           "space origin": np.array([1.0, 2.0, 3.0])}
    nrrd.write(str(tmp_path / "ras.nrrd"), labels, ras)
    _, aff = read_label_map(tmp_path / "ras.nrrd")
    np.testing.assert_allclose(aff, [[2, 0, 0, 1], [0, 2, 0, 2], [0, 0, 3, 3], [0, 0, 0, 1]])
    nrrd.write(str(tmp_path / "plain.nrrd"), labels, {"spacings": [0.5, 0.5, 2.0]})
    _, aff = read_label_map(tmp_path / "plain.nrrd")
    np.testing.assert_allclose(aff, np.diag([0.5, 0.5, 2.0, 1.0]))
    img = nib.Nifti1Image(labels, np.diag([0.001, 0.001, 0.002, 1.0]))
    img.header.set_xyzt_units("meter")
    nib.save(img, str(tmp_path / "metres.nii"))
    _, aff = read_label_map(tmp_path / "metres.nii")
    np.testing.assert_allclose(aff, np.diag([1.0, 1.0, 2.0, 1.0]), atol=1e-6)


# ------------------------------------------------------------------------------ bad input
def test_bad_files_raise_mesh_error_naming_the_file(tmp_path):
    cases = {}
    cases["missing.nii.gz"] = ("no such file", None)
    (tmp_path / "text.nii.gz").write_text("not an image")
    cases["text.nii.gz"] = ("could not be read as NIfTI", None)
    (tmp_path / "text.nrrd").write_text("not an image")
    cases["text.nrrd"] = ("could not be read as NRRD", None)
    (tmp_path / "seg.mha").write_text("x")
    cases["seg.mha"] = ("unsupported label-map format", None)
    nib.save(nib.Nifti1Image(np.ones((4, 4), np.uint8), np.eye(4)), str(tmp_path / "flat.nii"))
    cases["flat.nii"] = ("3-D", None)
    nrrd.write(str(tmp_path / "layers.nrrd"), np.ones((2, 4, 4, 4), np.uint8))
    cases["layers.nrrd"] = ("3-D", None)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(tmp_path / "empty.nii"))
    cases["empty.nii"] = ("empty", None)
    ct = np.random.default_rng(0).normal(size=(4, 4, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(ct, np.eye(4)), str(tmp_path / "ct.nii.gz"))
    cases["ct.nii.gz"] = ("not a label map", None)
    for name, (reason, _) in cases.items():
        with pytest.raises(MeshError, match=reason) as info:
            surface_from_label_file(tmp_path / name)
        assert info.value.source == str(tmp_path / name), name


def test_float_labels_that_are_integral_are_accepted(tmp_path):
    labels = np.zeros((10, 10, 10), dtype=np.float32)
    labels[3:7, 3:7, 3:7] = 2.0
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(tmp_path / "f.nii"))
    lab, _ = read_label_map(tmp_path / "f.nii")
    assert np.issubdtype(lab.dtype, np.integer) and set(np.unique(lab)) == {0, 2}


def test_label_surface_argument_errors():
    good = np.zeros((6, 6, 6), dtype=np.uint8)
    good[2:4, 2:4, 2:4] = 1
    with pytest.raises(MeshError, match="arr: labels must be a 3-D array"):
        label_surface(np.ones((4, 4)), np.eye(4), name="arr")
    with pytest.raises(MeshError, match="singular"):
        label_surface(good, np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(MeshError, match="4x4"):
        label_surface(good, np.eye(3))
    with pytest.raises(MeshError, match="smoothing_mm"):
        label_surface(good, np.eye(4), smoothing_mm=-1.0)
    with pytest.raises(MeshError, match="no voxel is labelled"):
        label_surface(np.zeros((4, 4, 4)), np.eye(4))
