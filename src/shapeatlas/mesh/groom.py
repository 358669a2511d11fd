"""Grooming a cohort: what real meshes need before shape modelling.

Per shape (in parallel processes): read, convert units, clean, optionally make watertight,
optionally decimate/remesh to a target vertex count. A label map (.nii, .nii.gz, .nrrd, .nhdr)
gives one shape, or one per connected component (`mesh.segmentation`): its surface is made
closed and volume-preserving by `labelmap.label_surface`, optionally mirrored, then decimated
and checked like a mesh, its volume against the labelled voxels' (`LABEL_VOLUME_TOLERANCE`).
Then for the cohort: pick a reference, centre it, and align every shape to it (rigid or
similarity). Normals are recomputed from the groomed geometry (orientation made consistent and
outward; `Mesh.vertex_normals` derives them).

Outputs: one PLY per shape and `groom.json`, a manifest with, per shape, the source file, the 4x4
transform from the input file's frame to the groomed frame, its scale, and quality figures, so
every later result can be mapped back into each input's original frame. A file that cannot be
groomed is reported in the manifest's `failed` list and skipped; it never stops the others.
Every file is written atomically, and the whole folder is built beside the output folder and
moved into place at the end (`shapeatlas.outputs`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

from shapeatlas import validate
from shapeatlas.atomic import write_text_atomic
from shapeatlas.data.cache import DiskCache, Entry, array_digest, file_digest
from shapeatlas.errors import MeshError, ShapeAtlasError
from shapeatlas.mesh.align import (
    align_to_reference,
    consensus_rotations,
    rotation_about,
    solid_frame,
    symmetric_rms,
    translation,
)
from shapeatlas.mesh.cap import (
    Cap,
    CapReference,
    basin_turn,
    capped_count,
    cohort_turns,
    covers_cohort,
    planar_cap,
    turn_degrees,
)
from shapeatlas.mesh.checks import unusable
from shapeatlas.mesh.core import Mesh, MeshSequence
from shapeatlas.mesh.io import is_mesh_file, read_mesh, write_mesh
from shapeatlas.mesh.labelmap import is_label_map_file
from shapeatlas.mesh.limits import MAX_MESH_FILE_BYTES
from shapeatlas.mesh.remesh import (
    DEFAULT_GRID_RESOLUTION,
    SPECK_VOLUME_FRACTION,
    Closed,
    clean,
    close_surface,
    decimate,
)
from shapeatlas.mesh.segmentation import (
    DEFAULT_MIN_FRACTION,
    MIRROR_X,
    label_map_shapes,
)
from shapeatlas.mesh.units import UNIT_SCALE, implausible_size, size_outliers
from shapeatlas.mesh.validity import mesh_validity
from shapeatlas.outputs import file_stem, output_names, staged_output
from shapeatlas.validate import regular_file

log = logging.getLogger(__name__)

#: A groomed shape whose volume is further than this from its voxelised input's fails.
VOLUME_TOLERANCE = 0.01
#: A shape from a label map whose volume is further than this from its labelled voxels' fails:
#: the voxels are themselves a staircase estimate, which the smoothed surface cannot match to
#: 1% on small or thick-sliced structures.
LABEL_VOLUME_TOLERANCE = 0.02
MANIFEST_NAME = "groom.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class GroomOptions:
    """Switches and parameters of `groom_cohort` (every step can be turned off)."""

    clean: bool = True
    """Merge duplicate vertices, drop degenerate/duplicate faces, keep the largest component."""
    watertight: bool | Literal["auto"] = False
    """Rebuild a closed surface from the generalised winding number (so volumes are defined);
    "auto" rebuilds only the meshes that are not watertight already."""
    grid_resolution: int = DEFAULT_GRID_RESOLUTION
    """Cells along the longest bounding-box side of the winding-number grid (--watertight)."""
    target_vertices: int | None = None
    """Decimate (or subdivide then decimate) to about this many vertices; None keeps them."""
    decimation: Literal["quadric", "uniform"] = "quadric"
    """Quadric keeps volume and thin parts; uniform gives more regular triangles."""
    center: bool = True
    """Translate the cohort so the reference's surface centroid is at the origin."""
    align: Literal["none", "rigid", "similarity"] = "rigid"
    """Alignment of every shape to the reference (similarity also normalises size)."""
    reference: str | None = None
    """Name (file stem) of the reference shape; default: the shape of median size."""
    consensus_rounds: int = 0
    """After aligning to the reference, re-align every shape this many times onto the cohort's
    consensus shape (rotation only, sizes and proportions factored out; see
    `align.consensus_rotations`), so no single reference's quirks set everyone's pose. Each
    manifest entry then says whether that shape took part (`consensus`)."""
    cap_twist: bool = True
    """After the alignment, turn every shape about its flat cap's normal so that the cap's
    outline lines up with the reference's (`mesh.cap`: the basal plane of an LV cavity, a
    bone's cut), which rigid alignment by surface distance leaves poorly set. Only where the
    reference and at least half the shapes have such a cap; each manifest entry then records
    its turn (`cap_twist_deg`, and `cap_turn`, the (4, 4) turn in the groomed frame that
    `transform` includes; null where it was not turned). A shape whose outline lines up only
    beyond 20 degrees, where the surface fits as well (a nearly symmetric shape aligned half a
    turn off), is first moved to that basin (`cap.cap_basin`; `cap_basin_deg`, part of
    `cap_turn`). The caps are read before decimation:
    QSlim moves a cap's rim vertices enough to turn a nearly round outline by degrees."""
    input_units: Literal["um", "mm", "cm", "in", "m"] = "mm"
    """Units of the input coordinates (`units.UNIT_SCALE`); outputs are always in millimetres."""
    keep_outliers: bool = False
    """Keep shapes whose size is far from the cohort's (`units.size_outliers`: at least 3x
    larger or smaller than the median, most likely saved in another unit); by default they are
    left out and listed in the manifest's `failed` entries."""
    n_jobs: int = 0
    """Worker processes (0: one per CPU core, at most one per shape)."""
    keep_failed: bool = False
    """Keep shapes that fail groom's check (volume off the input's by more than 1%, or faces
    crossing others) in the output; by default they are left out and listed in `failed`.
    Either way each shape's `volume_check` in the manifest says what was measured."""
    labels: tuple[int, ...] | None = None
    """Label maps: the labels merged into one organ; None takes every non-zero label."""
    components: Literal["largest", "each"] = "largest"
    """Label maps: keep the largest connected component, or each one (named by side)."""
    min_component_fraction: float = DEFAULT_MIN_FRACTION
    """Label maps: components below this fraction of the largest's voxels are dropped."""
    mirror: Literal["left", "right"] | None = None
    """Mirror the shapes on this side of the patient (world x -> -x), so one atlas serves
    both sides; a shape whose side is unknown (a mesh file, a label map without orientation)
    is then left out."""


