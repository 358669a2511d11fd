"""Atomic file writing: a crash or Ctrl-C never leaves a half-written file behind.

Everything shapeatlas writes goes to a temporary file in the destination folder first and is then
moved into place with `os.replace`, which is atomic on POSIX and Windows file systems.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

__all__ = ["atomic_path", "write_atomic", "write_npz_atomic", "write_text_atomic"]


def _file_mode() -> int:
    """The permissions a plainly created file would get (mkstemp makes files private)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` with the same extension; move it into place on success.

    On any exception (Ctrl-C included) the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _file_mode())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_atomic(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Call `writer(tmp_path)` and move the result to `path` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_npz_atomic(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an uncompressed .npz atomically with fixed zip timestamps (equal arrays, equal bytes).

    Arrays are saved with `allow_pickle=False`, so the file can be loaded safely.
    """
    import zipfile

    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for key, arr in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with zf.open(info, "w") as fh:
                    a = np.asarray(arr)  # keeps 0-d scalars 0-d (ascontiguousarray would not)
                    a = a if a.flags.c_contiguous else a.copy(order="C")
                    np.lib.format.write_array(fh, a, allow_pickle=False)
