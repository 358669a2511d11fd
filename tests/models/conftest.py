"""A tiny groomed LV cohort and a CPU-sized configuration shared by the model tests."""

from __future__ import annotations

import pytest
import torch
from shapes import groomed_lv_cohort

from shapeatlas.nn.encoder import EncoderConfig
from shapeatlas.training.config import FitConfig


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models on a 2-core machine: one thread avoids the threads waiting on each other.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("lv")
    meshes, manifest = groomed_lv_cohort(root, n=5, seed=7)
    return root, meshes, manifest


@pytest.fixture
def tiny_config() -> FitConfig:
    return FitConfig(device="cpu",
                     model={"encoder": EncoderConfig(widths=(16, 16), heads=2, latent_dim=16),
                            "atlas_vertices": 200},
                     training={"epochs": 2, "atlas_rounds": 2, "batch_size": 2},
                     matching={"refine_steps": 5}, grooming={"target_vertices": 500},
                     generator={"epochs": 200})