@dataclass
class GroomResult:
    """What `groom_cohort` wrote: the manifest (as saved) and the output folder."""

    out_dir: Path
    manifest: dict = field(default_factory=dict)

    @property
    def shapes(self) -> list[dict]:
        return self.manifest.get("shapes", [])

    @property
    def failed(self) -> list[dict]:
        return self.manifest.get("failed", [])


def find_mesh_files(folder: str | Path) -> list[Path]:
    """Mesh files (by extension) directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ShapeAtlasError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_mesh_file(p))


def find_input_files(folder: str | Path) -> list[Path]:
    """Mesh files and label maps (by extension) directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ShapeAtlasError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and (is_mesh_file(p) or is_label_map_file(p)))


def prepare_shapes(path: str | Path, opts: GroomOptions) -> list[dict]:
    """Stage 1 of `groom_cohort` for one file: its shapes read (or cut from a label map),
    closed, decimated and checked, each a dict with `ok`, `suffix` (added to the file's stem
    to name the shape), and either the shape or the `error`. Raises `ShapeAtlasError` for a
    file that gives no shape at all."""
    if is_label_map_file(path):
        return _prepare_label_map(str(path), opts)
    return [_prepare_mesh(str(path), opts)]


def _prepare_one(path: str, opts: GroomOptions, cache: DiskCache | None = None) -> list[dict]:
    """`prepare_shapes` in a worker, through the cache when there is one (`_prepare_cached`):
    any failure becomes an entry naming the file."""
    try:
        if cache is not None:
            return _prepare_cached(path, opts, cache)
        return prepare_shapes(path, opts)
    except ShapeAtlasError as exc:
        return [{"ok": False, "suffix": "", "error": str(exc)}]
    except Exception as exc:  # a library failing deep inside: report, keep the cohort going
        return [{"ok": False, "suffix": "",
                 "error": f"{path}: unexpected {type(exc).__name__}: {exc}"}]


#: The shapeatlas code whose sources are part of the grooming cache's keys.
GROOM_CODE = ("shapeatlas.mesh",)
#: `GroomOptions` fields that only the cohort-level steps read (not part of stage 1's key).
COHORT_FIELDS = ("center", "align", "reference", "consensus_rounds", "keep_outliers", "n_jobs")


def _prepare_key(path: str, opts: GroomOptions) -> str:
    """The cache key of stage 1 for one file: its bytes, the options stage 1 reads, the code."""
    options = {k: v for k, v in asdict(opts).items() if k not in COHORT_FIELDS}
    options["read_cap"] = bool(opts.cap_twist and opts.align != "none")
    return DiskCache.key("groom", GROOM_CODE, options,
                         file_digest(path, max_bytes=MAX_MESH_FILE_BYTES))


class _Recorder(logging.Handler):
    """Keeps the messages of shapeatlas's loggers, so that a cached result can say them again."""

    def __init__(self):
        super().__init__()
        self.records: list[list] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append([record.levelno, record.name, record.getMessage()])


def _prepare_cached(path: str, opts: GroomOptions, cache: DiskCache) -> list[dict]:
    """`prepare_shapes` of one file, read from the cache when its content was groomed before
    with the same options and code (its log messages said again), else computed and stored.
    Not stored: a file that cannot be groomed at all (an exception), one that changed while it
    was groomed, and a detached NRRD header (its voxels are in another file)."""
    if path.lower().endswith(".nhdr"):
        return prepare_shapes(path, opts)
    try:
        before = os.stat(path)
        key = _prepare_key(path, opts)
    except (OSError, ShapeAtlasError):  # the reader says what is wrong, in its own words
        return prepare_shapes(path, opts)
    entry = cache.get(key)
    if entry is not None:
        try:
            results, records = _results_from_entry(entry, path)
        except (KeyError, TypeError, ValueError, MeshError) as exc:
            log.warning("cache entry for %s unusable (%s): grooming it again", path, exc)
        else:
            for level, name, message in records:
                logging.getLogger(name).log(level, "%s", message)
            for r in results:
                r["cached"] = True
            return results
    recorder = _Recorder()
    top = logging.getLogger("shapeatlas")
    top.addHandler(recorder)
    try:
        results = prepare_shapes(path, opts)
    finally:
        top.removeHandler(recorder)
    after = os.stat(path)
    if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
        cache.put(key, _results_to_entry(results, recorder.records, path))
    return results


#: Stands for the input file's path in a cache entry (messages name it; a path holds no NUL),
#: so that a file of the same content elsewhere reads back its own name.
_PATH_TOKEN = json.dumps("\x00input\x00")[1:-1]
#: Name suffixes a stage-1 result may carry (`segmentation.component_suffixes`).
_SUFFIX = re.compile(r"(_[A-Za-z0-9]+)?")


def _results_to_entry(results: list[dict], records: list[list], path: str) -> Entry:
    """Stage 1's results of one file as a cache entry: arrays (vertices, faces, the cap's
    normal and outline) and JSON (everything else, and the log records), with the file's
    path replaced by `_PATH_TOKEN`."""
    arrays, items = {}, []
    for i, r in enumerate(results):
        item = {k: v for k, v in r.items() if k not in ("vertices", "faces", "cap")}
        for k in ("vertices", "faces"):
            if k in r:
                arrays[f"{i}.{k}"] = np.asarray(r[k])
        cap = r.get("cap")
        if cap is not None:
            arrays[f"{i}.cap_normal"] = np.asarray(cap.normal, dtype=np.float64)
            arrays[f"{i}.cap_outline"] = np.asarray(cap.outline, dtype=np.float64)
            item["cap_area_fraction"] = float(cap.area_fraction)
        item["has_cap"] = cap is not None
        items.append(item)
    text = json.dumps({"results": items, "log": records})
    return Entry(arrays, {"text": text.replace(json.dumps(path)[1:-1], _PATH_TOKEN)})


