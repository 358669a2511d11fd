"""Helpers shared by the benchmarks: provenance of a result, atomic JSON output, and the pose
helpers of `rasm_lv.py` (rotation residuals against the truth, oracle poses).

Every benchmark writes its figures with `write_json`, which adds `provenance()` under the key
"provenance": the commit (and whether the working tree had changes), the package, Python and
torch versions, the platform, the CPU count, the date and the command line.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _git(*args: str) -> str | None:
    try:
        p = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True,
                           timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout if p.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _command() -> list[str] | None:
    """The command line, the script named as `bench/NAME.py` when it is one of these."""
    if not sys.argv or not sys.argv[0]:
        return None
    script = Path(sys.argv[0])
    if script.suffix == ".py" and script.resolve().parent == HERE:
        script = Path("bench") / script.name
    return [str(script), *sys.argv[1:]]


def provenance() -> dict:
    """Where and with what a result was measured (no host name, no user name)."""
    rev = _git("rev-parse", "--short", "HEAD")
    status = _git("status", "--porcelain")
    torch = sys.modules.get("torch")
    return {
        "commit": rev.strip() if rev else "unknown",
        "dirty": None if status is None else bool(status.strip()),
        "shapeatlas": _version("shapeatlas"),
        "python": platform.python_version(),
        "torch": getattr(torch, "__version__", None) or _version("torch"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": _command(),
    }


def _plain(x):
    """json.dumps fallback: numpy scalars and arrays, paths."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    """Write `payload` with `provenance()` under "provenance" to `path`, atomically: a temporary
    file in the same folder, then `os.replace`, so a reader never sees half a file. -> path"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**payload, "provenance": provenance()}, indent=1, default=_plain) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def rotation_residual(names, truth, poses) -> np.ndarray:
    """Each shape's (aligned <- domain) rotation relative to the cohort's mean one, as a
    rotation vector in the domain frame (degrees; the long axis is z for the LV, x for the
    kidney). -> (N, 3)"""
    from scipy.spatial.transform import Rotation

    rs = []
    for n in names:
        m = (poses[n] @ truth[n].pose)[:3, :3]
        rs.append(m / np.cbrt(np.linalg.det(m)))
    rot = Rotation.from_matrix(np.array(rs))
    return np.degrees((rot.mean().inv() * rot).as_rotvec())


def true_correspondence_poses(names, truth, poses, *, n_points: int = 4000,
                              iterations: int = 10, seed: int = 0) -> dict:
    """Oracle poses: generalised Procrustes (rotation + translation) of every shape's points at
    the same random domain coordinates (true correspondences), started from `poses`.
    -> NAME -> (4, 4) file -> aligned."""
    from shapeatlas.models.clustering import rigid_consensus

    u = np.random.default_rng(seed).normal(size=(n_points, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    pts = {}
    for n in names:
        full = poses[n] @ truth[n].pose
        pts[n] = truth[n].surface(u) @ full[:3, :3].T + full[:3, 3]
    _, extra, _ = rigid_consensus(np.stack([pts[n] for n in names]), iterations=iterations)
    return {n: e @ poses[n] for n, e in zip(names, extra)}
