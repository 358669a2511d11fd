"""Output folders: each belongs to one run, is built aside, and appears whole or not at all.

Every verb that writes (groom, synth, fit, correspond, sample, reconstruct, evaluate, demo) and
the library function behind it writes through `staged_output`:

- `check_output` refuses, before any work, an output folder that is an existing file, whose
  parent cannot be written, that is, lies inside or contains an input folder (or the folder of
  an input file) or the current working directory, or that is not empty (unless `overwrite`).
- The output is built in a staging folder beside it, `OUT.partial/new` (same parent, so the
  final move is a rename); `OUT.partial/shapeatlas-staging.json` marks the staging folder as
  shapeatlas's. A staging folder without that marker is never deleted.
- At the end the new folder is moved into place: a rename where OUT does not exist, else an
  atomic exchange (Linux `renameat2(RENAME_EXCHANGE)`; elsewhere the old folder is renamed aside
  first), after which the old folder is deleted. A crash or `kill -9` at any moment leaves OUT
  either the old folder or the new one, never a mix; the next run into OUT removes the stale
  staging folder (a fit's, which can be resumed, is kept for `fit --resume`).
- On an exception (Ctrl-C included) the staging folder is removed, unless the caller keeps it
  to resume from (`resumable`).
- Every output folder holds `provenance.json`: verb, shapeatlas version, command line, date,
  Python, torch and platform, and the device (`cpu` for the verbs that run no network).

Build-vs-buy: `tempfile.TemporaryDirectory` is created in a different place and deleted on
exit, and no well-kept library offers an atomic directory exchange; the exchange itself is one
libc call, reached through ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import logging
import os
import platform
import shlex
import shutil
import socket
import sys
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

from shapeatlas import __version__
from shapeatlas.atomic import write_text_atomic
from shapeatlas.errors import ShapeAtlasError

__all__ = ["PROVENANCE_NAME", "STAGING_MARKER", "Staging", "check_output", "file_stem",
           "output_names", "recorded_command", "staged_output", "staging_dir", "work_dir",
           "write_provenance"]

log = logging.getLogger(__name__)

PROVENANCE_NAME = "provenance.json"
PROVENANCE_FORMAT = "shapeatlas-provenance"
#: Inside `OUT.partial`: says the folder is shapeatlas's staging folder, and whose.
STAGING_MARKER = "shapeatlas-staging.json"
STAGING_FORMAT = "shapeatlas-staging"
_NEW, _OLD = "new", "old"
#: The command line provenance.json records: the one `recorded_command` sets (the command line
#: sets its own verb's), else the process's `sys.argv`.
_COMMAND: ContextVar[str | None] = ContextVar("shapeatlas_command", default=None)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def staging_dir(out: str | Path) -> Path:
    """The staging folder of an output folder: `OUT.partial`, beside it."""
    out = Path(out)
    return out.parent / f"{out.name}.partial"


def work_dir(out: str | Path) -> Path:
    """Where the output of `out` is built: `OUT.partial/new`."""
    return staging_dir(out) / _NEW


def _absolute(path: str | Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _related(a: Path, b: Path) -> str | None:
    """How folder a stands to folder b: 'is', 'lies inside', 'contains', or None."""
    if a == b:
        return "is"
    if b in a.parents:
        return "lies inside"
    if a in b.parents:
        return "contains"
    return None


def _input_folders(inputs: Sequence[str | Path]) -> list[tuple[Path, bool]]:
    """(folder, whether it was given as a folder) of every input: a folder, or a file's folder."""
    folders = []
    for p in inputs:
        p = _resolved(p)
        folders.append((p, True) if p.is_dir() else (p.parent, False))
    return folders


def _describe(out: Path) -> str:
    """What a non-empty folder holds, in a few words."""
    prov = out / PROVENANCE_NAME
    if prov.is_file():
        try:
            d = json.loads(prov.read_text())
            return f"the output of 'shapeatlas {d['verb']}' of {d['date'][:19]}"
        except (ValueError, KeyError, TypeError, OSError):
            pass
    entries = sorted(p.name for p in out.iterdir())
    return (f"{len(entries)} file{'s' if len(entries) != 1 else ''} or folders "
            f"({', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''})")


