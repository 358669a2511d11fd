"""Shapes from label maps: the labels that make the organ, its connected parts and their side.

One label map often holds more than one shape. KiTS23 kidney segmentations, for example, put
both kidneys in one label and the tumours and cysts in others. `label_map_shapes` turns one
file into the shapes grooming needs:

- the chosen labels (default: every non-zero label) are merged into one mask;
- the mask's 26-connected components are ranked by voxel count, with `scipy.ndimage.label` and
  the connectivity `labelmap.label_surface` uses. Components smaller than `min_fraction` of the
  largest are stray voxels or specks, and are dropped;
- "largest" keeps the largest component, one shape per file. "each" keeps every component
  left, and names it after its side;
- side: world x grows towards the patient's right in RAS+ (`labelmap`), so a component whose
  centroid lies at larger x than the image's mid-sagittal plane (the plane through the centre
  of the field of view) is on the patient's right. Clinical fields of view are centred on the
  patient; one that is not can mislead this. A header without an orientation
  (`LabelImage.oriented`) tells no side;
- with "each", two components on one side, or no side at all, are named `_c1`, `_c2`, ... by
  size instead, with a note that says so;
- mirroring (x -> -x, faces flipped so normals stay outward) turns the shapes of one side into
  the other's, so one atlas serves both.

Each shape's surface is `labelmap.label_surface` of that component alone: the other components
are not in its crop, so smoothing never merges two kidneys that lie close together.
`describe_label_map` reports the same facts cheaply for `shapeatlas info`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from scipy import ndimage

from shapeatlas.errors import MeshError
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.labelmap import LabelImage, label_surface, read_label_image
from shapeatlas.outputs import file_stem

log = logging.getLogger(__name__)

#: Components smaller than this fraction of the largest one's voxel count are dropped.
DEFAULT_MIN_FRACTION = 0.1
#: Neighbourhood of the connected components: 26-connected, as `label_surface` uses.
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
#: The reflection across the sagittal plane: world x -> -x.
MIRROR_X = np.diag([-1.0, 1.0, 1.0, 1.0])
#: Label values up to this are counted with `np.bincount` (else `np.unique`, which sorts).
_BINCOUNT_MAX = 1 << 16
#: Voxels counted at once: `np.bincount` casts to 8-byte integers, which for a whole
#: 512 x 512 x 743 CT label map would be 1.5 GB.
_COUNT_BLOCK = 1 << 22

Side = Literal["left", "right"]


@dataclass(frozen=True)
class Component:
    """One connected part of a label map's chosen mask.

    rank: 1 for the largest, 2 for the next, ...
    n_voxels, volume: its voxel count and their volume (mm^3).
    centroid: (3,) world mm (RAS+) of its voxel centres' mean.
    side: the patient's side its centroid lies on, or None when the header has no orientation.
    kept: whether it is at least `min_fraction` of the largest.
    mask: (i, j, k) bool crop of it (None for components not kept); `offset` (3,) is the index
        of the crop's first voxel in the image.
    """

    rank: int
    n_voxels: int
    volume: float
    centroid: np.ndarray
    side: Side | None
    kept: bool
    mask: np.ndarray | None = None
    offset: np.ndarray | None = None


@dataclass(frozen=True)
class LabelShape:
    """One shape cut from a label map by `label_map_shapes`.

    suffix: added to the file's stem to name the shape: "" ("largest"), or "_left", "_right",
        "_c1", "_c2", ... ("each").
    mesh: the closed surface, world mm (RAS+), mirrored when `mirrored`.
    labels: the chosen labels present in the file.
    component: the component's rank by size (1 = largest) among all of the mask's components.
    n_components: components kept (at least `min_fraction` of the largest).
    side: see `Component.side`.
    mirrored: whether x was negated (the faces flipped with it).
    voxel_volume: the component's labelled voxel volume (mm^3), which the surface keeps.
    """

    suffix: str
    mesh: Mesh
    labels: tuple[int, ...]
    component: int
    n_components: int
    side: Side | None
    mirrored: bool
    voxel_volume: float


def label_counts(labels: np.ndarray) -> dict[int, int]:
    """Voxel count of every non-zero label value. labels: (I, J, K) integer -> {value: count}"""
    flat = labels.reshape(-1, order="A")  # a view of a C- or Fortran-ordered array
    lo, hi = int(flat.min()), int(flat.max())
    if lo >= 0 and hi <= _BINCOUNT_MAX:
        counts = np.zeros(hi + 1, dtype=np.int64)
        for start in range(0, flat.size, _COUNT_BLOCK):
            counts += np.bincount(flat[start:start + _COUNT_BLOCK], minlength=hi + 1)
        values = np.flatnonzero(counts)
        return {int(v): int(counts[v]) for v in values if v != 0}
    values, counts = np.unique(flat, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts) if v != 0}


def chosen_mask(image: LabelImage, *, labels: Sequence[int] | None,
                counts: dict[int, int] | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
    """The mask of the chosen labels (None: every non-zero label) and those of them present.
    -> (I, J, K) bool, labels present. `MeshError` naming the file when none is present."""
    counts = label_counts(image.labels) if counts is None else counts
    if labels is None:
        return image.labels != 0, tuple(sorted(counts))
    present = tuple(sorted(v for v in set(labels) if v in counts))
    if not present:
        wanted = ", ".join(map(str, sorted(set(labels))))
        shown = ", ".join(map(str, sorted(counts)[:20])) + (" ..." if len(counts) > 20 else "")
        raise MeshError(image.source, f"no voxel has label {wanted} (labels present: {shown})")
    return np.isin(image.labels, present), present


def midline_x(image: LabelImage) -> float:
    """World x (mm, RAS+) of the centre of the field of view: the mid-sagittal plane's."""
    centre = (np.array(image.labels.shape, dtype=np.float64) - 1.0) / 2.0
    return float(image.affine[0, :3] @ centre + image.affine[0, 3])


