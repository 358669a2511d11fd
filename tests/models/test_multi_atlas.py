"""mAtlas-R-ASMG: clustering maths on shapes with known groups, and the model end to end."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from shapes import groomed_lv_cohort
from sklearn.metrics import adjusted_rand_score

from shapeatlas.data.synthetic_lv import load_truth
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.models.clustering import (
    ClusterWarning,
    bimodality_test,
    choose_atlases,
    prediction_strength,
    rigid_consensus,
    soft_cluster,
)
from shapeatlas.models.multi_atlas import MultiAtlasModel
from shapeatlas.runs.load import load_model
from shapeatlas.training.config import FitConfig, MatchConfig


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _groups(rng, sizes=(10, 12), offset=3.0, noise=0.3, k=40) -> tuple[np.ndarray, np.ndarray]:
    """Shapes (N, k, 3) in groups around templates `offset` mm apart (per vertex), labels (N,)."""
    base = rng.standard_normal((k, 3)) * 10
    templates = [base + offset * m * rng.standard_normal((k, 3)) for m in range(len(sizes))]
    shapes = [t + noise * rng.standard_normal((k, 3)) for t, n in zip(templates, sizes)
              for _ in range(n)]
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return np.array(shapes), labels


def test_rigid_consensus_removes_pose_but_not_size():
    rng = np.random.default_rng(0)
    shape = rng.standard_normal((50, 3)) * 10
    posed = np.array([(s * shape) @ _rotation(rng).T + rng.normal(size=3) * 5
                      for s in (1.0, 1.0, 1.0, 1.5)])
    aligned, mats, ref = rigid_consensus(posed)
    np.testing.assert_allclose(aligned[0], aligned[1], atol=1e-6)
    np.testing.assert_allclose(aligned[1], aligned[2], atol=1e-6)
    # the larger copy keeps its size
    r = lambda x: np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean())  # noqa: E731
    assert r(aligned[3]) == pytest.approx(1.5 * r(aligned[0]), rel=1e-9)
    np.testing.assert_allclose(posed[0] @ mats[0][:3, :3].T + mats[0][:3, 3], aligned[0])


def test_soft_cluster_recovers_known_groups():
    rng = np.random.default_rng(1)
    shapes, labels = _groups(rng, sizes=(10, 14, 8))
    c = soft_cluster(shapes, 3, temperature=0.25, restarts=5, seed=0)
    assert adjusted_rand_score(labels, c.memberships.argmax(1)) == 1.0
    np.testing.assert_allclose(np.sort(c.weights), np.sort([10 / 32, 14 / 32, 8 / 32]), atol=0.02)
    np.testing.assert_allclose(c.memberships.sum(1), 1.0)
    # a high temperature merges the atlases: memberships no longer decide anything
    hot = soft_cluster(shapes, 3, temperature=50.0, restarts=2, seed=0)
    assert hot.memberships.max(1).mean() < 0.5


def test_an_emptied_cluster_is_reseeded_with_a_warning():
    rng = np.random.default_rng(2)
    shapes, _ = _groups(rng, sizes=(12,), noise=0.01)
    shapes[0] += 40.0  # one outlier: a third cluster can only hold it
    with pytest.warns(ClusterWarning, match="re-seeded"):
        c = soft_cluster(shapes, 3, temperature=0.25, restarts=1, seed=0, max_iter=20)
    assert np.isfinite(c.atlases).all()


def test_prediction_strength_finds_one_two_or_three_groups():
    rng = np.random.default_rng(3)
    two, _ = _groups(rng, sizes=(15, 15), offset=2.0)
    three, _ = _groups(rng, sizes=(12, 12, 12), offset=2.0)
    one, _ = _groups(rng, sizes=(30,))
    kw = dict(seed=0, temperature=0.25, restarts=3, splits=10)
    assert prediction_strength(two, 4, **kw)["chosen"] == 2
    assert prediction_strength(three, 4, **kw)["chosen"] == 3
    sel = prediction_strength(one, 4, **kw)
    assert sel["chosen"] == 1 and [c["atlases"] for c in sel["curve"]] == [1, 2, 3, 4]
    # a half of 7 shapes holds at most 2 clusters of 3: larger M are not tried
    assert [c["atlases"] for c in prediction_strength(one[:14], 4, **kw)["curve"]] == [1, 2]
    assert prediction_strength(one[:2], 4, **kw)["chosen"] == 1
    assert sel["curve"][0]["strength"] == 1.0 and sel["curve"][1]["strength"] < 0.9


def _along_modes(rng, scores: np.ndarray, k: int = 30) -> np.ndarray:
    """Shapes (N, k, 3) = a base + scores (N, d) along d orthonormal modes of (k, 3)."""
    modes, _ = np.linalg.qr(rng.standard_normal((3 * k, scores.shape[1])))
    base = rng.standard_normal(3 * k) * 10
    return (base + scores @ modes.T).reshape(len(scores), k, 3)


def test_choose_atlases_finds_one_two_or_three_groups():
    rng = np.random.default_rng(3)
    two, y2 = _groups(rng, sizes=(15, 15), offset=2.0)
    three, y3 = _groups(rng, sizes=(20, 20, 20), offset=2.0)
    one, _ = _groups(rng, sizes=(30,))
    sel, labels = choose_atlases(two, 4, seed=0, simulations=39)
    assert sel["chosen"] == 2 and adjusted_rand_score(y2, labels) == 1.0
    assert sel["criterion"] == "bimodality" and [t["split"] for t in sel["tests"]][0]
    sel, labels = choose_atlases(three, 4, seed=0, simulations=39)
    assert sel["chosen"] == 3 and adjusted_rand_score(y3, labels) == 1.0
    assert sum(t["split"] for t in sel["tests"]) == 2
    sel, labels = choose_atlases(one, 4, seed=0, simulations=39)
    assert sel["chosen"] == 1 and not labels.any()
    assert [t["shapes"] for t in sel["tests"]] == [30] and sel["tests"][0]["p"] >= 0.05
    # M is capped, and a group of fewer than SELECT_MIN_GROUP shapes is not tested: the two
    # groups of 15 stay whole, and so do 29 shapes of two groups
    assert choose_atlases(three, 2, seed=0, simulations=39)[0]["chosen"] == 2
    assert choose_atlases(two, 1, seed=0, simulations=39)[0] == {
        "chosen": 1, "criterion": "bimodality", "alpha": 0.05, "simulations": 39,
        "min_group": 30, "tests": []}
    assert [t["shapes"] for t in choose_atlases(two, 4, seed=0, simulations=39)[0]["tests"]] == [
        30]
    assert choose_atlases(two[1:], 4, seed=0, simulations=39)[0]["tests"] == []


def test_a_long_even_spread_is_one_group_and_a_valley_across_it_is_two():
    """Two groups that differ along a minor mode while one mode spreads wider (the livers and
    their mirror images), against one group spread evenly along that mode (a range of sizes):
    a cut that keeps the most variance between its sides prefers the wide mode in both."""
    rng = np.random.default_rng(5)
    n = 40
    wide = rng.uniform(-1, 1, n) * np.sqrt(3) * 3.0  # SD 3: cutting it halves 3/4 of its var.
    rest = rng.standard_normal((n, 4)) * 0.4
    even = _along_modes(rng, np.column_stack([wide, rest]))
    y = np.arange(n) % 2
    valley = np.column_stack([wide, np.where(y, 1.5, -1.5) + 0.4 * rng.standard_normal(n),
                              rest[:, 1:]])
    shapes = _along_modes(rng, valley)
    sel, labels = choose_atlases(shapes, 4, seed=0, simulations=39)
    assert sel["chosen"] == 2 and adjusted_rand_score(y, labels) == 1.0
    # k-means++ restarts cut the wide mode instead: seeding from the groups found matters
    km = soft_cluster(shapes, 2, temperature=0.25, restarts=10, seed=0)
    assert adjusted_rand_score(y, km.memberships.argmax(1)) < 0.5
    started = soft_cluster(shapes, 2, temperature=0.25, restarts=10, seed=0, init=labels)
    assert adjusted_rand_score(y, started.memberships.argmax(1)) == 1.0
    sel, _ = choose_atlases(even, 4, seed=0, simulations=39)
    assert sel["chosen"] == 1 and sel["tests"][0]["p"] > 0.2
    # the statistic: between 0 and 1, lower for the valley; p in steps of 1 / (simulations + 1)
    a = bimodality_test(np.column_stack([wide, rest]), seed=0, simulations=19)
    b = bimodality_test(valley, seed=0, simulations=19)
    assert 0 < b["statistic"] < a["statistic"] < 1 and b["p"] == 0.05
    assert a["p"] * 20 == round(a["p"] * 20) and set(np.unique(a["labels"])) == {0, 1}
    # a large group is tested on SELECT_TEST_SHAPES of its shapes; every shape gets a side
    many = np.repeat(valley, 15, axis=0) + 0.05 * rng.standard_normal((15 * n, valley.shape[1]))
    big = bimodality_test(many, seed=0, simulations=9)
    assert big["shapes"] == 600 and big["tested"] == 500 and big["p"] == 0.1
    assert adjusted_rand_score(np.repeat(y, 15), big["labels"]) == 1.0
    with pytest.raises(ValueError, match="init must label"):
        soft_cluster(shapes, 3, temperature=0.25, restarts=1, seed=0, init=labels)


def test_clusters_keep_their_own_latent_sizes():
    from shapeatlas.models.generator import VAEGenerator
    from shapeatlas.models.mixture import MixtureGenerator
    from shapeatlas.training.config import GeneratorConfig

    rng = np.random.default_rng(4)
    shapes, labels = _groups(rng, sizes=(12, 5), k=20)
    gens = [VAEGenerator(GeneratorConfig(latent_dim=d, epochs=50)).fit(shapes[labels == m])
            for m, d in ((0, 6), (1, 2))]
    atlases = np.stack([shapes[labels == m].mean(0) for m in (0, 1)])
    mix = MixtureGenerator(gens, np.array([12, 5]) / 17, atlases, spread=1.0, temperature=0.25)
    assert mix.latent_dim == 6 and mix.latent_dims == [6, 2]
    z, cluster = mix.sample(200, np.random.default_rng(0))
    assert z.shape == (200, 6) and not z[cluster == 1, 2:].any()
    # one latent direction per cluster: each cluster's codes lie on a line
    z1, c1 = mix.sample(200, np.random.default_rng(0), components=1)
    np.testing.assert_array_equal(c1, cluster)
    for m, g in enumerate(gens):
        held = g.latent_order_[1:]
        np.testing.assert_array_equal(z1[c1 == m][:, held],
                                      np.broadcast_to(g.prior_mean_[held], ((c1 == m).sum(),
                                                                            len(held))))
    np.testing.assert_allclose(mix.decode(z[cluster == 1], cluster[cluster == 1]),
                               gens[1].decode(z[cluster == 1, :2]))
    # n_components beyond a cluster's size means all of its directions
    np.testing.assert_allclose(mix.reconstruct(shapes, n_components=4)[labels == 1],
                               gens[1].reconstruct(shapes[labels == 1]))
    again = MixtureGenerator.from_state(*mix.state())
    assert again.latent_dims == [6, 2]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    meshes, _ = groomed_lv_cohort(root, n=8, seed=10)
    truth = load_truth(root / "raw")
    # Two phenotypes apart in size as well as in shape: the largest healthy LV is well below
    # the smallest dilated one (the seed-3 cohort used before had a 158 mL healthy LV, 103 mm
    # long, that a 3-epoch network clustered either way depending on the releases of the
    # dependencies).
    vol = {p: [r.volume_ml for r in truth.values() if r.phenotype == p]
           for p in ("healthy", "dilated")}
    assert min(vol["dilated"]) - max(vol["healthy"]) > 50
    labels = np.array([truth[m.name.split("/")[-1].rsplit(".", 1)[0]].phenotype == "dilated"
                       for m in meshes]).astype(int)
    return root, meshes, labels


@pytest.fixture(scope="module")
def fitted(mixed, tmp_path_factory):
    from shapeatlas.nn.encoder import EncoderConfig

    # The paper's plain softmax: with a 3-epoch network, balanced transport (the default
    # matching) put one of the 8 shapes with the other phenotype (adjusted Rand 0.49; the
    # normal-only pull alone kept 1.0). What is tested here is the clustering.
    cfg = FitConfig(device="cpu",
                    model={"encoder": EncoderConfig(widths=(16, 16), heads=2, latent_dim=16),
                           "atlas_vertices": 200},
                    training={"epochs": 3, "atlas_rounds": 2, "batch_size": 2},
                    matching={"refine_steps": 5, "transport_iterations": 0},
                    generator={"epochs": 200}, clustering={"atlases": 2, "restarts": 3})
    _, meshes, _ = mixed
    run = tmp_path_factory.mktemp("run")
    # One thread, whatever the tests before left: the reduction order, and so this small
    # network, must not depend on the order the tests run in.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return MultiAtlasModel(cfg).fit(meshes, run_dir=run), run
    finally:
        torch.set_num_threads(n)


def test_two_phenotypes_are_two_atlases(mixed, fitted):
    _, meshes, labels = mixed
    model, _ = fitted
    assert model.n_atlases_ == 2 and model.memberships_.shape == (8, 2)
    assert adjusted_rand_score(labels, model.labels_) == 1.0
    # the dilated atlas encloses more volume than the healthy one
    vols = model.sample_volumes(model.atlases_)
    dilated = np.bincount(model.labels_, weights=labels).argmax()
    assert vols[dilated] > vols[1 - dilated]
    # predicting the training meshes from scratch (any frame) gives the same clusters
    posed = [m.transformed(_pose(i)) for i, m in enumerate(meshes)]
    np.testing.assert_array_equal(model.predict(posed), model.labels_)
    corr = model.correspond(posed[:2])
    assert corr[0].atlas == model.labels_[0] and corr[0].memberships.shape == (2,)
    assert np.isfinite(model.score(meshes[:3]))
    # Matching settings reach every atlas's matching (the shared network); the model is kept.
    before = model.config
    off = model.correspond(posed[:1], match=MatchConfig(deformation_smoothing=0))[0]
    on = model.correspond(posed[:1], match=MatchConfig(deformation_smoothing=8))[0]
    assert np.abs(on.points - off.points).max() > 1e-4 and on.atlas == off.atlas
    assert model.config == before
    with pytest.raises(ShapeAtlasError, match="pose_iterations needs a single-atlas"):
        model.correspond(posed[:1], match=MatchConfig(pose_iterations=2))


def _pose(i: int) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = _rotation(np.random.default_rng(100 + i))
    t[:3, 3] = [10.0 * i, -5.0, 3.0]
    return t


def test_ancestral_sampling_and_save_load(fitted, tmp_path):
    model, run = fitted
    s = model.sample(400, seed=0)
    assert s.vertices.shape == (400, 200, 3) and s.cluster.shape == (400,)
    share = np.bincount(s.cluster, minlength=2) / 400
    np.testing.assert_allclose(share, model.weights_, atol=0.08)
    # each cluster's samples look like its atlas more than like the other one
    for m in range(2):
        d = [np.linalg.norm(s.vertices[s.cluster == m] - a, axis=2).mean() for a in model.atlases_]
        assert d[m] < d[1 - m]
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m", device="cpu")
    assert isinstance(again, MultiAtlasModel)
    b = again.sample(5, seed=3)
    np.testing.assert_allclose(b.vertices, model.sample(5, seed=3).vertices, atol=1e-6)
    np.testing.assert_array_equal(b.cluster, model.sample(5, seed=3).cluster)
    assert (tmp_path / "m" / "atlas_1.ply").is_file()
    assert (run / "shared" / "model.json").is_file()  # saved as soon as it was trained
    tr = model.traverse(directions=1, steps=3, cluster=1)
    assert tr[0].vertices.shape == (3, 200, 3) and set(tr[0].cluster) == {1}


def test_encode_gives_each_shape_a_code_in_its_own_cluster(mixed, fitted):
    from shapeatlas.models.generative import Codes

    _, meshes, _ = mixed
    model, _ = fitted
    eye = [np.eye(4)] * 3
    codes = model.encode(meshes[:3], transforms=eye)
    assert isinstance(codes, Codes) and codes.z.shape == (3, model.generator_.latent_dim)
    np.testing.assert_array_equal(codes.cluster, model.labels_[:3])
    np.testing.assert_allclose(codes.memberships.sum(axis=1), 1.0)
    for k, m in enumerate(codes.cluster):  # columns beyond the cluster's own size stay 0
        assert not codes.z[k, model.generator_.latent_dims[m]:].any()
    again = model.transform(meshes[:3], transforms=eye)
    np.testing.assert_array_equal(again.z, codes.z)
    back = model.decode(codes)
    np.testing.assert_array_equal(back.cluster, codes.cluster)
    # each decodes close to its training shape (matched to its own atlas), not to another one
    train = model.training_shapes_[:3]
    err = np.linalg.norm(back.vertices - train, axis=2).mean(axis=1)
    other = np.linalg.norm(back.vertices - train[[1, 2, 0]], axis=2).mean(axis=1)
    assert err.max() < 5.0 and np.all(err < other), (err, other)


def test_too_many_atlases_and_bad_settings_are_refused(mixed):
    _, meshes, _ = mixed
    with pytest.raises(ShapeAtlasError, match="3 atlases need at least 9 shapes"):
        MultiAtlasModel(FitConfig(clustering={"atlases": 3})).fit(meshes)
    with pytest.raises(ShapeAtlasError, match="atlases"):
        FitConfig(clustering={"atlases": 0})
    with pytest.raises(ShapeAtlasError, match="several atlases"):
        FitConfig(method="cpd-pca", clustering={"atlases": 2})


def test_fit_run_writes_memberships(mixed, fitted, tmp_path):
    model, run = fitted
    # the shared network is reused on --resume: clustering and VAEs only, in seconds
    from shapeatlas.runs.fit import fit_run

    cfg = model.config
    (run / "config.json").write_text(cfg.to_json())
    with warnings.catch_warnings():
        warnings.simplefilter("error", ClusterWarning)
        again = fit_run(mixed[0] / "groomed", run, cfg, resume=True)
    np.testing.assert_array_equal(again.labels_, model.labels_)
    metrics = json.loads((run / "fit_metrics.json").read_text())
    assert metrics["atlases"]["n_atlases"] == 2
    assert len(metrics["atlases"]["memberships"]) == 8


def test_auto_records_its_choice_and_the_cli_reports_it(mixed, fitted, tmp_path, capsys):
    # (whether it finds the right M is tested above on groups of known size)
    _, meshes, labels = mixed
    model, run = fitted
    auto = MultiAtlasModel(model.config.replace(clustering={"atlases": "auto"}))
    auto = auto.fit(meshes, base=model.base_)
    sel = auto.selection_
    assert sel["criterion"] == "bimodality" and sel["chosen"] == auto.n_atlases_
    assert sel["tests"] == [] and sel["min_group"] == 30 and auto.n_atlases_ == 1
    assert auto.memberships_.shape == (8, 1)
    auto.save(tmp_path / "auto")
    assert load_model(tmp_path / "auto", device="cpu").selection_ == sel
    # the CLI reports the curve (a copy of the run: its shared network is reused, seconds)
    import shutil

    from shapeatlas.cli import main

    shutil.copytree(run / "shared", tmp_path / "cli" / "shared")
    auto_cfg = model.config.replace(clustering={"atlases": "auto"})
    (tmp_path / "cli" / "config.json").write_text(auto_cfg.to_json())
    assert main(["fit", str(mixed[0] / "groomed"), "--out", str(tmp_path / "cli"),
                 "--resume"]) == 0
    assert ("chosen by a bimodality test (a group is split when p < 0.05): no group of 30 "
            "shapes or more to test") in capsys.readouterr().out