def _results_from_entry(entry: Entry, path: str) -> tuple[list[dict], list[tuple]]:
    """The inverse of `_results_to_entry` for the file at `path`, checking every field as a
    fresh result would hold it. -> (results, log records (level, logger, message))"""
    text = entry.meta["text"]
    if not isinstance(text, str):
        raise TypeError("no results")
    meta = json.loads(text.replace(_PATH_TOKEN, json.dumps(path)[1:-1]))
    items, records = meta["results"], meta["log"]
    if not isinstance(items, list) or not items or not isinstance(records, list):
        raise TypeError("no results")
    log_records = []
    for rec in records:
        if not (isinstance(rec, list) and len(rec) == 3 and type(rec[0]) is int
                and all(isinstance(x, str) for x in rec[1:])
                and rec[1].startswith("shapeatlas")):
            raise ValueError(f"malformed log record {str(rec)[:80]}")
        log_records.append(tuple(rec))

    def array(name: str, kind: str, columns: int | None = 3) -> np.ndarray:
        a = entry.arrays[name]
        if (a.dtype.kind not in kind or a.ndim != (1 if columns is None else 2)
                or (columns is not None and a.shape[1] != columns)):
            raise ValueError(f"array {name} has shape {a.shape} and type {a.dtype}")
        return a

    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("ok"), bool):
            raise TypeError(f"result {i} is not a stage-1 result")
        suffix = item.get("suffix")
        if not isinstance(suffix, str) or not _SUFFIX.fullmatch(suffix):
            raise ValueError(f"result {i} has the name suffix {str(suffix)[:40]!r}")
        for key in ("volume_check", "validity", "label_map"):
            if key in item:
                _plain_mapping(item[key], f"result {i}'s {key}")
        notes = item.get("notes", [])
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise TypeError(f"result {i}'s notes are not messages")
        r = {k: v for k, v in item.items() if k not in ("has_cap", "cap_area_fraction")}
        if not item["ok"]:
            if not isinstance(item.get("error"), str):
                raise TypeError(f"result {i} fails without a message")
            out.append(r)
            continue
        if not (isinstance(item.get("mirrored"), bool) and _finite(item.get("unit_scale"), 0.0)
                and (item.get("voxel_volume_mm3") is None
                     or _finite(item["voxel_volume_mm3"], -1.0))
                and isinstance(item.get("validity"), dict)
                and isinstance(item.get("volume_check"), dict)):
            raise ValueError(f"result {i} lacks its scale, side or checks")
        signed = item["validity"].get("signed_volume")
        if signed is not None and not _finite(signed, -math.inf):
            raise ValueError(f"result {i}'s signed volume is {signed!r}")
        r["vertices"] = array(f"{i}.vertices", "f")
        r["faces"] = array(f"{i}.faces", "iu")
        Mesh(r["vertices"], r["faces"])  # finite vertices, faces within them (MeshError)
        if item.get("has_cap"):
            if not _finite(item.get("cap_area_fraction"), 0.0):
                raise ValueError(f"result {i}'s cap has no area")
            normal, outline = array(f"{i}.cap_normal", "f", None), array(f"{i}.cap_outline", "f")
            if normal.shape != (3,) or not (np.isfinite(normal).all()
                                            and np.isfinite(outline).all()):
                raise ValueError(f"result {i}'s cap is malformed")
            r["cap"] = Cap(normal=normal, outline=outline,
                           area_fraction=float(item["cap_area_fraction"]))
        else:
            r["cap"] = None
        out.append(r)
    return out, log_records


def _finite(x, above: float) -> bool:
    """Whether x is a finite number (not a bool) greater than `above`."""
    return (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            and x > above)


def _plain_mapping(d, what: str) -> None:
    """ValueError unless d maps names to JSON scalars, or lists of them."""
    scalar = (str, int, float, bool, type(None))
    if not isinstance(d, dict) or not all(
            isinstance(k, str) and (isinstance(v, scalar) or (
                isinstance(v, list) and all(isinstance(x, scalar) for x in v)))
            for k, v in d.items()):
        raise ValueError(f"{what} is not a mapping of plain values")


def _prepare_label_map(path: str, opts: GroomOptions) -> list[dict]:
    """The shapes of one label map (`segmentation.label_map_shapes`), each decimated and
    checked: closed, not crossing itself, volume within `LABEL_VOLUME_TOLERANCE` of its
    labelled voxels'."""
    t0 = time.perf_counter()
    shapes, notes = label_map_shapes(path, labels=opts.labels, components=opts.components,
                                     min_fraction=opts.min_component_fraction,
                                     mirror=opts.mirror)
    out = []
    for s in shapes:
        what = f"{path} ({s.suffix[1:]})" if s.suffix else path
        mesh = s.mesh
        diag = float(np.linalg.norm(mesh.extent))
        hint = implausible_size(diag, "mm")
        label_map = {"labels": list(s.labels), "component": s.component,
                     "n_components": s.n_components, "side": s.side,
                     "voxel_volume_ml": round(s.voxel_volume / 1000.0, 6)}
        if hint:
            out.append({"ok": False, "suffix": s.suffix, "label_map": label_map,
                        "error": f"{what}: bounding-box diagonal is {diag:.4g} mm, implausible "
                                 f"for an organ: {hint}"})
            continue
        cap = planar_cap(mesh) if opts.cap_twist and opts.align != "none" else None
        if opts.target_vertices:
            mesh = decimate(mesh, target_vertices=opts.target_vertices, method=opts.decimation)
        validity = mesh_validity(mesh.vertices, mesh.faces)
        check = _volume_check(mesh, None, checked=True, n_cross=validity.n_self_intersecting,
                              voxel_volume=s.voxel_volume)
        label_map["surface_volume_ml"] = (round(mesh.volume / 1000.0, 6)
                                          if mesh.is_watertight else None)
        if check["verdict"] != "ok" and not opts.keep_failed:
            out.append({"ok": False, "suffix": s.suffix, "volume_check": check,
                        "label_map": label_map,
                        "error": f"{what}: {check['problem']} (kept only with --keep-failed)"})
            continue
        out.append({
            "ok": True,
            "suffix": s.suffix,
            "volume_check": check,
            "validity": validity.as_dict(),
            "cap": cap,
            "vertices": np.asarray(mesh.vertices),
            "faces": np.asarray(mesh.faces),
            "unit_scale": 1.0,
            "voxel_volume_mm3": s.voxel_volume,
            "mirrored": s.mirrored,
            "label_map": label_map,
            "seconds": time.perf_counter() - t0,
        })
    if out:
        out[0]["notes"] = notes
    return out


