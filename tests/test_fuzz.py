"""Fuzzing what shapeatlas reads back: seeded mutations of valid files (wrong types, missing
keys, huge, negative or NaN numbers, truncated or flipped bytes, tensors of the wrong dtype or
shape) must load or raise `ShapeAtlasError` with one line: never another exception, never a
hang. Only loaders run (no matching, no training), so hundreds of cases take seconds."""

from __future__ import annotations

import json
import math
import random
import signal
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import trimesh
from model_folders import save_atlas_model, save_cpd_model, save_multi_atlas_model

from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.groom import MANIFEST_NAME, load_groomed
from shapeatlas.mesh.io import write_mesh
from shapeatlas.runs.folder import TRAINING_POSES_NAME, read_training_poses
from shapeatlas.runs.load import load_model
from shapeatlas.training.config import FitConfig

#: Seconds one case may take before it counts as a hang.
CASE_SECONDS = 10
SEED = 20261206

BAD_VALUES: list[Any] = [
    None, True, "two", "", "../../etc/passwd", -1, 0, 1, 2.5, 10**9, 10**30, -1e308, 1e308,
    math.nan, math.inf, -math.inf, [], [1, 2], [[1, 2], [3]], {}, {"a": 1}, [None] * 4,
    [[math.nan] * 4] * 4, "x" * 5000, 10**400,
]


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (a tuple of keys / indices) into a JSON value, capped per list."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            out += _paths(v, prefix + (i,))
    return out


def mutate_json(obj: Any, rng: random.Random) -> bytes:
    """One mutation of a JSON value, serialised (NaN/Infinity allowed, as Python writes them)."""
    how = rng.random()
    if how < 0.08:
        return json.dumps(rng.choice([[], 1, "x", None, [obj]])).encode()
    text = json.dumps(obj).encode()
    if how < 0.18:
        return text[:rng.randrange(len(text))]
    if how < 0.24:
        data = bytearray(text)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    obj = json.loads(text)
    path = rng.choice(_paths(obj)[1:])
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[path[-1]]
    else:
        parent[path[-1]] = rng.choice(BAD_VALUES)
    return json.dumps(obj).encode()


def mutate_tensors(data: bytes, rng: random.Random) -> bytes:
    """One mutation of a safetensors file's bytes or of one of its tensors."""
    from safetensors.torch import load, save

    how = rng.random()
    if how < 0.15:
        return data[:rng.randrange(len(data))]
    if how < 0.25:
        out = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            out[rng.randrange(min(len(out), 400))] = rng.randrange(256)
        return bytes(out)
    tensors = load(data)
    key = rng.choice(sorted(tensors))
    t = tensors[key]
    op = rng.randrange(7)
    if op == 0:
        del tensors[key]
    elif op == 1:
        tensors[key] = t.to(rng.choice([torch.int32, torch.float16, torch.bool, torch.uint8,
                                        torch.float64, torch.int64]))
    elif op == 2 and t.dim() and t.shape[0] > 1:
        tensors[key] = t[: rng.randrange(1, t.shape[0])].clone()
    elif op == 3:
        tensors[key] = t.reshape(-1).clone() if t.dim() != 1 else t.reshape(1, -1).clone()
    elif op == 4 and t.numel():
        t = t.clone().double() if not t.dtype.is_floating_point else t.clone()
        t.view(-1)[rng.randrange(t.numel())] = rng.choice([math.nan, math.inf, -1e30, 1e30])
        tensors[key] = t
    elif op == 5 and t.numel():
        tensors[key] = (t.clone() * rng.choice([-1, 1000, 0]))
    else:
        tensors["extra." + key] = t.clone()
    return save({k: v.contiguous() for k, v in tensors.items()})


def _groomed_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    shapes = []
    for i in range(3):
        t = trimesh.creation.icosphere(subdivisions=1, radius=20.0 + i)
        write_mesh(Mesh(t.vertices, t.faces, name=f"s{i}"), root / f"s{i}.ply")
        shapes.append({"name": f"s{i}", "source": str(root / f"s{i}.ply"),
                       "output": f"s{i}.ply", "transform": np.eye(4).tolist(),
                       "cap_turn": None})
    (root / MANIFEST_NAME).write_text(json.dumps(
        {"format": "shapeatlas-groom", "version": 1, "shapes": shapes, "failed": []}))
    return root