def find_components(image: LabelImage, *, mask: np.ndarray,
                    min_fraction: float = DEFAULT_MIN_FRACTION) -> list[Component]:
    """The 26-connected components of `mask` (I, J, K), largest first, each with its side and
    whether it is kept (at least `min_fraction` of the largest); kept ones carry their crop."""
    box = ndimage.find_objects(mask.view(np.uint8))[0]
    crop = mask[box]
    lo = np.array([s.start for s in box])
    parts, n = ndimage.label(crop, structure=CONNECTIVITY)
    sizes = np.bincount(parts.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-sizes, kind="stable")
    centres = ndimage.center_of_mass(crop, parts, order + 1)
    boxes = ndimage.find_objects(parts)
    mid = midline_x(image)
    a = image.affine
    out = []
    for rank, (i, c) in enumerate(zip(order, centres), start=1):
        centroid = a[:3, :3] @ (np.asarray(c) + lo) + a[:3, 3]
        side = None
        if image.oriented and centroid[0] != mid:
            side = "right" if centroid[0] > mid else "left"
        kept = bool(sizes[i] >= min_fraction * sizes[order[0]])
        sub = boxes[i]
        out.append(Component(
            rank=rank, n_voxels=int(sizes[i]), volume=float(sizes[i]) * image.voxel_volume,
            centroid=centroid, side=side, kept=kept,
            mask=(parts[sub] == i + 1) if kept else None,
            offset=(lo + np.array([s.start for s in sub])) if kept else None,
        ))
    return out


def component_suffixes(components: Sequence[Component], *, oriented: bool
                       ) -> tuple[list[str], str | None]:
    """Name suffixes of the kept components for "each": `_left`/`_right` where every side
    holds at most one, else `_c1`, `_c2`, ... by size. -> (suffixes, why not by side or None)"""
    sides = [c.side for c in components]
    if oriented and len(set(sides)) == len(sides):
        return [f"_{s}" for s in sides], None
    if not oriented:
        why = "the header states no orientation"
    else:
        side = max(set(sides), key=sides.count)
        why = f"{sides.count(side)} components lie on the patient's {side}"
    return [f"_c{k}" for k in range(1, len(components) + 1)], why