def _prepare_mesh(path: str, opts: GroomOptions) -> dict:
    """Stage 1 for one mesh file: read, scale, clean, close, decimate."""
    t0 = time.perf_counter()
    if opts.mirror is not None:
        raise MeshError(path, f"a mesh file carries no orientation, so whether it is the "
                        f"patient's {opts.mirror} side cannot be told (mirror needs label maps)")
    mesh = read_mesh(path)
    k = UNIT_SCALE[opts.input_units]
    if k != 1.0:
        mesh = mesh.with_vertices(mesh.vertices * k)
    diag = float(np.linalg.norm(mesh.extent))
    hint = implausible_size(diag, opts.input_units)
    if hint:
        raise MeshError(path, f"bounding-box diagonal is {diag:.4g} mm, implausible for an "
                        f"organ: {hint}")
    reason = unusable(mesh)
    if reason:  # cleaning keeps near-collinear faces whose areas are all alike
        raise MeshError(path, reason)
    source = mesh
    if opts.clean:
        mesh = clean(mesh)
    voxel_volume = closed = None
    if opts.watertight is True or (opts.watertight == "auto" and not mesh.is_watertight):
        # From the input as read: `close_surface` picks the faces' orientation itself, and
        # keeps or reports every part (cleaning would keep the largest component only).
        closed = close_surface(source, resolution=opts.grid_resolution)
        mesh, voxel_volume = closed.mesh, closed.enclosed_volume
    # The cap outline before decimation moves its rim (`GroomOptions.cap_twist`).
    cap = planar_cap(mesh) if opts.cap_twist and opts.align != "none" else None
    if opts.target_vertices:
        mesh = decimate(mesh, target_vertices=opts.target_vertices, method=opts.decimation)
    validity = mesh_validity(mesh.vertices, mesh.faces)  # alignment changes none of it
    check = _volume_check(mesh, closed, checked=bool(opts.target_vertices),
                          n_cross=validity.n_self_intersecting)
    if check["verdict"] != "ok" and not opts.keep_failed:
        return {"ok": False, "suffix": "", "volume_check": check,
                "error": f"{path}: {check['problem']} (kept only with --keep-failed)"}
    return {
        "ok": True,
        "suffix": "",
        "mirrored": False,
        "volume_check": check,
        "validity": validity.as_dict(),
        "cap": cap,
        "vertices": np.asarray(mesh.vertices),
        "faces": np.asarray(mesh.faces),
        "unit_scale": k,
        "voxel_volume_mm3": voxel_volume,
        "seconds": time.perf_counter() - t0,
    }


def _volume_check(mesh: Mesh, closed: Closed | None, *, checked: bool, n_cross: int,
                  voxel_volume: float | None = None) -> dict:
    """Groom's verdict on one shape: did it keep the input's volume (`VOLUME_TOLERANCE` of
    `Closed.reference_volume`, when the watertight step ran; `LABEL_VOLUME_TOLERANCE` of
    `voxel_volume`, the labelled voxels' mm^3, for a shape from a label map) and is it one
    closed surface that does not cross itself (when it was closed, decimated or made from a
    label map)? n_cross: its self-intersecting faces (`Validity.n_self_intersecting`).
    -> a dict for the manifest"""
    out: dict = {"verdict": "ok"}
    problems = []
    if voxel_volume is not None:
        out["input_volume_ml"] = round(voxel_volume / 1000.0, 6)
        out["input_volume_from"] = "voxels"
        loss = 1.0 - mesh.volume / voxel_volume if mesh.is_watertight else 1.0
        out["volume_loss_percent"] = round(100.0 * loss, 4)
        if abs(loss) > LABEL_VOLUME_TOLERANCE:
            what = "lost" if loss > 0 else "gained"
            problems.append(f"{what} {100 * abs(loss):.1f}% of its labelled voxels' volume "
                            f"({voxel_volume / 1000:.1f} mL of voxels, "
                            f"{mesh.volume / 1000:.1f} mL of surface)")
    if closed is not None:
        # The input's own signed volume where it is nearly closed, so that no grid that
        # misses thin parts sets the yardstick; else its volume on the grid.
        reference = closed.reference_volume
        out["input_volume_ml"] = round(reference / 1000.0, 6)
        out["input_volume_from"] = "surface" if closed.input_volume is not None else "grid"
        out["grid_volume_ml"] = round(closed.enclosed_volume / 1000.0, 6)
        out["dropped_parts"] = closed.n_dropped_parts
        out["dropped_volume_ml"] = round(closed.dropped_volume / 1000.0, 6)
        loss = 1.0 - mesh.volume / reference if mesh.is_watertight else 1.0
        out["volume_loss_percent"] = round(100.0 * loss, 4)
        if abs(loss) > VOLUME_TOLERANCE:
            what = "lost" if loss > 0 else "gained"
            parts = (f", {closed.n_dropped_parts} part(s) disconnected from the rest dropped"
                     if closed.n_dropped_parts and closed.dropped_volume
                     > SPECK_VOLUME_FRACTION * closed.enclosed_volume else "")
            problems.append(f"{what} {100 * abs(loss):.1f}% of its volume "
                            f"({reference / 1000:.1f} mL in, "
                            f"{mesh.volume / 1000:.1f} mL out{parts})")
    if closed is not None or checked:
        out["self_intersecting_faces"] = int(n_cross)
        out["closed"] = bool(mesh.is_watertight)
        if n_cross:
            problems.append(f"{n_cross} faces cross others")
        if not mesh.is_watertight and (closed is not None or voxel_volume is not None):
            problems.append("not closed")
    if problems:
        out["verdict"] = "failed"
        out["problem"] = "; ".join(problems)
    return out