def check_output(out: str | Path, *, overwrite: bool = False,
                 inputs: Sequence[str | Path] = ()) -> Path:
    """Refuse an output folder that cannot or must not be written; -> its absolute path.

    Refused: an existing file; a folder whose nearest existing parent is a file or not
    writable; a folder that is, lies inside or contains an input folder, or that is or contains
    the folder of an input file (`inputs`), or that contains the current working directory; a
    folder that is not
    empty, unless `overwrite` (then it is replaced whole at the end).
    """
    out = _absolute(out)
    if out.exists() and not out.is_dir():
        raise ShapeAtlasError(f"{out}: exists and is a file, not a folder: choose another --out")
    real = _resolved(out)
    for folder, given in _input_folders(inputs):
        how = _related(real, folder)
        # A folder next to an input file (its folder's subfolder) holds none of the inputs.
        if how and (given or how != "lies inside"):
            raise ShapeAtlasError(f"output folder {out} {how} the input folder {folder}: "
                                  "choose another --out (inputs are never written)")
    cwd = _resolved(Path.cwd())
    if _related(real, cwd) in ("is", "contains"):
        raise ShapeAtlasError(f"output folder {out} contains the current working folder "
                              f"{cwd}: choose another --out")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ShapeAtlasError(f"cannot create {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (
            out.parent.is_dir() and not os.access(out.parent, os.W_OK | os.X_OK)):
        raise ShapeAtlasError(f"cannot write {out}: {parent} is not writable")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ShapeAtlasError(f"{out} already holds {_describe(out)}: pass --overwrite to "
                              "replace it whole or choose another --out")
    return out


#: Two-part extensions dropped whole from a file name to give its output name.
_DOUBLE_SUFFIXES = (".nii.gz",)


def file_stem(path: str | Path) -> str:
    """A file's name without its extension: `a.ply` -> `a`, `case_1.nii.gz` -> `case_1`."""
    name = Path(path).name
    for suffix in _DOUBLE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def output_names(paths: Sequence[str | Path]) -> list[str]:
    """The output name (`file_stem`) of each input file; two inputs of the same stem are
    refused, naming both, since their outputs would overwrite each other."""
    seen: dict[str, Path] = {}
    for p in map(Path, paths):
        stem = file_stem(p)
        if stem in seen:
            raise ShapeAtlasError(f"{seen[stem]} and {p} would both be written as "
                                  f"{stem!r}: rename one")
        seen[stem] = p
    return [file_stem(p) for p in paths]


def _versions() -> dict:
    from importlib import metadata


    torch = sys.modules.get("torch")
    try:
        torch_version = torch.__version__ if torch is not None else metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {"shapeatlas": __version__, "python": platform.python_version(),
            "torch": str(torch_version) if torch_version else None,
            "platform": platform.platform()}


@contextlib.contextmanager
def recorded_command(argv: Sequence[str]) -> Iterator[None]:
    """Record `argv` (e.g. `["shapeatlas", "fit", ...]`) as the command line of the output
    folders written inside the block, instead of the process's `sys.argv`."""
    token = _COMMAND.set(shlex.join(argv))
    try:
        yield
    finally:
        _COMMAND.reset(token)


def write_provenance(folder: str | Path, *, verb: str, device: str | None = None,
                     **fields) -> dict:
    """Write FOLDER/provenance.json (what wrote the folder, when, with what); -> its content.
    device: where the verb ran (None: `cpu`, for the verbs that run no network)."""
    d = {"format": PROVENANCE_FORMAT, "version": 1, "verb": verb,
         "command": _COMMAND.get() or (shlex.join(sys.argv) if sys.argv and sys.argv[0]
                                       else None),
         "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **_versions(),
         "device": "cpu" if device is None else device, **fields}
    write_text_atomic(Path(folder) / PROVENANCE_NAME, json.dumps(d, indent=1) + "\n")
    return d


