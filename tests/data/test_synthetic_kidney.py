"""Synthetic kidney cohorts: the shape map's closed forms, the triangulation, the truth files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shapeatlas.data import load_cohort_truth
from shapeatlas.data.synthetic_kidney import (
    HILUM_DIRECTION,
    KidneyParams,
    kidney_long_axis,
    kidney_surface,
    kidney_volume,
    load_kidney_truth,
    sample_kidney_params,
    triangulate_kidney,
    write_kidney_cohort,
)
from shapeatlas.data.synthetic_lv import load_truth, write_lv_cohort
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.io import read_mesh
from shapeatlas.mesh.validity import self_intersecting_faces, triangle_quality
from shapeatlas.metrics.correspondence import paired_atlas_error, true_correspondence


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("kidney_cohort")
    paths = write_kidney_cohort(out, n=4, seed=5, n_vertices=(600, 1500))
    return out, paths, load_kidney_truth(out)


def test_volume_matches_the_closed_form_and_the_bend_keeps_it():
    # Cross-sections at x = a t are ellipses of semi-axes (b, c) (1 + p t) sqrt(1 - t^2), so the
    # volume is pi a b c (4/3 + 4 p^2 / 15); the bend is a shear along y (unit determinant).
    length, wr, tr, p = 110.0, 0.5, 0.33, 0.15
    a = length / 2
    exact = np.pi * a * (wr * a) * (tr * a) * (4 / 3 + 4 * p * p / 15)
    plain = KidneyParams(length_mm=length, width_ratio=wr, thickness_ratio=tr, pole_asymmetry=p)
    bent = KidneyParams(length_mm=length, width_ratio=wr, thickness_ratio=tr, pole_asymmetry=p,
                        bend_mm=10.0)
    assert kidney_volume(plain) == pytest.approx(exact, rel=1e-4)
    assert kidney_volume(bent) == pytest.approx(exact, rel=1e-4)


def test_poles_bend_medially_and_the_hilum_is_a_dent_of_the_given_depth():
    p = KidneyParams(length_mm=120.0, width_ratio=0.5, thickness_ratio=0.3, bend_mm=8.0,
                     hilum_depth_mm=7.0)
    poles = kidney_surface(p, domain_points=np.array([[1.0, 0, 0], [-1.0, 0, 0]]))
    # At the poles the hilum's Gaussian is exp(-1 / w^2) ~ 2e-3 of its depth: within 0.02 mm.
    assert np.allclose(poles, [[60.0, 8.0, 0.0], [-60.0, 8.0, 0.0]], atol=0.02)
    assert kidney_long_axis(p) == pytest.approx(120.0, abs=0.05)
    hilum = kidney_surface(p, domain_points=np.array([HILUM_DIRECTION]))[0]
    assert np.allclose(hilum, [0.0, 0.5 * 60.0 - 7.0, 0.0], atol=1e-12)  # no bend at x = 0


def test_params_round_trip_and_bad_params_raise():
    p = sample_kidney_params(np.random.default_rng(2))
    q = KidneyParams.from_dict(json.loads(json.dumps(p.to_dict())))
    assert q == p
    u = np.eye(3)
    assert np.array_equal(kidney_surface(q.to_dict(), domain_points=u),
                          kidney_surface(p, domain_points=u))
    with pytest.raises(ValueError, match="hilum_depth_mm"):
        KidneyParams(length_mm=100.0, width_ratio=0.5, thickness_ratio=0.3, hilum_depth_mm=30.0)
    with pytest.raises(ValueError, match="finite"):
        KidneyParams(length_mm=float("nan"), width_ratio=0.5, thickness_ratio=0.3)
    with pytest.raises(ValueError, match="unit vectors"):
        kidney_surface(p, domain_points=np.array([[2.0, 0, 0]]))


def test_triangulation_is_a_valid_sphere_without_self_intersections():
    rng = np.random.default_rng(4)
    p = sample_kidney_params(rng)
    tri = triangulate_kidney(p, n_vertices=1200, rng=rng)
    assert len(tri.vertices) == 1200
    assert geo.is_watertight(tri.faces) and geo.euler_characteristic(1200, tri.faces) == 2
    assert geo.signed_volume(tri.vertices, tri.faces) > 0
    assert np.array_equal(tri.vertices, kidney_surface(p, domain_points=tri.domain))
    assert len(self_intersecting_faces(tri.vertices, tri.faces)) == 0
    # Evenly spaced vertices: the triangles are well shaped in 3D, not only on the domain.
    assert np.percentile(triangle_quality(tri.vertices, tri.faces), 5) > 0.3
    assert geo.signed_volume(tri.vertices, tri.faces) == pytest.approx(kidney_volume(p), rel=0.02)
    with pytest.raises(ValueError, match="at least"):
        triangulate_kidney(p, n_vertices=10, rng=rng)


def test_cohort_files_pose_and_sizes(cohort):
    out, paths, truth = cohort
    names = [f"kidney_{i:03d}" for i in range(4)]
    assert [p.name for p in paths] == [f"{n}.ply" for n in names] and sorted(truth) == names
    counts = [t.n_vertices for t in truth.values()]
    assert len(set(counts)) == 4 and 600 <= min(counts) and max(counts) <= 1500
    for t in truth.values():
        mesh = read_mesh(t.mesh_path)
        assert np.array_equal(mesh.faces, t.faces) and len(t.vertices_domain) == t.n_vertices
        assert np.allclose(mesh.vertices, t.vertices_file, atol=1e-9)
        assert np.allclose(t.surface(t.domain), t.vertices_domain, atol=1e-9)
        assert 95.0 <= t.long_axis_mm <= 135.0 and 50.0 <= t.volume_ml <= 250.0
        assert abs(mesh.signed_volume / 1000.0 / t.volume_ml - 1.0) < 0.02


def test_truth_scores_exact_correspondences_as_zero(cohort):
    # The correspondence metric reads kidney truth as it reads LV truth: points placed at the
    # same domain coordinates on two shapes have zero error, and a shifted B does not.
    _, _, truth = cohort
    a, b = truth["kidney_000"], truth["kidney_001"]
    u = np.random.default_rng(0).normal(size=(300, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    pa = true_correspondence(u, domain_b=a.domain, b_vertices=a.vertices_file, b_faces=a.faces)
    pb = true_correspondence(u, domain_b=b.domain, b_vertices=b.vertices_file, b_faces=b.faces)
    kw = dict(a_vertices=a.vertices_file, a_faces=a.faces, a_domain=a.domain,
              b_vertices=b.vertices_file, b_faces=b.faces, b_domain=b.domain)
    assert paired_atlas_error(pa, pb, **kw).max() < 1e-6
    assert paired_atlas_error(pa, pb + [2.0, 0.0, 0.0], **kw).mean() == pytest.approx(2.0)


def test_same_seed_same_bytes_and_loaders_refuse_each_others_files(tmp_path):
    kw = dict(n=2, seed=9, n_vertices=(300, 400))
    write_kidney_cohort(tmp_path / "a", **kw)
    write_kidney_cohort(tmp_path / "b", **kw)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file() and p.name != "provenance.json")
    assert len(files) == 5
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    write_lv_cohort(tmp_path / "lv", n=1, seed=1, n_vertices=(300, 300))
    with pytest.raises(ShapeAtlasError, match="not a synthetic kidney"):
        load_kidney_truth(tmp_path / "lv")
    with pytest.raises(ShapeAtlasError, match="not a synthetic LV"):
        load_truth(tmp_path / "a")
    with pytest.raises(ShapeAtlasError, match="truth.json"):
        load_kidney_truth(tmp_path / "nothing")
    assert type(load_cohort_truth(tmp_path / "a")["kidney_000"]).__name__ == "KidneyTruth"
    assert type(load_cohort_truth(tmp_path / "lv")["lv_000"]).__name__ == "LVTruth"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "truth.json").write_text('{"generator": "elsewhere"}')
    with pytest.raises(ShapeAtlasError, match="unknown generator 'elsewhere'"):
        load_cohort_truth(tmp_path / "other")
    with pytest.raises(ShapeAtlasError, match="cannot read"):
        load_cohort_truth(tmp_path / "nothing")


def test_a_damaged_truth_file_is_named_in_the_error(cohort, tmp_path):
    out, _, _ = cohort
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "truth.json").write_text("{not json")
    with pytest.raises(ShapeAtlasError, match="truth.json: not valid JSON"):
        load_kidney_truth(bad)
    meta = json.loads((out / "truth.json").read_text())
    del meta["shapes"]["kidney_001"]["pose"]
    (bad / "truth.json").write_text(json.dumps(meta))
    (bad / "truth").mkdir()
    for name in ("kidney_000", "kidney_001"):
        (bad / "truth" / f"{name}.npz").write_bytes((out / "truth" / f"{name}.npz").read_bytes())
    with pytest.raises(ShapeAtlasError, match="record of kidney_001 is incomplete.*pose"):
        load_kidney_truth(bad)
    (bad / "truth" / "kidney_000.npz").unlink()
    with pytest.raises(ShapeAtlasError, match="kidney_000.npz: missing ground truth"):
        load_kidney_truth(bad)
    with pytest.raises(ValueError, match="n_vertices"):
        write_kidney_cohort(tmp_path / "c", n_vertices=(50, 60))
