"""The on-disk cache of per-shape grooming (`shapeatlas.data.cache`, `groom_cohort(cache=)`)."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from shapeatlas.data.cache import DiskCache, Entry, default_cache_dir
from shapeatlas.data.synthetic_lv import write_lv_cohort
from shapeatlas.mesh import groom
from shapeatlas.mesh.groom import GroomOptions, groom_cohort


def test_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SHAPEATLAS_CACHE", "off")
    assert default_cache_dir() is None and DiskCache.resolve(True) is None
    monkeypatch.setenv("SHAPEATLAS_CACHE", str(tmp_path / "c"))
    assert DiskCache.resolve(True).root == tmp_path / "c"
    monkeypatch.delenv("SHAPEATLAS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "shapeatlas"
    assert DiskCache.resolve(False) is None and DiskCache.resolve(None) is None
    assert DiskCache.resolve(tmp_path).root == tmp_path


def test_entries_round_trip_and_keys_follow_content(tmp_path):
    cache = DiskCache(tmp_path)
    key = DiskCache.key("t", ("shapeatlas.mesh",), {"a": 1}, "d1")
    assert DiskCache.key("t", ("shapeatlas.mesh",), {"a": 1}, "d1") == key
    assert DiskCache.key("t", ("shapeatlas.mesh",), {"a": 2}, "d1") != key
    assert DiskCache.key("t", ("shapeatlas.mesh",), {"a": 1}, "d2") != key
    assert cache.get(key) is None
    cache.put(key, Entry({"v": np.arange(6.0).reshape(2, 3)}, {"x": [1, "y"]}))
    got = cache.get(key)
    assert np.array_equal(got.arrays["v"], np.arange(6.0).reshape(2, 3))
    assert got.meta == {"x": [1, "y"]}


def test_an_unreadable_entry_is_a_miss_and_removed(tmp_path, caplog):
    cache = DiskCache(tmp_path)
    key = DiskCache.key("t", (), {}, "d")
    cache.put(key, Entry({"v": np.zeros(3)}, {}))
    (path,) = tmp_path.rglob("*.npz")
    path.write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING):
        assert cache.get(key) is None
    assert "unreadable" in caplog.text and not path.exists()
    # A pickled object array is refused, never unpickled; so are compressed members.
    np.savez(path, v=np.array([object()], dtype=object), __meta__=np.array("{}"))
    assert cache.get(key) is None and not path.exists()
    np.savez_compressed(path, v=np.zeros(10**6), __meta__=np.array("{}"))
    assert cache.get(key) is None and not path.exists()


def test_an_unwritable_cache_is_a_warning(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING):
        DiskCache(blocker / "c").put("t-00", Entry({"v": np.zeros(1)}, {}))
    assert "cannot write to the cache" in caplog.text


@pytest.fixture(scope="module")
def raw_lvs(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw") / "lv"
    write_lv_cohort(raw, n=4, seed=3, n_vertices=(700, 800))
    return raw


def _folder_bytes(folder):
    """Every file's bytes but provenance.json's (its run id is new in every run)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.name != "provenance.json"}


def test_grooming_again_reads_every_shape_back_and_writes_the_same(raw_lvs, tmp_path,
                                                                    monkeypatch, caplog):
    opts = GroomOptions(target_vertices=500, watertight="auto", n_jobs=1)
    plain = groom_cohort(raw_lvs, tmp_path / "plain", opts, cache=False)
    groom_cohort(raw_lvs, tmp_path / "first", opts, cache=tmp_path / "cache")
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 2 * len(plain.shapes)
    before = {p: p.stat().st_mtime_ns for p in raw_lvs.iterdir()}

    def fail(*_args, **_kwargs):
        raise AssertionError("groomed again")

    # Nothing is computed again: the stage-1 work and the alignments come from the cache.
    monkeypatch.setattr(groom, "prepare_shapes", fail)
    monkeypatch.setattr(groom, "align_to_reference", fail)
    with caplog.at_level(logging.INFO, logger="shapeatlas"):
        again = groom_cohort(raw_lvs, tmp_path / "again", opts, cache=tmp_path / "cache")
    assert f"{len(plain.shapes)} of {len(plain.shapes)} shapes read back" in caplog.text
    # The same folder as grooming without a cache, byte for byte.
    assert again.manifest == plain.manifest and not again.failed
    assert _folder_bytes(tmp_path / "again") == _folder_bytes(tmp_path / "plain")
    assert {p: p.stat().st_mtime_ns for p in raw_lvs.iterdir()} == before  # inputs untouched


