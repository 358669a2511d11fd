"""Checks of what shapeatlas reads back from disk: JSON files, their fields, and tensors.

A run folder, a configuration or a groom manifest may come from someone else, be truncated or be
edited by hand. Every check here raises `ShapeAtlasError` with one line that names the file, the
field and what was expected, e.g. ``RUN/model.json: field 'epochs' must be an integer, got
'two'``, instead of a `KeyError` or `TypeError` deep inside the model.

Fields are described by small specs (`Int`, `Float`, `Bool`, `Choice`, `Str`, `IntList`) that
say their type and range in words (`describe`), so a config can document each field's range
next to it and check it the same way.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shapeatlas.errors import ShapeAtlasError

#: Largest JSON file (bytes) shapeatlas reads back: a model.json with its normalisation and
#: generator settings is a few kB, a groom manifest of thousands of shapes a few MB.
MAX_JSON_BYTES = 256 * 1024 * 1024
#: Largest atlas shapeatlas reads back (vertices; faces twice that).
MAX_VERTICES = 1_000_000
MAX_FACES = 2 * MAX_VERTICES
#: Values longer than this are cut in messages.
_SHOWN = 60

REQUIRED = object()


def shown(value: Any) -> str:
    """`repr` of a value, cut to a readable length for a one-line message."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN - 3] + "..."