def _scaled_validity(validity: dict, scale: float) -> dict:
    """A shape's `Validity.as_dict` after a similarity of `scale` (only the volume changes)."""
    out = dict(validity)
    if out.get("signed_volume") is not None:
        out["signed_volume"] = out["signed_volume"] * scale**3
    return out


def _align_one(args) -> dict:
    """One shape's alignment to the reference (through the cache when there is one: the key
    is both meshes' arrays and whether to scale)."""
    verts, faces, ref_verts, ref_faces, scale, cache = args
    key = None
    if cache is not None:
        key = DiskCache.key("align", GROOM_CODE, {"scale": bool(scale)},
                            array_digest([verts, faces, ref_verts, ref_faces]))
        entry = cache.get(key)
        if entry is not None:
            m, rms = entry.arrays.get("matrix"), entry.meta.get("rms")
            if (m is not None and m.dtype.kind == "f" and m.shape == (4, 4)
                    and np.isfinite(m).all() and _finite(entry.meta.get("scale"), 0.0)
                    and (rms is None or _finite(rms, -1.0))):
                return {"matrix": m, "scale": float(entry.meta["scale"]),
                        "rms": None if rms is None else float(rms)}
            log.warning("cache entry of an alignment unusable: aligning again")
    al = align_to_reference(Mesh(verts, faces), Mesh(ref_verts, ref_faces), scale=scale)
    out = {"matrix": al.matrix, "scale": float(al.scale), "rms": al.rms}
    if cache is not None:
        cache.put(key, Entry({"matrix": np.asarray(al.matrix, dtype=np.float64)},
                             {"scale": float(al.scale),
                              "rms": None if al.rms is None else float(al.rms)}))
    return out


def _align_to_consensus(meshes: Sequence[Mesh], aligned: list[dict], ref_pos: int, rounds: int,
                        progress: Callable[[int], None] | None) -> None:
    """Compose each alignment (in place) with its rotation onto the cohort's consensus, about
    the aligned shape's centroid (marking it `consensus`), and record the new RMS distance to
    the re-aligned reference. Shapes that cannot take part keep their alignment, with a warning."""
    from scipy.spatial import cKDTree

    moved = [m.transformed(a["matrix"]) for m, a in zip(meshes, aligned)]
    solid = []
    for i, m in enumerate(moved):
        try:
            solid_frame(m)
            solid.append(i)
        except MeshError as exc:
            log.warning("%s; it keeps its alignment to the reference", exc)
    if len(solid) < 3:
        log.warning("fewer than 3 shapes can be whitened: no consensus alignment")
        return
    try:
        rots = consensus_rotations([moved[i] for i in solid], rounds=rounds, progress=progress)
    except ShapeAtlasError as exc:
        log.warning("%s; every shape keeps its alignment to the reference", exc)
        return
    for i, r in zip(solid, rots):
        aligned[i]["matrix"] = rotation_about(r, moved[i].centroid) @ aligned[i]["matrix"]
        aligned[i]["consensus"] = True
    ref = meshes[ref_pos].transformed(aligned[ref_pos]["matrix"]).vertices
    ref_tree = cKDTree(ref)
    for m, a in zip(meshes, aligned):
        a["rms"] = symmetric_rms(m.transformed(a["matrix"]).vertices, ref,
                                 reference_tree=ref_tree)


def _turn_caps(meshes: Sequence[Mesh], aligned: list[dict], ref_pos: int,
               caps: Sequence[Cap | None]) -> str:
    """Compose each alignment (in place) with the turn that lines its cap outline up with the
    reference's (`cap.cap_twist`), recording it (`cap_turn`, (4, 4) in the groomed frame, and
    `cap_twist_deg`; None where it was not turned) and the new RMS distance to the reference.
    A shape whose outline lines up only beyond the twist's window is first moved to the basin
    of the alignment that the outline points to, where the surface fits as well
    (`cap.basin_turn`; `cap_basin_deg`, included in `cap_turn`).
    caps: each shape's cap, read before decimation (None: looked for on the groomed shape).
    Nothing happens unless the reference and at least `cap.CAP_COHORT_SHARE` of the shapes
    have a usable cap. -> what happened, for the manifest"""
    from scipy.spatial import cKDTree

    moved = [m.transformed(a["matrix"]) for m, a in zip(meshes, aligned)]
    caps = [None if c is None else c.transformed(a["matrix"]) for c, a in zip(caps, aligned)]
    reference = CapReference.of(moved[ref_pos], cap=caps[ref_pos])
    if reference is None:
        why = f"skipped: the reference {meshes[ref_pos].name} has no flat cap that sets a turn"
        log.info("cap twist %s", why)
        return why
    turns = cohort_turns(moved, reference, skip=ref_pos, caps=caps)
    capped = capped_count(turns)
    if not covers_cohort(turns):
        why = (f"skipped: only {capped} of {len(meshes)} shapes have a flat cap that lines up "
               "with the reference's")
        log.info("cap twist %s", why)
        return why
    ref_vertices = np.asarray(moved[ref_pos].vertices)
    for i, t in enumerate(turns):
        # A shape whose outline lines up only beyond the window: another basin of the
        # alignment, if the surface fits there as well (`cap.basin_turn`), then the turn there.
        basin = None if t is not None or i == ref_pos else basin_turn(
            moved[i], reference, ref_vertices, cap=caps[i])
        if basin is not None:
            turns[i] = basin[0]
            aligned[i]["cap_basin_deg"] = turn_degrees(basin[1])
    capped = capped_count(turns)
    ref_tree = cKDTree(ref_vertices)
    for m, a, t in zip(moved, aligned, turns):
        a["cap_twist_deg"] = a["cap_turn"] = None
        if t is None:
            continue
        a["matrix"] = t @ a["matrix"]
        a["cap_turn"] = t
        a["cap_twist_deg"] = turn_degrees(t)
        if a.get("rms") is not None:
            a["rms"] = symmetric_rms(m.transformed(t).vertices, moved[ref_pos].vertices,
                                     reference_tree=ref_tree)
    log.info("cap twist: %d of %d shapes turned (median %.1f degrees)", capped - 1,
             len(meshes), float(np.median([a["cap_twist_deg"] for a in aligned
                                           if a["cap_twist_deg"] is not None] or [0.0])))
    return f"applied: {capped - 1} of {len(meshes)} shapes turned"