@pytest.fixture(scope="module")
def targets(tmp_path_factory) -> list[tuple[str, Path, Callable[[], Any], int]]:
    """(what, the file mutated, the loader that reads it, cases)."""
    from shapeatlas.data import load_cohort_truth, write_lv_cohort

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fuzz")
    rasm, cpd = save_atlas_model(root / "rasm"), save_cpd_model(root / "cpd")
    multi = save_multi_atlas_model(root / "multi")
    (root / "config.json").write_text(FitConfig().to_json())
    groomed = _groomed_folder(root / "groomed")
    poses = root / "run"
    poses.mkdir()
    (poses / TRAINING_POSES_NAME).write_text(json.dumps(
        {"format": "shapeatlas-training-poses", "version": 1, "poses": {
            "ab" * 32: {"name": "s0", "file": "s0.ply", "transform": np.eye(4).tolist()}}}))
    truth = root / "truth"
    write_lv_cohort(truth, n=2, seed=0, n_vertices=(300, 320))

    def model(folder: Path):
        return lambda: load_model(folder, device="cpu")

    return [
        ("rasm model.json", rasm / "model.json", model(rasm), 110),
        ("cpd model.json", cpd / "model.json", model(cpd), 60),
        ("multi model.json", multi / "model.json", model(multi), 60),
        ("rasm safetensors", rasm / "model.safetensors", model(rasm), 110),
        ("cpd safetensors", cpd / "model.safetensors", model(cpd), 40),
        ("multi safetensors", multi / "model.safetensors", model(multi), 50),
        ("config.json", root / "config.json", lambda: FitConfig.from_json(root / "config.json"),
         120),
        ("groom.json", groomed / MANIFEST_NAME, lambda: load_groomed(groomed), 80),
        ("training_poses.json", poses / TRAINING_POSES_NAME, lambda: read_training_poses(poses),
         60),
        ("truth.json", truth / "truth.json", lambda: load_cohort_truth(truth), 40),
    ]


@pytest.mark.timeout(300)
def test_mutated_files_load_or_fail_in_one_line(targets):
    rng = random.Random(SEED)
    failures, cases, refused = [], 0, 0
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for what, path, loader, n in targets:
            original = path.read_bytes()
            loader()  # the unmutated file loads
            is_json = path.suffix == ".json"
            for case in range(n):
                data = (mutate_json(json.loads(original), rng) if is_json
                        else mutate_tensors(original, rng))
                path.write_bytes(data)
                cases += 1
                signal.alarm(CASE_SECONDS)
                try:
                    loader()
                except ShapeAtlasError as exc:
                    refused += 1
                    if "\n" in str(exc):
                        failures.append(f"{what} #{case}: a message of several lines: {exc}")
                except Hang:
                    failures.append(f"{what} #{case}: no answer within {CASE_SECONDS} s")
                except Exception as exc:  # noqa: BLE001 - exactly what the test looks for
                    failures.append(f"{what} #{case}: {type(exc).__name__}: {exc}"[:300])
                finally:
                    signal.alarm(0)
            path.write_bytes(original)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert not failures, f"{len(failures)} of {cases} cases:\n" + "\n".join(failures[:20])
    assert cases >= 500 and refused > cases // 2


@pytest.mark.parametrize("literal", ["1" + "0" * 400, "1" + "0" * 5000])
def test_huge_integer_literals_are_one_line(tmp_path, literal):
    # 401 digits overflow a float; 5,001 are more than Python converts from text at all.
    from shapeatlas.training.config import FitConfig

    path = tmp_path / "config.json"
    path.write_text('{"lr": ' + literal + "}")
    with pytest.raises(ShapeAtlasError, match="config.json") as info:
        FitConfig.from_json(path)
    assert "\n" not in str(info.value)