def _number(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


class Invalid(ValueError):
    """A value that breaks its spec; `problem` reads after "field 'NAME' "."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True)
class Int:
    """An integer in [lo, hi] (None allowed when `optional`); bools are not integers."""

    lo: int
    hi: int
    optional: bool = False

    def describe(self) -> str:
        text = f"an integer in [{self.lo:,}, {self.hi:,}]"
        return text + " or null" if self.optional else text

    def check(self, value: Any) -> int | None:
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise Invalid(f"must be {self.describe()}, got {shown(value)}")
        value = int(value)
        if not self.lo <= value <= self.hi:
            raise Invalid(f"must be {self.describe()}, got {value:,}")
        return value


@dataclass(frozen=True)
class Float:
    """A finite number between lo and hi; `lo_open`/`hi_open` exclude the bound."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def describe(self) -> str:
        return (f"a finite number in {'(' if self.lo_open else '['}{_number(self.lo)}, "
                f"{_number(self.hi)}{')' if self.hi_open else ']'}")

    def check(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise Invalid(f"must be {self.describe()}, got {shown(value)}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond the float range
            raise Invalid(f"must be {self.describe()}, got a number of "
                          f"{len(str(abs(int(value))))} digits") from None
        ok = (math.isfinite(value)
              and (value > self.lo if self.lo_open else value >= self.lo)
              and (value < self.hi if self.hi_open else value <= self.hi))
        if not ok:
            raise Invalid(f"must be {self.describe()}, got {value:g}")
        return value


@dataclass(frozen=True)
class Bool:
    def describe(self) -> str:
        return "true or false"

    def check(self, value: Any) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise Invalid(f"must be true or false, got {shown(value)}")
        return bool(value)


@dataclass(frozen=True)
class Choice:
    """One of a few strings."""

    options: tuple[str, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)

    def check(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self.options:
            raise Invalid(f"must be {self.describe()}, got {shown(value)}")
        return value


@dataclass(frozen=True)
class Str:
    """A string of at most `max_len` characters (None allowed when `optional`)."""

    max_len: int = 4096
    optional: bool = False

    def describe(self) -> str:
        return f"a string of at most {self.max_len:,} characters" + (
            " or null" if self.optional else "")

    def check(self, value: Any) -> str | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, str) or len(value) > self.max_len:
            raise Invalid(f"must be {self.describe()}, got {shown(value)}")
        return value


@dataclass(frozen=True)
class IntList:
    """A list of `lo_len`..`hi_len` integers, each in [lo, hi]; returned as a tuple."""

    lo: int
    hi: int
    lo_len: int = 0
    hi_len: int = 64

    def describe(self) -> str:
        return (f"a list of {self.lo_len} to {self.hi_len} integers in "
                f"[{self.lo:,}, {self.hi:,}]")

    def check(self, value: Any) -> tuple[int, ...]:
        item = Int(self.lo, self.hi)
        if not isinstance(value, (list, tuple)) or not self.lo_len <= len(value) <= self.hi_len:
            raise Invalid(f"must be {self.describe()}, got {shown(value)}")
        try:
            return tuple(item.check(v) for v in value)
        except Invalid:
            raise Invalid(f"must be {self.describe()}, got {shown(value)}") from None


def field_error(source: str | Path, name: str, problem: str) -> ShapeAtlasError:
    return ShapeAtlasError(f"{source}: field '{name}' {problem}")


def mapping(value: Any, source: str | Path, name: str | None = None) -> dict:
    """`value` if it is a JSON object, else a clear error (`name`: the field; None: the file)."""
    if not isinstance(value, dict):
        what = f"field '{name}'" if name else "the file"
        raise ShapeAtlasError(f"{source}: {what} must be a JSON object, got "
                              f"{type(value).__name__} {shown(value)}")
    return value


def get(d: Mapping, name: str, spec, source: str | Path, *, default: Any = REQUIRED,
        prefix: str = "") -> Any:
    """`d[name]` checked against `spec` (missing: `default`, or an error when required)."""
    if name not in d:
        if default is REQUIRED:
            raise field_error(source, prefix + name, "is missing")
        return default
    try:
        return spec.check(d[name])
    except Invalid as exc:
        raise field_error(source, prefix + name, exc.problem) from None


def items(d: Mapping, name: str, source: str | Path, *, prefix: str = "",
          max_len: int = 1_000_000) -> list:
    """`d[name]`, a required JSON list."""
    if name not in d:
        raise field_error(source, prefix + name, "is missing")
    value = d[name]
    if not isinstance(value, list) or len(value) > max_len:
        raise field_error(source, prefix + name, f"must be a list, got {shown(value)}")
    return value


def matrix(d: Mapping, name: str, shape: tuple[int, ...], source: str | Path, *,
           prefix: str = "", optional: bool = False) -> np.ndarray | None:
    """`d[name]` as a finite float64 array of `shape` (None allowed when `optional`)."""
    if name not in d:
        if optional:
            return None
        raise field_error(source, prefix + name, "is missing")
    value = d[name]
    if value is None and optional:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        arr = None
    if arr is None or arr.shape != shape or not np.isfinite(arr).all():
        dims = "x".join(map(str, shape))
        raise field_error(source, prefix + name,
                          f"must be a finite {dims} array of numbers, got {shown(value)}")
    return arr


def regular_file(path: str | Path, *, max_bytes: int) -> os.stat_result:
    """The stat of `path` if it is a regular file of at most `max_bytes`; else an error (a
    device, FIFO or folder is refused before it is opened, so nothing can hang on it)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ShapeAtlasError(f"{path}: no such file") from None
    except OSError as exc:
        raise ShapeAtlasError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ShapeAtlasError(f"{path}: not a regular file")
    if st.st_size > max_bytes:
        raise ShapeAtlasError(f"{path}: {st.st_size:,} bytes, more than the {max_bytes:,} "
                              "expected")
    return st


def read_bytes(path: str | Path, *, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (read with that bound)."""
    regular_file(path, max_bytes=max_bytes)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise ShapeAtlasError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise ShapeAtlasError(f"{path}: more than the {max_bytes:,} bytes expected")
    return data


def read_json(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The parsed JSON of a regular file, or one line saying why it cannot be."""
    data = read_bytes(path, max_bytes=max_bytes)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ShapeAtlasError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise ShapeAtlasError(f"{path}: not valid JSON ({exc})") from None
    except ValueError as exc:  # e.g. an integer longer than Python converts
        raise ShapeAtlasError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise ShapeAtlasError(f"{path}: not valid JSON (nested too deeply)") from None


# ------------------------------------------------------------------------------- tensors
def tensor(tensors: Mapping, key: str, source: str | Path, *, kind: str = "float",
           shape: Sequence[int | None] | None = None, finite: bool = True,
           prefix: str = "") -> np.ndarray:
    """`tensors[key]` as a numpy array, checked: present, of `kind` ("float" or "int"), of
    `shape` (None: any length on that axis) and finite. float -> float64, int -> int64.
    prefix: what the file calls the key before `key` (for messages)."""
    import torch

    t = tensors.get(key)
    key = prefix + key
    if t is None:
        raise ShapeAtlasError(f"{source}: tensor '{key}' is missing")
    if not isinstance(t, torch.Tensor):
        raise ShapeAtlasError(f"{source}: '{key}' is not a tensor")
    is_float = t.dtype.is_floating_point
    is_int = not is_float and not t.dtype.is_complex and t.dtype != torch.bool
    if kind == "float" and not is_float or kind == "int" and not is_int:
        raise ShapeAtlasError(f"{source}: tensor '{key}' must hold {kind}s, got {t.dtype}")
    if shape is not None and (t.dim() != len(shape) or any(
            s is not None and s != n for s, n in zip(shape, t.shape))):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ShapeAtlasError(f"{source}: tensor '{key}' must have shape {want}, got "
                              f"{tuple(t.shape)}")
    arr = t.detach().cpu().to(torch.float64 if kind == "float" else torch.int64).numpy()
    if kind == "float" and finite and not np.isfinite(arr).all():
        raise ShapeAtlasError(f"{source}: tensor '{key}' holds NaN or infinite values")
    return arr


def faces(tensors: Mapping, key: str, n_vertices: int, source: str | Path) -> np.ndarray:
    """Triangles (F, 3) of integers in [0, n_vertices), F >= 1."""
    f = tensor(tensors, key, source, kind="int", shape=(None, 3))
    if len(f) > MAX_FACES:
        raise ShapeAtlasError(f"{source}: tensor '{key}' holds {len(f):,} faces, more than "
                              f"{MAX_FACES:,}")
    if len(f) == 0 or f.min() < 0 or f.max() >= n_vertices:
        raise ShapeAtlasError(f"{source}: tensor '{key}' must hold at least one triangle of "
                              f"vertex indices in [0, {n_vertices}), got "
                              f"{'none' if len(f) == 0 else f'[{f.min()}, {f.max()}]'}")
    return f


def finite_tensors(tensors: Mapping, source: str | Path, *, prefix: str = "") -> None:
    """Every floating-point tensor whose key starts with `prefix` is finite (network weights)."""
    for k, t in tensors.items():
        if k.startswith(prefix) and t.dtype.is_floating_point and not bool(t.isfinite().all()):
            raise ShapeAtlasError(f"{source}: tensor '{k}' holds NaN or infinite values")