def _fail_name_clashes(prepared: list[dict], names: Sequence[str],
                       sources: Sequence[Path]) -> None:
    """Mark as failed (in place) a shape whose name an earlier shape already has: a label
    map's `a_left` beside a mesh file `a_left.ply` would overwrite each other's output."""
    first: dict[str, Path] = {}
    for r, name, src in zip(prepared, names, sources):
        if not r["ok"]:
            continue
        if name in first:
            r.clear()
            r.update(ok=False, suffix="", error=f"{src}: its shape {name!r} has the name of "
                     f"one from {first[name]}: rename one of the files")
        else:
            first[name] = src


def _leave_out_size_outliers(ok: list[int], meshes: dict[int, Mesh], paths: Sequence[Path],
                             failed: list[dict], opts: GroomOptions) -> list[int]:
    """`ok` without the shapes whose size says they are in another unit (`size_outliers`),
    which are added to `failed` (unless `opts.keep_outliers`, which only warns)."""
    outliers = size_outliers([meshes[i] for i in ok], input_units=opts.input_units,
                             names=[_shape_label(meshes[i].name, paths[i]) for i in ok])
    for o in outliers:
        if opts.keep_outliers:
            log.warning("%s; kept (--keep-outliers)", o.message)
            continue
        i = ok[o.index]
        error = f"{o.message}; left out (--keep-outliers keeps it)"
        log.warning("skipped %s", error)
        failed.append({"name": meshes[i].name, "source": str(paths[i].resolve()),
                       "error": error})
    if opts.keep_outliers:
        return ok
    drop = {ok[o.index] for o in outliers}
    return [i for i in ok if i not in drop]


def _shape_label(name: str, source: Path) -> str:
    """How messages name a shape: its file's name, or, for one of several shapes cut from a
    label map, the shape's own name."""
    return source.name if name == file_stem(source) else name


#: prctl option that sends a signal to a process when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Pool initializer: a worker ends when the process that started it dies, even by
    `kill -9`, instead of grooming on for minutes (Linux's PR_SET_PDEATHSIG; elsewhere the
    pool's own shutdown is all there is)."""
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        except (OSError, AttributeError):
            return
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _map(fn, items: Sequence, n_jobs: int, progress: Callable[[int], None] | None):
    """Apply `fn` to `items` in order, in a process pool when n_jobs > 1."""
    out = []
    if n_jobs <= 1 or len(items) <= 1:
        for it in items:
            out.append(fn(it))
            if progress:
                progress(1)
        return out
    with ProcessPoolExecutor(max_workers=n_jobs, initializer=_die_with_parent,
                             initargs=(os.getpid(),)) as ex:
        try:
            for r in ex.map(fn, items, chunksize=1):
                out.append(r)
                if progress:
                    progress(1)
        except BaseException:
            ex.shutdown(wait=False, cancel_futures=True)
            raise
    return out


def choose_reference(names: Sequence[str], sizes: Sequence[float], requested: str | None) -> int:
    """Index of the reference shape: the requested name, else the one of median size.

    Size is the enclosed volume for closed surfaces, else the surface area. Ties go to the
    first name in sorted order, so the choice is deterministic.
    """
    if requested is not None:
        if requested not in names:
            raise ShapeAtlasError(
                f"reference shape {requested!r} is not among the groomed shapes "
                f"({len(names)} shapes, e.g. {', '.join(list(names)[:3])})"
            )
        return list(names).index(requested)
    order = sorted(range(len(names)), key=lambda i: (sizes[i], names[i]))
    return order[(len(order) - 1) // 2]


def groom_cohort(
    inputs: Sequence[str | Path] | str | Path,
    out_dir: str | Path,
    options: GroomOptions | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    overwrite: bool = False,
    cache: str | Path | bool | None | DiskCache = True,
) -> GroomResult:
    """Groom a cohort of meshes and write them, with `groom.json`, into `out_dir`.

    inputs: a folder of mesh files and/or label maps, or a list of files; two of the same stem
    (a.ply, a.stl, a.nii.gz) are refused, as both would be written as a.ply. A label map gives
    one shape, or with `components="each"` one per component, named STEM_left, STEM_right
    (or STEM_c1, STEM_c2, ... where the side cannot be told).
    progress: optional callback `(stage, done_increment, stage_total)`, called as work finishes.
    overwrite: replace a non-empty `out_dir` whole (else refused before any work); the folder
    is built beside it and moved into place at the end (`shapeatlas.outputs`).
    cache: where each shape's grooming and alignment are kept by content (`data.cache`), so
    that grooming the same files again (a resumed fit, other cohort options) reads them back:
    True, the default folder (`SHAPEATLAS_CACHE`, else ~/.cache/shapeatlas); a folder; or
    False, no cache. The output is the same either way.

    Raises `ShapeAtlasError` when nothing could be groomed or the options are invalid; single
    bad files are listed in the manifest's `failed` entries instead.
    """
    opts = options or GroomOptions()
    if opts.align not in ("none", "rigid", "similarity"):
        raise ShapeAtlasError(f"align must be 'none', 'rigid' or 'similarity', got {opts.align!r}")
    if opts.input_units not in UNIT_SCALE:
        raise ShapeAtlasError(f"input_units must be one of {sorted(UNIT_SCALE)}, got {opts.input_units!r}")
    if opts.consensus_rounds < 0:
        raise ShapeAtlasError(f"consensus_rounds must be 0 or more, got {opts.consensus_rounds}")
    if opts.consensus_rounds and opts.align == "none":
        raise ShapeAtlasError("consensus_rounds needs an alignment (align 'rigid' or "
                              "'similarity'): it refines the alignment to the reference")
    if opts.target_vertices is not None and opts.target_vertices < 100:
        raise ShapeAtlasError(f"target_vertices must be at least 100, got {opts.target_vertices}")
    _check_label_options(opts)
    if isinstance(inputs, (str, Path)) and Path(inputs).is_dir():
        paths = find_input_files(inputs)
        if not paths:
            raise ShapeAtlasError(f"{inputs}: no mesh files (.obj .ply .stl .off .vtk .vtp) or "
                                  "label maps (.nii .nii.gz .nrrd .nhdr) found")
    else:
        paths = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]

    names = output_names(paths)
    given = [inputs] if isinstance(inputs, (str, Path)) and Path(inputs).is_dir() else []
    with staged_output(out_dir, verb="groom", overwrite=overwrite,
                       inputs=[*given, *paths]) as staging:
        manifest = _groom(paths, names, staging.path, opts, progress, DiskCache.resolve(cache))
    return GroomResult(out_dir=Path(out_dir), manifest=manifest)


def _check_label_options(opts: GroomOptions) -> None:
    """`ShapeAtlasError` for label-map options out of their range."""
    if opts.components not in ("largest", "each"):
        raise ShapeAtlasError(f"components must be 'largest' or 'each', got {opts.components!r}")
    if opts.mirror not in (None, "left", "right"):
        raise ShapeAtlasError(f"mirror must be 'left', 'right' or None, got {opts.mirror!r}")
    if not 0.0 <= opts.min_component_fraction <= 1.0:
        raise ShapeAtlasError("min_component_fraction must be between 0 and 1, got "
                              f"{opts.min_component_fraction}")
    if opts.labels is not None and (
            not opts.labels or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                   or v == 0 for v in opts.labels)):
        raise ShapeAtlasError(f"labels must be non-zero integers, got {opts.labels!r}")