def test_other_options_or_content_are_computed_anew(raw_lvs, tmp_path):
    cache = DiskCache(tmp_path / "cache")
    opts = GroomOptions(target_vertices=500, n_jobs=1)
    name = sorted(raw_lvs.iterdir())[0]
    key = groom._prepare_key(str(name), opts)
    assert groom._prepare_key(str(name), opts.__class__(target_vertices=600, n_jobs=1)) != key
    # Cohort-level options (the reference, the worker count) do not change a shape's stage 1.
    assert groom._prepare_key(str(name), GroomOptions(target_vertices=500, n_jobs=2,
                                                       reference="lv_001")) == key
    edited = tmp_path / name.name
    edited.write_bytes(name.read_bytes().replace(b"\n", b"\n\n", 1))
    assert groom._prepare_key(str(edited), opts) != key
    assert cache.get(key) is None


def _fake_prepare(calls: list, message: str | None = None):
    """A stand-in for `prepare_shapes`: one tiny valid result, logging `message` if given."""
    def prepare(path, opts):
        calls.append(path)
        if message:
            logging.getLogger("shapeatlas.mesh.remesh").warning("%s: %s", path, message)
        return [{"ok": True, "suffix": "", "vertices": np.eye(3), "faces": np.array([[0, 1, 2]]),
                 "cap": None, "volume_check": {"verdict": "ok"}, "seconds": 0.1,
                 "mirrored": False, "unit_scale": 1.0, "voxel_volume_mm3": None,
                 "validity": {"valid": True, "signed_volume": None}}]
    return prepare


def test_a_cached_shape_says_its_messages_again(tmp_path, monkeypatch, caplog):
    calls = []

    prepare = _fake_prepare(calls, message="smoothed something")

    src = tmp_path / "a.ply"
    src.write_bytes(b"ply")
    monkeypatch.setattr(groom, "prepare_shapes", prepare)
    cache = DiskCache(tmp_path / "cache")
    first = groom._prepare_one(str(src), GroomOptions(), cache)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        second = groom._prepare_one(str(src), GroomOptions(), cache)
    assert calls == [str(src)] and "smoothed something" in caplog.text
    assert np.array_equal(first[0]["vertices"], second[0]["vertices"]) and second[0]["cached"]
    # A file of the same content elsewhere reads back its own name in the messages.
    other = tmp_path / "elsewhere" / "b.ply"
    other.parent.mkdir()
    other.write_bytes(b"ply")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        groom._prepare_one(str(other), GroomOptions(), cache)
    assert calls == [str(src)] and f"{other}: smoothed something" in caplog.text
    assert str(src) not in caplog.text