def label_map_shapes(
    path: str | Path,
    *,
    labels: Sequence[int] | None = None,
    components: Literal["largest", "each"] = "largest",
    min_fraction: float = DEFAULT_MIN_FRACTION,
    mirror: Side | None = None,
    smoothing_mm: float | None = None,
) -> tuple[list[LabelShape], list[str]]:
    """The shapes one label map gives (see the module docstring), and notes for the user.

    labels: the labels merged into the organ; None takes every non-zero label.
    components: "largest" (one shape) or "each" (every kept component, named by side).
    min_fraction: components below this fraction of the largest's voxel count are dropped.
    mirror: negate x of the shapes on this side of the patient.
    smoothing_mm: `label_surface`'s Gaussian sigma (None: its default).

    Raises `MeshError` naming the file for an unreadable, empty, non-3-D or non-label image,
    for labels that do not occur, and, with `mirror`, for a header without an orientation.
    """
    if components not in ("largest", "each"):
        raise MeshError(path, f"components must be 'largest' or 'each', got {components!r}")
    image = read_label_image(path)
    if mirror is not None and not image.oriented:
        raise MeshError(path, f"the header states no orientation, so the patient's {mirror} "
                        "side cannot be told (mirror needs a qform/sform or an anatomical "
                        "NRRD space)")
    mask, present = chosen_mask(image, labels=labels)
    found = find_components(image, mask=mask, min_fraction=min_fraction)
    kept = [c for c in found if c.kept]
    notes = []
    dropped = [c for c in found if not c.kept]
    if dropped:
        log.info("%s: %d components below %.3g of the largest dropped (%.3g mL in all)", path,
                 len(dropped), min_fraction, sum(c.volume for c in dropped) / 1000.0)
    if components == "largest":
        chosen, suffixes = kept[:1], [""]
    else:
        chosen = kept
        suffixes, why = component_suffixes(kept, oriented=image.oriented)
        if why is not None:
            notes.append(f"{path}: {why}: its {len(kept)} components are named "
                         f"_c1..._c{len(kept)} by size")
    shapes = []
    for c, suffix in zip(chosen, suffixes):
        affine = image.affine.copy()
        affine[:3, 3] += affine[:3, :3] @ c.offset
        mesh = label_surface(c.mask.astype(np.uint8), affine, smoothing_mm=smoothing_mm,
                             name=str(path))
        mirrored = mirror is not None and c.side == mirror
        if mirrored:
            mesh = mesh.transformed(MIRROR_X)
        shapes.append(LabelShape(suffix=suffix, mesh=mesh, labels=present, component=c.rank,
                                 n_components=len(kept), side=c.side, mirrored=mirrored,
                                 voxel_volume=c.volume))
    return shapes, notes


def describe_label_map(path: str | Path, *, labels: Sequence[int] | None = None,
                       min_fraction: float = DEFAULT_MIN_FRACTION) -> dict:
    """What `shapeatlas info` says of a label map, JSON-ready: its grid, orientation, every
    label's voxel count and volume, and the components of the chosen labels with their volume,
    centroid, side and the name `groom --components each` would give them. `problem` is None,
    or why groom would leave the file out (the chosen labels do not occur). Raises `MeshError`
    for a file that is no usable label map (unreadable, empty, not 3-D, not integer)."""
    import nibabel as nib

    image = read_label_image(path)
    counts = label_counts(image.labels)
    ml = image.voxel_volume / 1000.0
    out = {
        "name": str(path),
        "kind": "label map",
        "shape": [int(n) for n in image.labels.shape],
        "spacing_mm": [float(s) for s in image.spacing],
        "oriented": image.oriented,
        "orientation": "".join(nib.aff2axcodes(image.affine)) if image.oriented else None,
        "midline_x_mm": midline_x(image) if image.oriented else None,
        "labels": [{"label": v, "voxels": n, "volume_ml": n * ml} for v, n in counts.items()],
        "chosen_labels": None,
        "min_fraction": min_fraction,
        "components": [],
        "n_components": 0,
        "dropped_components": 0,
        "dropped_volume_ml": 0.0,
        "naming": None,
        "problem": None,
    }
    try:
        mask, present = chosen_mask(image, labels=labels, counts=counts)
    except MeshError as exc:
        out["problem"] = exc.problem
        return out
    out["chosen_labels"] = list(present)
    found = find_components(image, mask=mask, min_fraction=min_fraction)
    kept = [c for c in found if c.kept]
    suffixes, why = component_suffixes(kept, oriented=image.oriented)
    stem = file_stem(path)
    out["naming"] = "by side" if why is None else f"by size ({why})"
    out["n_components"] = len(found)
    out["dropped_components"] = len(found) - len(kept)
    out["dropped_volume_ml"] = sum(c.volume for c in found if not c.kept) / 1000.0
    out["components"] = [
        {"component": c.rank, "voxels": c.n_voxels, "volume_ml": c.volume / 1000.0,
         "centroid_mm": [float(x) for x in c.centroid], "side": c.side,
         "name": stem + s}
        for c, s in zip(kept, suffixes)
    ]
    return out