@dataclass
class Staging:
    """The folder an output is built in (`path`) and what to add to its provenance."""

    path: Path
    target: Path
    verb: str
    fields: dict = field(default_factory=dict)

    def record(self, **fields) -> None:
        """Add fields (e.g. the device actually used) to the output's provenance.json."""
        self.fields.update(fields)


def _read_marker(stage: Path) -> dict | None:
    try:
        d = json.loads((stage / STAGING_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("format") == STAGING_FORMAT else None


def _alive(marker: dict) -> bool:
    """Whether the process that made a staging folder still runs (on this machine)."""
    pid = marker.get("pid")
    if marker.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return False  # an earlier call of this process, which has ended
    if os.name != "posix":
        return True  # os.kill(pid, 0) would signal the process there; the user decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_staging(stage: Path) -> None:
    """Delete a marked staging folder: its contents first, the marker last."""
    for child in stage.iterdir():
        if child.name == STAGING_MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    with contextlib.suppress(FileNotFoundError):
        (stage / STAGING_MARKER).unlink()
    stage.rmdir()


def _recover(out: Path, stage: Path) -> None:
    """A run killed between the two renames of the fallback swap left OUT missing and the old
    folder in the staging folder: put it back."""
    if (stage / _OLD).is_dir() and not os.path.lexists(out):
        os.rename(stage / _OLD, out)
        log.warning("%s: restored from %s, where a killed run had left it", out, stage / _OLD)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _relocate(folder: Path, out: Path) -> None:
    """Make the JSON files built in `folder` name `out` instead (a run folder's files record
    the paths of what was made beside them, e.g. a fit's own groomed folder)."""
    pairs = [(json.dumps(str(f))[1:-1], json.dumps(str(out))[1:-1])
             for f in {folder, folder.resolve()}]
    for path in folder.rglob("*.json"):
        text = path.read_text()
        new = text
        for a, b in pairs:
            new = new.replace(a + "/", b + "/").replace(a + '"', b + '"')
        if new != text:
            write_text_atomic(path, new)


def publish(stage: Path, out: Path) -> None:
    """Move STAGE/new into place as OUT (replacing OUT whole), then delete the staging folder.

    After an exchange STAGE/new holds the old folder; it is renamed to STAGE/old at once, and a
    run killed before that rename is recognised by its provenance's `run_id` (`_swapped_out`).
    """
    new = stage / _NEW
    try:
        if not os.path.lexists(out):
            os.rename(new, out)
        elif _exchange(new, out):
            os.rename(new, stage / _OLD)
        else:
            os.rename(out, stage / _OLD)
            os.rename(new, out)
    except OSError as exc:
        raise ShapeAtlasError(f"cannot move {new} into place as {out}: "
                              f"{exc.strerror or exc}") from exc
    _fsync_dir(out.parent)
    try:
        _remove_staging(stage)
    except OSError as exc:
        log.warning("%s is in place, but %s could not be removed (%s): delete it by hand",
                    out, stage, exc.strerror or exc)


def _swapped_out(stage: Path, marker: dict) -> bool:
    """Whether STAGE/new is an old output that an exchange moved there (its provenance names
    another run than the marker), not the unfinished work of the marker's run."""
    try:
        d = json.loads((stage / _NEW / PROVENANCE_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and d.get("run_id") != marker.get("run_id")


@contextlib.contextmanager
def staged_output(out: str | Path, *, verb: str, overwrite: bool = False,
                  inputs: Sequence[str | Path] = (), device: str | None = None,
                  resume: bool = False,
                  resumable: Callable[[Path], bool] | None = None) -> Iterator[Staging]:
    """Check `out` (`check_output`), build the output in its staging folder, move it into place.

    Yields a `Staging`; write everything into `staging.path`. On success, provenance.json is
    written into it and it replaces `out` whole; on an exception the staging folder is removed,
    unless `resumable(staging.path)` says it holds work to resume (a fit's checkpoints).
    resume: continue in the staging folder a killed run left (it must exist).
    """
    out = _absolute(out)
    stage = staging_dir(out)
    marker = _read_marker(stage) if stage.is_dir() else None
    if os.path.lexists(stage) and marker is None:
        raise ShapeAtlasError(f"{stage} exists and is not a shapeatlas staging folder: remove it "
                              "or choose another --out")
    if marker is not None and _alive(marker):
        raise ShapeAtlasError(f"another shapeatlas (process {marker['pid']}) is writing {out} "
                              f"now (in {stage}): wait for it or choose another --out")
    if marker is not None:
        _recover(out, stage)
    stale_work = (stage / _NEW if marker is not None and (stage / _NEW).is_dir()
                  and not _swapped_out(stage, marker) else None)
    overwrite = overwrite or bool(resume and marker and marker.get("overwrite"))
    check_output(out, overwrite=overwrite, inputs=inputs)
    if resume:
        if stale_work is None:
            raise ShapeAtlasError(f"{out}: nothing to resume (no unfinished run in {stage})")
    elif stale_work is not None and resumable is not None and resumable(stale_work) \
            and not overwrite:
        raise ShapeAtlasError(f"{stage} holds an unfinished {verb}: pass --resume to continue "
                              "it, or --overwrite to start again")
    try:
        if marker is not None and not resume:
            log.info("removing %s, left by a run that was stopped", stage)
            _remove_staging(stage)
        if not resume:
            stage.mkdir(parents=True)
            write_text_atomic(stage / STAGING_MARKER, json.dumps({
                "format": STAGING_FORMAT, "verb": verb, "target": str(out),
                "overwrite": overwrite, "pid": os.getpid(), "host": socket.gethostname(),
                "run_id": uuid.uuid4().hex}, indent=1) + "\n")
            (stage / _NEW).mkdir()
        else:
            m = dict(marker, pid=os.getpid(), host=socket.gethostname(),
                     overwrite=overwrite)
            write_text_atomic(stage / STAGING_MARKER, json.dumps(m, indent=1) + "\n")
        run_id = _read_marker(stage).get("run_id")
        staging = Staging(stage / _NEW, out, verb, {"run_id": run_id})
        write_provenance(staging.path, verb=verb, device=device, run_id=run_id)
    except OSError as exc:
        raise ShapeAtlasError(f"cannot write {out}: {exc.strerror or exc}") from exc
    log.info("building %s in %s", out, staging.path)
    try:
        yield staging
        write_provenance(staging.path, verb=verb, **{"device": device, **staging.fields})
        _relocate(staging.path, out)
    except BaseException:
        keep = resumable is not None and staging.path.is_dir() and resumable(staging.path)
        if not keep:
            with contextlib.suppress(OSError):
                _remove_staging(stage)
        raise
    publish(stage, out)
    log.info("wrote %s", out)


def adopt(out: str | Path, *, verb: str) -> None:
    """Move an unfinished folder written in place (by a shapeatlas without staging folders)
    into OUT's staging folder, so that a resumed run continues there and moves it back whole."""
    out = _absolute(out)
    stage = staging_dir(out)
    marker = _read_marker(stage) if stage.is_dir() else None
    if os.path.lexists(stage) and (marker is None or os.path.lexists(stage / _NEW)):
        raise ShapeAtlasError(f"{stage} exists: remove it or choose another --out")
    try:
        if marker is None:
            stage.mkdir()
            write_text_atomic(stage / STAGING_MARKER, json.dumps({
                "format": STAGING_FORMAT, "verb": verb, "target": str(out), "overwrite": False,
                "pid": os.getpid(), "host": socket.gethostname()}, indent=1) + "\n")
        os.rename(out, stage / _NEW)
    except OSError as exc:
        raise ShapeAtlasError(f"cannot move {out} to {stage}: {exc.strerror or exc}") from exc
    log.info("continuing the unfinished run of %s in %s", out, stage / _NEW)
