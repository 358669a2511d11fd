"""The cap-outline turn (`shapeatlas.mesh.cap`) and its place in grooming."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from shapeatlas.data.synthetic_lv import LVParams, triangulate_lv
from shapeatlas.mesh import cap as cap_alignment
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.groom import GroomOptions, groom_cohort


def lv(*, septal: float, seed: int, tilt=(0.05, 0.2), shift=(6.0, 1.0), bumps=True,
       n_vertices: int = 1200) -> Mesh:
    """A synthetic LV cavity in its domain frame: long axis z, septum at azimuth pi, a flat
    basal cap (tilted by `tilt`) whose outline is D-shaped (`septal` flattening)."""
    rng = np.random.default_rng(seed)
    p = LVParams(c_mm=70.0 + 5 * seed, b_mm=27.0, h_mm=24.0, apex_shift_mm=shift,
                 base_tilt=tilt, septal_flattening=septal,
                 bump_centers=((0.6, -0.7, -0.39),) if bumps else (),
                 bump_amplitudes_mm=(2.5,) if bumps else (),
                 bump_widths=(0.4,) if bumps else ())
    t = triangulate_lv(p, n_vertices=n_vertices, rng=rng)
    return Mesh(t.vertices, t.faces, name=f"lv{seed}")


def turned(mesh: Mesh, deg: float, axis=(0.0, 0.0, 1.0)) -> Mesh:
    r = Rotation.from_rotvec(np.radians(deg) * np.asarray(axis)).as_matrix()
    c = mesh.centroid
    return mesh.with_vertices((np.asarray(mesh.vertices) - c) @ r.T + c)


def test_planar_cap_finds_the_basal_plane_and_nothing_on_a_sphere():
    m = lv(septal=0.2, seed=0)
    cap = cap_alignment.planar_cap(m)
    assert cap is not None
    # The cap is the tilted plane z = h + 0.05 x + 0.2 y: its normal is (-0.05, -0.2, 1) up to
    # sign, and every cap vertex lies on it.
    n = np.array([-0.05, -0.2, 1.0]) / np.linalg.norm([-0.05, -0.2, 1.0])
    assert abs(cap.normal @ n) > np.cos(np.radians(0.5))
    offsets = (cap.outline - cap.outline.mean(axis=0)) @ n
    assert np.abs(offsets).max() < 1e-6
    assert 0.05 < cap.area_fraction < 0.3
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=30.0)
    assert cap_alignment.planar_cap(Mesh(sphere.vertices, sphere.faces)) is None


@pytest.mark.parametrize("deg", [-12.0, 7.0])
def test_cap_twist_undoes_a_turn_between_different_lvs(deg):
    # Two LVs of different length, septal flattening and apex shift, with one bump; both have
    # their septum at azimuth pi, so the turn that lines the second up with the first is -deg.
    ref = cap_alignment.CapReference.of(lv(septal=0.22, seed=0))
    other = lv(septal=0.14, seed=1, shift=(3.0, -2.0))
    m = cap_alignment.cap_twist(turned(other, deg), ref)
    assert m is not None
    got = Rotation.from_matrix(m[:3, :3]).as_rotvec()
    assert np.degrees(got @ ref.normal) == pytest.approx(-deg, abs=1.5)
    # A pure turn about (nearly) the cap's normal, through the mesh's centroid.
    assert np.degrees(np.linalg.norm(got)) == pytest.approx(abs(deg), abs=1.5)
    c = turned(other, deg).centroid
    np.testing.assert_allclose(m[:3, :3] @ c + m[:3, 3], c, atol=1e-9)


def test_cap_twist_leaves_round_caps_and_turns_beyond_its_window_alone():
    # A round annulus (no septal flattening) cannot set a turn.
    assert cap_alignment.CapReference.of(lv(septal=0.0, seed=0, tilt=(0.0, 0.0), bumps=False)) is None
    ref = cap_alignment.CapReference.of(lv(septal=0.22, seed=0))
    other = lv(septal=0.2, seed=1)
    assert cap_alignment.cap_twist(turned(other, 3.0), ref) is not None
    # Half a turn off: the alignment's basin is trusted, no turn is forced inside the window.
    assert cap_alignment.cap_twist(turned(other, 180.0), ref) is None
    # No cap at all.
    blob = trimesh.creation.icosphere(subdivisions=3, radius=30.0)
    assert cap_alignment.cap_twist(Mesh(blob.vertices, blob.faces), ref) is None


def _turn_about(m: np.ndarray, normal: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(m[:3, :3]).as_rotvec() @ normal))


def test_cap_twist_allows_for_the_stretch_of_a_different_basal_tilt(monkeypatch):
    # Both LVs have their septum at azimuth pi, so the true turn between them is 0. Read in its
    # own cap's plane, an annulus tilted 15 degrees (35 degrees of azimuth from the reference's
    # 12-degree tilt) is stretched along its tilt, which biases the rigid turn by a few degrees;
    # `linear_turn` takes the stretch out (what is left, 0.4-0.8 degrees here, the meshes' 45
    # outline vertices give whatever the tilt: 0.05-0.45 degrees between caps tilted alike).
    ref = cap_alignment.CapReference.of(lv(septal=0.22, seed=0))
    other = lv(septal=0.14, seed=1, tilt=(-0.1, 0.25), shift=(3.0, -2.0))
    m = cap_alignment.cap_twist(other, ref)
    assert m is not None
    assert abs(_turn_about(m, ref.normal)) < 1.0
    # Without that step (it "fails": the rigid turn is kept) the bias is back.
    monkeypatch.setattr(cap_alignment, "linear_turn", lambda *args, **kwargs: None)
    rigid = cap_alignment.cap_twist(other, ref)
    assert 3.0 < abs(_turn_about(rigid, ref.normal)) < 8.0


def test_linear_turn_is_exact_under_a_stretch_and_refuses_a_different_outline():
    a = np.linspace(-np.pi, np.pi, 360, endpoint=False)
    r = 1.0 + 0.08 * np.cos(a) + 0.03 * np.cos(2 * a) + 0.02 * np.sin(3 * a)
    ref = r[:, None] * np.stack([np.cos(a), np.sin(a)], axis=1)
    ref -= ref.mean(axis=0)
    d = np.array([np.cos(0.7), np.sin(0.7)])
    t = np.radians(6.0)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    for stretch in (1.03, 0.97):
        # A stretch along a diagonal, then a 6-degree turn, on a copy that starts elsewhere
        # along the loop and runs the other way (loops from different meshes do).
        m = rot @ (np.eye(2) + (stretch - 1.0) * np.outer(d, d))
        outline = np.roll(ref @ m.T, 37, axis=0)[::-1]
        outline = outline / np.linalg.norm(outline - outline.mean(axis=0), axis=1).mean()
        rigid = cap_alignment.outline_turn(outline, ref, linear=False)
        assert abs(rigid + 6.0) > 0.3  # the stretch biases the rigid turn
        assert cap_alignment.linear_turn(outline, ref, rigid) == pytest.approx(-6.0, abs=0.05)
        assert cap_alignment.outline_turn(outline, ref) == pytest.approx(-6.0, abs=0.05)
    # An ellipse 1.6 times as long as it is wide is not the same outline stretched a little.
    squashed = ref @ np.diag([1.6, 1.0])
    assert cap_alignment.linear_turn(squashed, ref, 0.0) is None


def test_outline_turn_is_exact_for_a_turned_copy():
    a = np.linspace(-np.pi, np.pi, 72, endpoint=False)
    r = 1.0 + 0.1 * np.cos(2 * a) + 0.05 * np.sin(3 * a)
    ref = r[:, None] * np.stack([np.cos(a), np.sin(a)], axis=1)
    ref -= ref.mean(axis=0)
    for deg in (-9.3, 0.0, 4.7):
        t = np.radians(deg)
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        # `outline` is `ref` turned by deg, so the turn back is -deg.
        assert cap_alignment.outline_turn(ref @ rot.T, ref) == pytest.approx(-deg, abs=0.15)


def test_groom_turns_capped_shapes_towards_the_truth(tmp_path):
    # Four LVs in random poses: the cap twist brings their turns about the long axis closer
    # to the generator's than rigid alignment alone, and the manifest records each turn.
    from shapeatlas.data.synthetic_lv import load_truth, write_lv_cohort

    write_lv_cohort(tmp_path / "lv", n=6, seed=5, phenotypes="mixed", n_vertices=(900, 1300))
    truth = load_truth(tmp_path / "lv")
    spread = {}
    for on in (False, True):
        result = groom_cohort(tmp_path / "lv", tmp_path / f"g{on}",
                              GroomOptions(n_jobs=1, cap_twist=on))
        rots = [(np.asarray(s["transform"]) @ truth[s["name"]].pose)[:3, :3]
                for s in result.shapes]
        rot = Rotation.from_matrix(np.array(rots))
        resid = np.degrees((rot.mean().inv() * rot).as_rotvec())
        spread[on] = float(np.median(np.abs(resid[:, 2])))  # the turn about the domain's z
        entries = {s["name"]: s for s in result.shapes}
        if on:
            turns = [s["cap_twist_deg"] for s in entries.values()]
            assert entries[result.manifest["reference"]]["cap_twist_deg"] is None
            assert sum(t is not None for t in turns) >= 4
            assert all(t is None or 0.0 <= t <= cap_alignment.MAX_TWIST_DEG for t in turns)
        else:
            assert all("cap_twist_deg" not in s for s in entries.values())
    assert spread[True] < 0.6 * spread[False], spread


def test_groom_reads_the_caps_before_decimating(tmp_path, monkeypatch):
    # QSlim moves a cap's rim vertices, which turns a nearly round outline by a degree or so:
    # the caps are read before decimation (here 900-1300 vertices decimated to 400), and the
    # groomed turns about the long axis are closer to the truth than from the decimated caps.
    from shapeatlas.data.synthetic_lv import load_truth, write_lv_cohort
    from shapeatlas.mesh import groom

    write_lv_cohort(tmp_path / "lv", n=6, seed=5, phenotypes="mixed", n_vertices=(900, 1300))
    truth = load_truth(tmp_path / "lv")
    spread = {}
    for before in (True, False):
        if not before:  # no cap read before decimation: `_turn_caps` reads the groomed shapes'
            monkeypatch.setattr(groom, "planar_cap", lambda mesh: None)
        result = groom_cohort(tmp_path / "lv", tmp_path / f"g{before}",
                              GroomOptions(n_jobs=1, target_vertices=400))
        assert result.manifest["cap_twist"] == "applied: 5 of 6 shapes turned"
        rots = [(np.asarray(s["transform"]) @ truth[s["name"]].pose)[:3, :3]
                for s in result.shapes]
        rot = Rotation.from_matrix(np.array(rots))
        spread[before] = float(np.median(np.abs(
            np.degrees((rot.mean().inv() * rot).as_rotvec())[:, 2])))
    # (measured: 0.15 degrees against 0.73)
    assert spread[True] < 0.5 * spread[False], spread


def test_cap_basin_moves_a_half_turned_shape_where_the_surface_cannot_tell():
    # A shape aligned half a turn off, onto a surface that fits both basins equally (the
    # shape and its half-turned copy together): its outline lines up only beyond the twist's
    # window, so the shape is moved to the basin the outline points to, and the cap twist
    # then sets its turn there, as if it had been aligned right.
    from shapeatlas.mesh.cap import turn_cap

    ref = cap_alignment.CapReference.of(lv(septal=0.22, seed=0))
    other = lv(septal=0.2, seed=1)
    flipped = turned(other, 180.0)
    both = np.concatenate([other.vertices, flipped.vertices])
    assert cap_alignment.cap_twist(flipped, ref) is None
    move = cap_alignment.cap_basin(flipped, ref, both)
    assert move is not None and cap_alignment.turn_degrees(move) > 150.0
    t = turn_cap(flipped, np.eye(4), ref, surface=both)
    # flipped = R(180) other, so t should be about R(180)^-1 times other's own (small) turn.
    residual = t[:3, :3] @ Rotation.from_rotvec([0.0, 0.0, np.pi]).as_matrix()
    assert np.degrees(Rotation.from_matrix(residual).magnitude()) < 3.0
    # Without a surface, or where the surface fits the current pose best (it is the shape
    # itself), or for a shape already in the outline's basin: nothing moves.
    np.testing.assert_array_equal(turn_cap(flipped, np.eye(4), ref), np.eye(4))
    assert cap_alignment.cap_basin(flipped, ref, flipped.vertices) is None
    assert cap_alignment.cap_basin(other, ref, both) is None


def test_groom_moves_a_shape_to_the_basin_its_cap_points_to():
    # `_turn_caps` on three LVs in one frame, the third half a turn off: it is moved to the
    # basin its outline points to (the surface there fits the reference better, too), the move
    # is part of its cap_turn, and the other shape only gets the small in-window turn.
    from shapeatlas.mesh import groom

    meshes = [lv(septal=0.22, seed=0), lv(septal=0.2, seed=1), turned(lv(septal=0.18, seed=2),
                                                                         180.0)]
    aligned = [{"matrix": np.eye(4), "rms": None} for _ in meshes]
    status = groom._turn_caps(meshes, aligned, 0, [None] * 3)
    assert status == "applied: 2 of 3 shapes turned"
    assert "cap_basin_deg" not in aligned[1] and aligned[1]["cap_twist_deg"] < 5.0
    assert aligned[2]["cap_basin_deg"] > 150.0
    residual = aligned[2]["matrix"][:3, :3] @ Rotation.from_rotvec([0.0, 0.0, np.pi]).as_matrix()
    assert np.degrees(Rotation.from_matrix(residual).magnitude()) < 3.0
