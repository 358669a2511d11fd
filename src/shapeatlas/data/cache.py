"""On-disk cache of per-shape preprocessing, keyed by content.

Grooming a shape (reading, closing, decimating, checking, aligning) costs about a second; a
cohort of thousands costs an hour, and `fit --resume` of a raw folder, or a second `groom` of
the same files with other cohort-level options, would pay it again. Each such result is stored
once under a key made of what determines it, so it is never computed twice:

    key = sha256(kind, the code that computes it, its options, the input's bytes)

- "the code": the shapeatlas version, the source of the modules that compute it (so a changed
  grooming step never reads an old result) and the versions of the libraries they call.
- "the input": the bytes of the input file, or of the arrays handed over.

An entry is one `.npz` of plain arrays plus a JSON string (`meta`), written atomically and read
back with `allow_pickle=False`; an entry that cannot be read (a disk that filled up, a file
edited by hand, compressed members) is a miss, removed and computed again. The caller checks
every field it reads back as it would a fresh result, and a malformed entry is a miss too.

Where: `SHAPEATLAS_CACHE` if set ("off" turns the cache off), else `$XDG_CACHE_HOME/shapeatlas`,
else `~/.cache/shapeatlas`. The folder can be deleted at any time; entries are a few hundred kB
per shape. Nothing is ever written into an input folder.

Why not joblib.Memory (the usual choice): it pickles results and hashes arguments by pickling
them, and pickles are not safe to load from a folder that other users or programs can write;
the entries here hold arrays and JSON only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from shapeatlas.atomic import write_npz_atomic
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.validate import regular_file

log = logging.getLogger(__name__)

#: Environment variable naming the cache folder ("off": no cache).
CACHE_ENV = "SHAPEATLAS_CACHE"
#: Bumped when the layout of entries changes (old entries are then ignored).
CACHE_FORMAT = 1
#: Libraries whose versions are part of every key (they compute parts of the results).
KEY_LIBRARIES = ("numpy", "scipy", "trimesh", "scikit-image", "libigl", "meshio", "nibabel",
                 "pynrrd")
#: Largest entry read back (a groomed shape of 100k vertices is about 10 MB).
MAX_ENTRY_BYTES = 512 * 1024**2


def default_cache_dir() -> Path | None:
    """The cache folder the environment asks for (`CACHE_ENV`, XDG, home); None when off."""
    given = os.environ.get(CACHE_ENV)
    if given is not None:
        return None if given.strip().lower() in ("", "off", "0", "none") else Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shapeatlas"


@lru_cache(maxsize=None)
def code_digest(packages: tuple[str, ...]) -> str:
    """sha256 of the shapeatlas version, the sources of the shapeatlas `packages` (e.g.
    "shapeatlas.mesh") and the versions of `KEY_LIBRARIES`."""
    try:
        version = metadata.version("shapeatlas")
    except metadata.PackageNotFoundError:  # run from a source tree
        version = "-"
    h = hashlib.sha256(f"{CACHE_FORMAT}:{version}".encode())
    root = Path(__file__).resolve().parents[1]  # the shapeatlas package
    for package in packages:
        folder = root.joinpath(*package.split(".")[1:])
        for src in sorted(folder.glob("*.py")):
            h.update(src.name.encode())
            h.update(src.read_bytes())
    for lib in KEY_LIBRARIES:
        try:
            version = metadata.version(lib)
        except metadata.PackageNotFoundError:
            version = "-"
        h.update(f"{lib}={version};".encode())
    return h.hexdigest()


def file_digest(path: str | Path, *, max_bytes: int) -> str:
    """Hex sha256 of a regular file's bytes (`ShapeAtlasError` for anything else, or a file
    larger than `max_bytes`; at most that many bytes are read)."""
    regular_file(path, max_bytes=max_bytes)
    h = hashlib.sha256()
    left = max_bytes
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(min(1 << 20, left + 1)), b""):
            left -= len(block)
            if left < 0:
                raise ShapeAtlasError(f"{path}: more than the {max_bytes:,} bytes expected")
            h.update(block)
    return h.hexdigest()


def array_digest(arrays: Iterable[np.ndarray]) -> str:
    """sha256 of arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Entry:
    """What the cache holds for one key: arrays and JSON-able metadata."""

    arrays: dict[str, np.ndarray]
    meta: dict


@dataclass(frozen=True)
class DiskCache:
    """A cache folder; `get`/`put` by key (`key`). Safe to share between processes: an entry
    is written atomically, and two processes computing the same key write the same bytes."""

    root: Path

    @classmethod
    def resolve(cls, setting: "str | Path | bool | None | DiskCache" = True
                ) -> "DiskCache | None":
        """True: the default folder (`default_cache_dir`, None when off); False or None: no
        cache; a path: that folder."""
        if isinstance(setting, DiskCache):
            return setting
        if setting is True:
            where = default_cache_dir()
            return None if where is None else cls(where)
        if setting is False or setting is None:
            return None
        return cls(Path(setting))

    @staticmethod
    def key(kind: str, packages: tuple[str, ...], options: Mapping, *digests: str) -> str:
        """The key of a result of `kind`, computed by the code of `packages` with `options`
        (JSON-able) from inputs of the given content digests."""
        h = hashlib.sha256(kind.encode())
        h.update(code_digest(tuple(packages)).encode())
        h.update(json.dumps(options, sort_keys=True, default=str).encode())
        for d in digests:
            h.update(d.encode())
        return f"{kind}-{h.hexdigest()}"

    def _path(self, key: str) -> Path:
        kind, _, digest = key.rpartition("-")
        return self.root / kind / digest[:2] / f"{digest}.npz"

    def get(self, key: str) -> Entry | None:
        """The entry stored under `key`, or None (absent or unreadable: then removed)."""
        path = self._path(key)
        try:
            if path.stat().st_size > MAX_ENTRY_BYTES:
                raise ValueError(f"larger than {MAX_ENTRY_BYTES} bytes")
            with zipfile.ZipFile(path) as zf:  # stored, as written: nothing to inflate
                if any(m.compress_type != zipfile.ZIP_STORED for m in zf.infolist()):
                    raise ValueError("compressed members")
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(str(arrays.pop("__meta__")))
            if not isinstance(meta, dict):
                raise ValueError("metadata is not a mapping")
            return Entry(arrays, meta)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is a miss
            log.warning("cache entry %s unreadable (%s): computing it again", path, exc)
            try:
                path.unlink()
            except OSError:
                pass
            return None

    def put(self, key: str, entry: Entry) -> None:
        """Store `entry` under `key`; a cache that cannot be written is a warning, never an
        error (the result is still returned to the caller)."""
        if "__meta__" in entry.arrays:
            raise ValueError("'__meta__' is a reserved array name")
        try:
            write_npz_atomic(self._path(key), {**entry.arrays,
                                               "__meta__": np.array(json.dumps(entry.meta))})
        except (OSError, TypeError, ValueError) as exc:
            log.warning("cannot write to the cache %s (%s): going on without it", self.root, exc)
