"""Joint (end-to-end) training of the β-VAE with the correspondence network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shapeatlas.errors import ShapeAtlasError
from shapeatlas.models.atlas import AtlasModel
from shapeatlas.training.config import FitConfig
from shapeatlas.training.loop import CHECKPOINT_NAME


def _net_state(model: AtlasModel) -> dict:
    return {k: v.clone() for k, v in model.net_.state_dict().items()}


def test_joint_loss_reaches_the_correspondence_network(tiny_cohort, tiny_config):
    _, meshes, _ = tiny_cohort
    cfg = tiny_config.replace(training={"epochs": 8, "patience": 0, "atlas_rounds": 1},
                              generator={"epochs": 50})
    after = AtlasModel(cfg).fit(meshes)
    silent = AtlasModel(cfg.replace(generator={"mode": "joint", "weight": 0.0})).fit(meshes)
    joint = AtlasModel(cfg.replace(generator={"mode": "joint", "weight": 1.0})).fit(meshes)
    a, s, j = _net_state(after), _net_state(silent), _net_state(joint)
    # weight 0: the β-VAE trains alongside but the correspondence network is untouched by it
    assert all(torch.equal(a[k], s[k]) for k in a)
    # a positive weight changes the correspondence network's training
    assert any(not torch.equal(a[k], j[k]) for k in a)
    rows = joint.history_
    assert {"gen_rms_mm", "gen_kl"} <= set(rows[0])
    assert rows[-1]["gen_rms_mm"] < rows[0]["gen_rms_mm"]  # the joint β-VAE learns
    # the warm-started generator ends as a usable sampler of LV-sized shapes
    vols = joint.sample_volumes(joint.sample(10, seed=0).vertices)
    assert np.all(vols > 0) and joint.real_volumes_.min() / 2 < np.median(vols)
    assert np.median(vols) < 2 * joint.real_volumes_.max()


def test_joint_resume_restores_the_generator_too(tiny_cohort, tiny_config, tmp_path):
    _, meshes, _ = tiny_cohort
    cfg = tiny_config.replace(training={"epochs": 2, "atlas_rounds": 1},
                              generator={"epochs": 20, "mode": "joint", "weight": 1.0})
    full = AtlasModel(cfg).fit(meshes, run_dir=tmp_path / "full")

    class Killed(Exception):
        pass

    def kill(info):
        if info.get("epoch") == 2 and info["step"] == 1:
            raise Killed

    with pytest.raises(Killed):
        AtlasModel(cfg).fit(meshes, run_dir=tmp_path / "cut", progress=kill)
    resumed = AtlasModel(cfg).fit(meshes, run_dir=tmp_path / "cut", resume=True)
    assert [r["gen_rms_mm"] for r in resumed.history_] == [r["gen_rms_mm"] for r in full.history_]
    np.testing.assert_array_equal(resumed.sample(3, seed=1).vertices,
                                  full.sample(3, seed=1).vertices)
    # a joint checkpoint cannot be resumed by a two-stage configuration, and says why
    with pytest.raises(ShapeAtlasError, match="generator.mode"):
        AtlasModel(cfg.replace(generator={"mode": "after"})).fit(
            meshes, run_dir=tmp_path / "cut", resume=True)
    assert (tmp_path / "cut" / CHECKPOINT_NAME).is_file()


def test_joint_needs_the_network_method():
    with pytest.raises(ShapeAtlasError, match="joint"):
        FitConfig(method="cpd-pca", generator={"mode": "joint"})
    with pytest.raises(ShapeAtlasError, match="generator.mode"):
        FitConfig(generator={"mode": "both"})