@pytest.mark.parametrize("tamper", [
    lambda a, m: a.update({"0.vertices": np.zeros((3, 2))}),                 # wrong shape
    lambda a, m: a.update({"0.faces": np.array([[0, 1, 7]])}),               # out of range
    lambda a, m: a.update({"0.vertices": np.full((3, 3), np.nan)}),          # not finite
    lambda a, m: m["results"][0].update({"suffix": "/../../escaped"}),       # a path
    lambda a, m: m["results"][0].update({"unit_scale": "x"}),
    lambda a, m: m["results"][0].update({"validity": {"signed_volume": "x"}}),
    lambda a, m: m["results"][0].update({"notes": "not a list"}),
    lambda a, m: m.update({"log": [[1]]}),
])
def test_a_tampered_entry_is_groomed_again(tmp_path, monkeypatch, caplog, tamper):
    calls = []

    prepare = _fake_prepare(calls)

    src = tmp_path / "a.ply"
    src.write_bytes(b"ply")
    monkeypatch.setattr(groom, "prepare_shapes", prepare)
    cache = DiskCache(tmp_path / "cache")
    groom._prepare_one(str(src), GroomOptions(), cache)
    (entry,) = (tmp_path / "cache").rglob("groom/*/*.npz")
    with np.load(entry) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(json.loads(str(arrays.pop("__meta__")))["text"])
    tamper(arrays, meta)
    np.savez(entry, **arrays, __meta__=np.array(json.dumps({"text": json.dumps(meta)})))
    with caplog.at_level(logging.WARNING):
        (result,) = groom._prepare_one(str(src), GroomOptions(), cache)
    assert len(calls) == 2 and "unusable" in caplog.text
    assert result["suffix"] == "" and "cached" not in result


def test_a_resumed_fit_of_a_raw_folder_grooms_nothing_again(raw_lvs, tmp_path, monkeypatch):
    from shapeatlas.runs.fit import load_cohort
    from shapeatlas.training.config import FitConfig

    cfg = FitConfig(grooming={"target_vertices": 500})
    first, _ = load_cohort(raw_lvs, tmp_path / "run", cfg, cache=tmp_path / "cache")
    monkeypatch.setattr(groom, "prepare_shapes", lambda *a, **k: pytest.fail("groomed again"))
    monkeypatch.setattr(groom, "align_to_reference", lambda *a, **k: pytest.fail("aligned again"))
    # As `fit --resume` does: the run's groomed folder is made again, from the cache.
    again, info = load_cohort(raw_lvs, tmp_path / "run", cfg, cache=tmp_path / "cache")
    assert info["groomed_by_fit"] and [m.name for m in again] == [m.name for m in first]
    for a, b in zip(first, again):
        assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["missing", "fifo"])
def test_an_unreadable_file_is_reported_as_without_a_cache(tmp_path, kind):
    path = str(tmp_path / "bad.ply")
    if kind == "fifo":
        os.mkfifo(path)  # hashing it would wait forever for a writer
    (entry,) = groom._prepare_one(path, GroomOptions(), DiskCache(tmp_path / "cache"))
    (plain,) = groom._prepare_one(path, GroomOptions(), None)
    assert not entry["ok"] and entry["error"] == plain["error"] and "unexpected" not in entry["error"]


@pytest.mark.parametrize("arrays, meta", [
    ({"matrix": np.full((4, 4), "x")}, {"scale": 1.0, "rms": 0.0}),
    ({"matrix": np.eye(4)}, {"scale": float("nan"), "rms": 0.0}),
    ({"matrix": np.eye(4)}, {"scale": 1.0, "rms": "x"}),
    ({"matrix": np.eye(3)}, {"scale": 1.0, "rms": None}),
])
def test_a_tampered_alignment_is_computed_again(tmp_path, icosphere, arrays, meta):
    cache = DiskCache(tmp_path)
    moved = icosphere.with_vertices(icosphere.vertices @ np.diag([1.2, 1.0, 0.9]) + 3.0)
    args = (moved.vertices, moved.faces, icosphere.vertices, icosphere.faces, False, cache)
    fresh = groom._align_one(args)
    (path,) = tmp_path.rglob("align/*/*.npz")
    np.savez(path, **arrays, __meta__=np.array(json.dumps(meta)))
    again = groom._align_one(args)
    assert np.allclose(again["matrix"], fresh["matrix"]) and again["scale"] == fresh["scale"]
    assert groom._align_one(args)["rms"] == fresh["rms"]  # stored anew, read back