def _groom(paths: Sequence[Path], file_names: Sequence[str], out_dir: Path,
           opts: GroomOptions, progress: Callable[[str, int, int], None] | None,
           cache: DiskCache | None = None) -> dict:
    """Groom `paths` into `out_dir` (the staging folder); -> the manifest written."""
    n_jobs = opts.n_jobs or (os.cpu_count() or 1)
    n_jobs = max(1, min(n_jobs, len(paths)))
    t0 = time.perf_counter()

    def tick(stage: str, total: int):
        return (lambda k: progress(stage, k, total)) if progress else None

    per_file = _map(partial(_prepare_one, opts=opts, cache=cache), [str(p) for p in paths],
                    n_jobs, tick("prepare", len(paths)))
    if cache is not None:
        hits = sum(bool(r.get("cached")) for results in per_file for r in results)
        log.info("%d of %d shapes read back from the cache %s", hits,
                 sum(len(results) for results in per_file), cache.root)
    # One entry per shape from here on: a label map may give several, each with its source.
    sources, names, prepared, notes = [], [], [], []
    for path, stem, results in zip(paths, file_names, per_file):
        for r in results:
            sources.append(path)
            names.append(stem + r["suffix"])
            prepared.append(r)
            notes += r.get("notes", [])
    n_label_maps = sum(is_label_map_file(p) for p in paths)
    if n_label_maps < len(paths) and (opts.labels is not None or opts.components != "largest"):
        notes.append(f"--labels and --components apply to label maps only: the "
                     f"{len(paths) - n_label_maps} mesh files were groomed as they are")
    for n in notes:
        log.warning("%s", n)
    _fail_name_clashes(prepared, names, sources)
    ok = [i for i, r in enumerate(prepared) if r["ok"]]
    failed = [{"name": names[i], "source": str(sources[i].resolve()), "error": r["error"]}
              | ({"volume_check": r["volume_check"]} if "volume_check" in r else {})
              | ({"label_map": r["label_map"]} if "label_map" in r else {})
              for i, r in enumerate(prepared) if not r["ok"]]
    for f in failed:
        log.warning("skipped %s", f["error"])
    if not ok:
        raise ShapeAtlasError(
            f"none of the {len(paths)} inputs could be groomed; first problem: {failed[0]['error']}"
        )
    meshes = {i: Mesh(prepared[i]["vertices"], prepared[i]["faces"], name=names[i]) for i in ok}
    ok = _leave_out_size_outliers(ok, meshes, sources, failed, opts)
    sizes = [meshes[i].volume if meshes[i].is_watertight else meshes[i].area for i in ok]
    ref_pos = choose_reference([names[i] for i in ok], sizes, opts.reference)
    ref = meshes[ok[ref_pos]]
    to_origin = translation(-ref.centroid) if opts.center else np.eye(4)

    cap_status = "off" if not opts.cap_twist or opts.align == "none" else "skipped: one shape"
    if opts.align == "none":
        aligned = [
            {"matrix": translation(-meshes[i].centroid) if opts.center else np.eye(4),
             "scale": 1.0, "rms": None}
            for i in ok
        ]
    else:
        jobs = [(meshes[i].vertices, meshes[i].faces, ref.vertices, ref.faces,
                 opts.align == "similarity", cache) for i in ok]
        aligned = _map(_align_one, jobs, n_jobs, tick("align", len(ok)))
        for a in aligned:
            a["matrix"] = to_origin @ a["matrix"]
        if opts.consensus_rounds and len(ok) >= 3:
            _align_to_consensus([meshes[i] for i in ok], aligned, ref_pos, opts.consensus_rounds,
                                tick("consensus", opts.consensus_rounds * len(ok)))
        if opts.cap_twist and len(ok) >= 2:
            cap_status = _turn_caps([meshes[i] for i in ok], aligned, ref_pos,
                                    [prepared[i]["cap"] for i in ok])

    shapes = []
    write_tick = tick("write", len(ok))
    for i, a in zip(ok, aligned):
        k_units = prepared[i]["unit_scale"]
        out_mesh = meshes[i].transformed(a["matrix"])
        units = np.diag([k_units, k_units, k_units, 1.0])
        if prepared[i]["mirrored"]:
            units = units @ MIRROR_X  # the shape was mirrored in the input's frame
        matrix = a["matrix"] @ units  # input file frame -> groomed frame
        out_path = out_dir / f"{names[i]}.ply"
        write_mesh(out_mesh, out_path)
        entry = {
            "name": names[i],
            "source": str(sources[i].resolve()),
            "output": out_path.name,
            "transform": np.round(matrix, 12).tolist(),
            "scale": float(a["scale"]) * k_units,
            "n_vertices": out_mesh.n_vertices,
            "n_faces": out_mesh.n_faces,
            "watertight": bool(out_mesh.is_watertight),
            "volume_ml": round(out_mesh.volume / 1000.0, 6) if out_mesh.is_watertight else None,
            "area_mm2": round(out_mesh.area, 4),
            "align_rms_mm": None if a["rms"] is None else round(float(a["rms"]), 6),
            "validity": _scaled_validity(prepared[i]["validity"], float(a["scale"])),
            # Groom's own check: volume kept, surface closed and not crossing itself.
            "volume_check": prepared[i]["volume_check"],
            "mirrored": bool(prepared[i]["mirrored"]),
        }
        if "label_map" in prepared[i]:
            entry["label_map"] = prepared[i]["label_map"]
        if opts.consensus_rounds:
            entry["consensus"] = bool(a.get("consensus", False))
        if "cap_twist_deg" in a:
            turned = a["cap_turn"] is not None
            entry["cap_twist_deg"] = round(a["cap_twist_deg"], 4) if turned else None
            # The turn in the groomed frame: transform = cap_turn @ (the rigid alignment).
            entry["cap_turn"] = np.round(a["cap_turn"], 12).tolist() if turned else None
            if "cap_basin_deg" in a:
                # Part of cap_turn: the move to the basin the outline chose (`cap.cap_basin`).
                entry["cap_basin_deg"] = round(a["cap_basin_deg"], 4)
        if prepared[i]["voxel_volume_mm3"] is not None:
            # The voxelised input lives in the input frame; a similarity scales volumes by k^3.
            entry["voxel_volume_ml"] = round(
                prepared[i]["voxel_volume_mm3"] * float(a["scale"]) ** 3 / 1000.0, 6
            )
        shapes.append(entry)
        if write_tick:
            write_tick(1)

    manifest = {
        "format": "shapeatlas-groom",
        "version": MANIFEST_VERSION,
        "options": asdict(opts),
        "reference": ref.name,
        "cap_twist": cap_status,
        "units": "mm",
        "n_inputs": len(paths),
        "n_label_maps": n_label_maps,
        "shapes": shapes,
        "failed": failed,
        "notes": notes,
    }
    write_text_atomic(out_dir / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")
    log.info("groomed %d of %d shapes in %.1f s", len(shapes), len(paths),
             time.perf_counter() - t0)
    return manifest


def rigid_transforms(manifest: dict) -> dict[str, np.ndarray]:
    """Each groomed shape's map from its input file into the groomed frame without the cap
    twist's turn (`cap_turn`): the plain rigid (or similarity) alignment. -> NAME -> (4, 4)"""
    out = {}
    for s in manifest["shapes"]:
        t = np.asarray(s["transform"], dtype=np.float64)
        turn = s.get("cap_turn")
        out[s["name"]] = t if turn is None else np.linalg.inv(np.asarray(turn)) @ t
    return out


def load_manifest(folder: str | Path) -> dict:
    """Read and check a `groom.json`: every shape's `name`, `output` (a file inside `folder`),
    `source` (a path string) and `transform` (a finite 4x4 matrix); one clear error naming the
    file and the field otherwise."""

    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ShapeAtlasError(f"{folder}: no {MANIFEST_NAME} (not a groomed folder)")
    manifest = validate.mapping(validate.read_json(path, max_bytes=MAX_MANIFEST_BYTES), path)
    if manifest.get("format") != "shapeatlas-groom":
        raise ShapeAtlasError(f"{path}: not a shapeatlas groom manifest")
    version = validate.get(manifest, "version", validate.Int(0, 10**6), path, default=0)
    if version > MANIFEST_VERSION:
        raise ShapeAtlasError(
            f"{path}: written by a newer shapeatlas (manifest version {version}); "
            "upgrade shapeatlas"
        )
    shapes = validate.items(manifest, "shapes", path)
    if not shapes:
        raise validate.field_error(path, "shapes", "must list at least one groomed shape")
    root = Path(folder).resolve()
    names = set()
    for i, s in enumerate(shapes):
        at = f"shapes[{i}]."
        validate.mapping(s, path, f"shapes[{i}]")
        name = validate.get(s, "name", validate.Str(255), path, prefix=at)
        if not name or name in names:
            raise validate.field_error(path, at + "name", f"must be a unique, non-empty name, "
                                       f"got {validate.shown(name)}")
        names.add(name)
        output = validate.get(s, "output", validate.Str(255), path, prefix=at)
        if (not output or Path(output).is_absolute()
                or not (root / output).resolve().is_relative_to(root)):
            raise validate.field_error(path, at + "output", "must name a file inside "
                                       f"{folder}, got {validate.shown(output)}")
        validate.get(s, "source", validate.Str(), path, prefix=at)
        validate.matrix(s, "transform", (4, 4), path, prefix=at)
        validate.matrix(s, "cap_turn", (4, 4), path, prefix=at, optional=True)
    return manifest


#: Largest `groom.json` read (a few kB per shape).
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
#: Largest groomed mesh file read back from a groomed folder.
MAX_GROOMED_BYTES = 2 * 1024**3


class GroomedMeshes(MeshSequence):
    """The meshes of a groomed folder, in manifest order, each read from its file when it is
    asked for (`MeshSequence`)."""

    def __init__(self, folder: str | Path, manifest: dict):
        self.paths = [Path(folder) / s["output"] for s in manifest["shapes"]]
        self.names = [str(p) for p in self.paths]  # as `read_mesh` names them

    def _read(self, i: int) -> Mesh:
        regular_file(self.paths[i], max_bytes=MAX_GROOMED_BYTES)
        return read_mesh(self.paths[i])


def load_groomed(folder: str | Path, *, lazy: bool = False
                 ) -> tuple[list[Mesh] | GroomedMeshes, dict]:
    """The groomed meshes of a folder (in manifest order) and its manifest (`load_manifest`).
    lazy: a `GroomedMeshes`, which reads each file when it is asked for, instead of a list."""

    manifest = load_manifest(folder)
    meshes = GroomedMeshes(folder, manifest)
    return (meshes if lazy else list(meshes)), manifest
