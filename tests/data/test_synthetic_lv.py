"""Synthetic LV cohorts: geometry, ground truth files, ranges and determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shapeatlas.data.synthetic_lv import (
    ALPHA_BASE,
    REGION_RIM,
    LVParams,
    load_truth,
    lv_long_axis,
    lv_surface,
    lv_volume,
    sample_lv_params,
    triangulate_lv,
    write_lv_cohort,
)
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.io import read_mesh


def _ring(alpha: float, n: int = 64) -> np.ndarray:
    phi = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([np.sin(alpha) * np.cos(phi), np.sin(alpha) * np.sin(phi),
                     np.full(n, -np.cos(alpha))], axis=1)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("lv_cohort")
    paths = write_lv_cohort(out, n=10, seed=7, phenotypes="mixed")
    return out, paths, load_truth(out)


# ------------------------------------------------------------------------------ the shape map
def test_truncated_spheroid_volume_matches_closed_form():
    # Without bumps or tilt the surface is a truncated spheroid; the apex shift is a shear with
    # unit determinant, so the volume is pi b^2 ((h + c) - (h^3 + c^3) / (3 c^2)).
    c, b, h = 62.0, 27.0, 20.0
    p = LVParams(c_mm=c, b_mm=b, h_mm=h, apex_shift_mm=(6.0, -4.0))
    exact = np.pi * b * b * ((h + c) - (h**3 + c**3) / (3 * c * c))
    assert lv_volume(p) == pytest.approx(exact, rel=1e-7)
    assert lv_long_axis(LVParams(c_mm=c, b_mm=b, h_mm=h)) == pytest.approx(c + h, abs=1e-9)


def test_map_scales_with_lengths_and_round_trips_through_dict():
    p = sample_lv_params(np.random.default_rng(3), phenotype="healthy")
    u = _ring(1.0)
    x = lv_surface(p, domain_points=u)
    assert np.allclose(lv_surface(p.scaled(2.0), domain_points=u), 2.0 * x, atol=1e-9)
    q = LVParams.from_dict(json.loads(json.dumps(p.to_dict())))
    assert q == p
    assert np.array_equal(lv_surface(q.to_dict(), domain_points=u), x)


def test_cap_is_a_tilted_plane_meeting_the_wall_at_the_rim():
    p = sample_lv_params(np.random.default_rng(4), phenotype="dilated")
    cap = lv_surface(p, domain_points=np.concatenate([_ring(ALPHA_BASE + 0.3), _ring(np.pi - 0.1)]))
    plane = p.h_mm + p.base_tilt[0] * cap[:, 0] + p.base_tilt[1] * cap[:, 1]
    assert np.allclose(cap[:, 2], plane, atol=1e-9)
    eps = 1e-9
    wall_side = lv_surface(p, domain_points=_ring(ALPHA_BASE - eps))
    cap_side = lv_surface(p, domain_points=_ring(ALPHA_BASE + eps))
    assert np.abs(wall_side - cap_side).max() < 1e-6


def test_lv_surface_rejects_points_off_the_sphere():
    p = LVParams(c_mm=60.0, b_mm=25.0, h_mm=15.0)
    with pytest.raises(ValueError, match="unit vectors"):
        lv_surface(p, domain_points=np.array([[0.0, 0.0, -2.0]]))
    with pytest.raises(ValueError, match="shape"):
        lv_surface(p, domain_points=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="h_mm"):
        LVParams(c_mm=60.0, b_mm=25.0, h_mm=70.0)


def test_1000_vertex_meshes_are_within_1_percent_of_the_exact_volume():
    rng = np.random.default_rng(11)
    for i in range(8):
        p = sample_lv_params(rng, phenotype="healthy" if i % 2 else "dilated")
        tri = triangulate_lv(p, n_vertices=1000, rng=rng)
        assert len(tri.vertices) == 1000
        assert abs(geo.signed_volume(tri.vertices, tri.faces) / lv_volume(p) - 1.0) < 0.01


def test_triangulation_is_a_valid_sphere_in_the_domain_and_keeps_the_rim():
    p = sample_lv_params(np.random.default_rng(5), phenotype="healthy")
    tri = triangulate_lv(p, n_vertices=1500, rng=np.random.default_rng(6))
    assert np.allclose(np.linalg.norm(tri.domain, axis=1), 1.0, atol=1e-12)
    uf = tri.domain[tri.faces]
    assert (np.einsum("ij,ij->i", uf[:, 0], np.cross(uf[:, 1], uf[:, 2])) > 0).all()
    rim = tri.region == REGION_RIM
    alpha = np.arctan2(np.hypot(tri.domain[:, 0], tri.domain[:, 1]), -tri.domain[:, 2])
    assert rim.sum() >= 12 and np.allclose(alpha[rim], ALPHA_BASE, atol=1e-12)
    assert np.array_equal(tri.domain[0], [0.0, 0.0, -1.0])  # apex is vertex 0
    # No face straddles the crease: each face is all wall/rim or all cap/rim.
    reg = tri.region[tri.faces]
    assert not ((reg == 0).any(axis=1) & (reg == 2).any(axis=1)).any()
    assert np.array_equal(tri.vertices, lv_surface(p, domain_points=tri.domain))


# ------------------------------------------------------------------------------------ cohorts
def test_cohort_files_and_truth_format(cohort):
    out, paths, truth = cohort
    names = [f"lv_{i:03d}" for i in range(10)]
    assert [p.name for p in paths] == [f"{n}.ply" for n in names]
    assert sorted(truth) == names
    meta = json.loads((out / "truth.json").read_text())
    assert meta["seed"] == 7 and meta["generator_version"] and "unit sphere" in meta["domain"]
    rec = meta["shapes"]["lv_000"]
    assert set(rec) >= {"volume_ml", "phenotype", "long_axis_mm", "pose", "params", "n_vertices"}
    assert np.asarray(rec["pose"]).shape == (4, 4)
    assert (out / "truth" / "lv_000.npz").is_file()


def test_cohort_meshes_are_closed_outward_and_match_the_exact_volume(cohort):
    _, _, truth = cohort
    for t in truth.values():
        mesh = read_mesh(t.mesh_path)
        assert mesh.is_watertight and mesh.euler_characteristic == 2
        assert mesh.signed_volume > 0
        assert abs(mesh.signed_volume / 1000.0 / t.volume_ml - 1.0) < 0.01
        assert t.volume_ml == pytest.approx(lv_volume(t.params) / 1000.0, rel=1e-12)


def test_cohort_sizes_are_realistic(cohort):
    _, _, truth = cohort
    for t in truth.values():
        assert 70.0 <= t.long_axis_mm <= 110.0
        lo, hi = {"healthy": (90.0, 170.0), "dilated": (170.0, 250.0)}[t.phenotype]
        assert lo * (1 - 1e-5) <= t.volume_ml <= hi * (1 + 1e-5)


def test_vertex_counts_differ_and_lie_in_range(cohort):
    _, _, truth = cohort
    counts = [len(t.vertices_domain) for t in truth.values()]
    assert counts == [t.n_vertices for t in truth.values()]
    assert len(set(counts)) == len(counts)
    assert min(counts) >= 1000 and max(counts) <= 4000


def test_pose_maps_domain_frame_to_file(cohort):
    _, _, truth = cohort
    for t in truth.values():
        rot = t.pose[:3, :3]
        assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-12) and np.linalg.det(rot) > 0
        mesh = read_mesh(t.mesh_path)
        assert np.array_equal(mesh.faces, t.faces)
        assert np.allclose(mesh.vertices, t.vertices_domain @ rot.T + t.pose[:3, 3], atol=1e-9)
        x = lv_surface(t.params, domain_points=t.domain)
        assert np.allclose(x, t.vertices_domain, atol=1e-9)
        assert np.array_equal(t.surface(t.domain), x)
    translations = np.array([t.pose[:3, 3] for t in truth.values()])
    assert np.abs(translations).max() > 10.0  # placed tens of mm away, not at the origin


def test_mixed_cohort_has_both_phenotypes_and_dilated_are_larger(cohort):
    _, _, truth = cohort
    vols = {"healthy": [], "dilated": []}
    for t in truth.values():
        vols[t.phenotype].append(t.volume_ml)
    assert len(vols["healthy"]) == 5 and len(vols["dilated"]) == 5
    assert np.mean(vols["dilated"]) > np.mean(vols["healthy"]) + 40.0


def test_same_seed_gives_identical_bytes(tmp_path):
    kw = dict(n=2, seed=21, n_vertices=(300, 500))
    write_lv_cohort(tmp_path / "a", **kw)
    write_lv_cohort(tmp_path / "b", **kw)
    write_lv_cohort(tmp_path / "c", **{**kw, "seed": 22})
    a, b, c = (tmp_path / k for k in "abc")
    files = sorted(p.relative_to(a) for p in a.rglob("*")
                   if p.is_file() and p.name != "provenance.json")  # (its date differs)
    assert len(files) == 5
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / "lv_000.ply").read_bytes() != (c / "lv_000.ply").read_bytes()
    assert {t.phenotype for t in load_truth(a).values()} == {"healthy"}


def test_progress_is_reported(tmp_path):
    calls = []
    write_lv_cohort(tmp_path, n=2, seed=1, n_vertices=(300, 400),
                    progress=lambda i, n: calls.append((i, n)))
    assert calls == [(1, 2), (2, 2)]


def test_bad_arguments_and_missing_truth_raise(tmp_path):
    with pytest.raises(ValueError, match="n must be"):
        write_lv_cohort(tmp_path, n=0)
    with pytest.raises(ValueError, match="phenotypes"):
        write_lv_cohort(tmp_path, phenotypes="sick")
    with pytest.raises(ValueError, match="n_vertices"):
        write_lv_cohort(tmp_path, n_vertices=(4000, 1000))
    with pytest.raises(ShapeAtlasError, match="truth.json"):
        load_truth(tmp_path)


def test_septal_flattening_gives_a_consistent_circumferential_landmark():
    from shapeatlas.data.synthetic_lv import LVParams, lv_surface

    base = dict(c_mm=60.0, b_mm=28.0, h_mm=20.0)
    plain, flat = LVParams(**base), LVParams(**base, septal_flattening=0.2)
    # Equator points at the lateral wall (phi = 0) and the septum (phi = pi).
    u = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    r_plain = np.hypot(*lv_surface(plain, domain_points=u)[:, :2].T)
    r_flat = np.hypot(*lv_surface(flat, domain_points=u)[:, :2].T)
    assert r_flat[0] == pytest.approx(r_plain[0])          # lateral wall unchanged
    assert r_flat[1] == pytest.approx(0.8 * r_plain[1])    # septum flattened by 20%
    assert LVParams.from_dict(flat.to_dict()) == flat
