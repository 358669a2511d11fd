"""Cleaning, watertight remeshing and decimation of one surface.

- `clean`: merge duplicate vertices, drop degenerate and duplicate faces, keep the largest component,
  orient consistently (trimesh's winding repair).
- `close_surface` / `make_watertight`: generalised winding number of the input (libigl's fast
  winding number, which is robust to holes, handles and self-intersections in the input; faces
  oriented as given or consistently, whichever gives the cleaner field: `orient_for_winding`)
  sampled on a regular grid, then marching cubes at the 1/2 level (scikit-image). The winding
  number varies smoothly across the surface, so the level set has sub-voxel accuracy and no
  staircase. The volume enclosed by the result is, by construction, the volume of the
  voxelised input {w >= 1/2}; parts not connected to the largest make the grid finer, and
  what is still dropped is reported; so does a level set that holds less than a nearly closed
  input's own signed volume (a thin part between grid points).
- `decimate`: manifold-preserving edge collapse (libigl: QSlim or shortest edge) to a target
  vertex count, then checked: faces that cross others are smoothed apart (`untangle`) or,
  where that fails, repaired by local moves, flips and collapses checked one at a time
  (`repair_crossings`), and the volume is restored (`restore_volume`).
- `split_long_edges`: longest-edge bisection of the edges longer than a length, which moves no
  point of the surface. QSlim leaves a flat region (the basal cap of an LV, a cut) as a few
  large triangles with no vertex inside; a shape matched by its vertices, or an atlas made of
  it, then has nothing there to match (on the synthetic LVs the cap, 13% of the area, had 3% of
  the vertices, all on its rim). trimesh's `subdivide_to_size` returns a triangle soup and
  its `subdivide(face_index=...)` leaves cracks at the chosen faces' neighbours, and libigl
  only subdivides everything, hence the few lines here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from shapeatlas.errors import MeshError
from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.io import merge_duplicate_vertices
from shapeatlas.mesh.projection import Projector
from shapeatlas.mesh.validity import degenerate_mask, self_intersecting_faces

log = logging.getLogger(__name__)

#: Vertices closer than this fraction of the bounding-box diagonal are merged by `clean`.
MERGE_TOLERANCE = 1e-7
#: Faces whose area is below this fraction of the mean face area count as degenerate.
DEGENERATE_AREA_FRACTION = 1e-10
#: Level of the winding-number field that defines "inside".
WINDING_LEVEL = 0.5
#: Default number of grid cells along the longest side of the bounding box for `close_surface`.
#: (At 128 two AMOS livers kept 1% more of their thin parts, but 16 of 77 instead of 6 then
#: crossed themselves after decimation to 2,500 vertices.)
DEFAULT_GRID_RESOLUTION = 96
#: The winding number is evaluated exactly on a grid this many times coarser, and near the surface.
COARSE_FACTOR = 3
#: Half-width, in fine cells, of the band around the surface where it is evaluated exactly.
NARROW_BAND_CELLS = 3
#: Quadric decimation first collapses shortest edges down to this many times the target faces.
QUADRIC_PREDECIMATION = 3
#: `even_out` splits edges longer than this many times the median edge length.
EVEN_EDGE_RATIO = 2.0
#: Rounds of `split_long_edges` at most (each splits every edge that is the longest of all its
#: faces; a chain of longer neighbours takes one round per link).
MAX_SPLIT_ROUNDS = 60
#: `untangle`: rounds at most, rings of neighbours smoothed (one more each round), smoothing
#: steps per round and the weight of each step.
UNTANGLE_ROUNDS = 4
UNTANGLE_RINGS = 2
UNTANGLE_STEPS = 3
UNTANGLE_WEIGHT = 0.5
#: `repair_crossings`: rounds at most, and the reach (in median edge lengths) of the faces whose
#: crossings a local change is judged by.
REPAIR_ROUNDS = 4
REPAIR_REACH = 4.0
#: Rings of neighbours by which `repair_crossings` grows a knot it could not refill.
REPAIR_KNOT_RINGS = 2
#: `decimate` restores the volume of a collapse it did not have to smooth only when it is
#: further than this share off (the move takes flat parts, an LV's cap, off their plane).
VOLUME_SLACK = 6e-3
#: Parts of {w >= 1/2} outside the largest, above this share of the volume, make
#: `close_surface` refine its grid (a thin bridge it could not resolve); below, they are specks.
SPECK_VOLUME_FRACTION = 1e-3
#: Factor by which `close_surface` refines its grid each time, and how many times at most.
REFINE_FACTOR = 1.5
MAX_GRID_REFINEMENTS = 2
#: An input counts as nearly closed (its signed volume is then its volume, independent of any
#: grid) when at most this share of its edges lie on a hole's rim and none is non-manifold...
NEARLY_CLOSED_EDGES = 0.02
#: ... and its signed volume is within this share of the grid's (else the faces' orientation,
#: not the grid, is in doubt).
NEARLY_CLOSED_AGREEMENT = 0.05
#: `close_surface` also refines its grid while it holds this share less than a nearly closed
#: input's signed volume (thin parts falling between grid points).
GRID_VOLUME_GAP = 0.006
#: Coarse grid (cells along the longest side) on which `orient_for_winding` compares fields.
ORIENTATION_GRID = 32
#: Winding numbers strictly between these count as ambiguous (`orient_for_winding`).
AMBIGUOUS_WINDING = (0.2, 0.8)
#: The input's own orientation must beat the consistent one by this share of the grid.
ORIENTATION_MARGIN = 1e-3


def clean(mesh: Mesh, *, keep_largest: bool = True) -> Mesh:
    """Merge duplicate vertices, drop degenerate/duplicate faces and fins, keep the largest
    component.

    A fin is a face on a non-manifold edge (one shared by three or more faces) that also has a
    boundary edge, such as a stray triangle glued to one edge of a closed surface; fins are
    peeled off (and named in a log warning) until none is left. Components are ranked by
    surface area. Vertex order of the survivors is kept.
    """
    v = np.asarray(mesh.vertices)
    diag = float(np.linalg.norm(v.max(0) - v.min(0)))
    decimals = max(0, int(-np.floor(np.log10(max(diag * MERGE_TOLERANCE, 1e-300)))))
    v, f, _ = merge_duplicate_vertices(v, np.asarray(mesh.faces), decimals=decimals)
    # Degenerate: repeated index or (near) zero area.
    rep = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])
    areas = geo.face_areas(v, f)
    mean_area = areas[~rep].mean() if (~rep).any() else 0.0
    keep = ~rep & (areas > DEGENERATE_AREA_FRACTION * mean_area)
    f = f[keep]
    # Duplicate faces: same vertex set, whatever the order or orientation.
    if len(f):
        _, first = np.unique(np.sort(f, axis=1), axis=0, return_index=True)
        f = f[np.sort(first)]
    if len(f) == 0:
        raise MeshError(mesh.name, "no valid faces remain after removing degenerate faces")
    f = _drop_fins(f, name=mesh.name)
    out = Mesh(v, f, name=mesh.name)
    out = _largest_component(out) if keep_largest else _drop_unused(out)
    return orient_outward(out)


def _drop_fins(faces: np.ndarray, *, name: str) -> np.ndarray:
    """Peel faces that sit on a non-manifold edge and have a boundary edge. (F, 3) -> (F', 3)"""
    f = faces
    removed = 0
    while len(f):
        codes, _ = geo.pair_codes(np.sort(geo.directed_edges(f), axis=1))
        _, edge_id, counts = np.unique(codes, return_inverse=True, return_counts=True)
        per_face = counts[edge_id.reshape(3, -1)]  # directed_edges stacks edge j of all faces
        fin = (per_face > 2).any(axis=0) & (per_face == 1).any(axis=0)
        if not fin.any():
            break
        removed += int(fin.sum())
        f = f[~fin]
    if removed:
        log.warning("%s: removed %d face(s) hanging off non-manifold edges (fins)", name, removed)
    if len(f) == 0:
        raise MeshError(name, "no faces remain after removing faces on non-manifold edges")
    return f


def _drop_unused(mesh: Mesh) -> Mesh:
    """Remove vertices no face uses (keeping the order of the rest)."""
    f = np.asarray(mesh.faces)
    used = np.unique(f)
    if used.size == mesh.n_vertices:
        return mesh
    remap = np.full(mesh.n_vertices, -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    return Mesh(mesh.vertices[used], remap[f], name=mesh.name)


def _largest_component(mesh: Mesh) -> Mesh:
    """Keep the connected component with the largest surface area."""
    f = np.asarray(mesh.faces)
    face_label = mesh.component_labels[f[:, 0]]
    comp_area = np.bincount(face_label, weights=mesh.face_areas)
    keep = face_label == int(np.argmax(comp_area))
    return _drop_unused(Mesh(mesh.vertices, f[keep], name=mesh.name))


def orient_outward(mesh: Mesh) -> Mesh:
    """Make face winding consistent and, for closed surfaces, outward (positive volume)."""
    faces = np.asarray(mesh.faces)
    # Consistent orientation <=> no directed half-edge is used twice (checked cheaply first).
    _, counts = np.unique(geo.pair_codes(geo.directed_edges(faces))[0], return_counts=True)
    if np.any(counts > 1):
        faces = geo.orient_faces_consistently(faces)
    # For a closed surface this makes the normals outward; for an open one it picks the side
    # whose flux through the surface is positive, the same convention the winding number uses.
    if geo.signed_volume(np.asarray(mesh.vertices), faces) < 0:
        faces = faces[:, ::-1]
    return Mesh(mesh.vertices, faces, name=mesh.name)


def _surface_samples(mesh: Mesh, spacing: float) -> np.ndarray:
    """Points on every triangle, no farther apart than about `spacing`. -> (P, 3)

    Each face gets a barycentric lattice fine enough for its longest edge; faces are grouped by
    lattice size so the work stays vectorised.
    """
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    tri = v[f]
    longest = np.max(np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2), axis=1)
    n_div = np.maximum(1, np.ceil(longest / spacing).astype(int))
    out = [v]
    for n in np.unique(n_div):
        if n == 1:
            continue
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        keep = i + j <= n
        bary = np.stack([i[keep], j[keep], n - i[keep] - j[keep]], axis=1) / n
        t = tri[n_div == n]
        out.append(np.einsum("kb,fbd->fkd", bary, t).reshape(-1, 3))
    return np.concatenate(out, axis=0)


def winding_number_grid(
    mesh: Mesh,
    *,
    resolution: int = DEFAULT_GRID_RESOLUTION,
    pitch: float | None = None,
    band_cells: int = NARROW_BAND_CELLS,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Generalised winding number |w| of `mesh` on a regular grid around it.

    Returns `(w, origin, pitch)` with `w` of shape (I, J, K); grid point (i, j, k) sits at
    `origin + pitch * (i, j, k)`. The grid has a margin of two cells and its outermost layer is
    set to 0, so the level set is always closed.

    The field is evaluated exactly (libigl) on a grid `COARSE_FACTOR` times coarser and on every
    fine point within `band_cells` cells of the surface; elsewhere, where w is smooth, it is
    interpolated trilinearly from the coarse grid. `band_cells=0` evaluates every point exactly.
    """
    import igl
    from scipy import ndimage

    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    lo, hi = v.min(0), v.max(0)
    if pitch is None:
        pitch = float((hi - lo).max()) / float(resolution)
    if not pitch > 0:
        raise MeshError(mesh.name, "cannot voxelise a mesh with zero extent")
    lo = lo - 2 * pitch
    n = np.ceil((hi + 2 * pitch - lo) / pitch).astype(int) + 1
    k = COARSE_FACTOR
    n = k * np.ceil((n - 1) / k).astype(int) + 1  # so the coarse grid is a subgrid

    def points(idx: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(lo + pitch * idx.astype(np.float64))

    if band_cells <= 0:
        idx = np.stack(np.meshgrid(*[np.arange(m) for m in n], indexing="ij"), -1).reshape(-1, 3)
        w = igl.fast_winding_number(v, f, points(idx)).reshape(tuple(n))
    else:
        nc = (n - 1) // k + 1
        cidx = np.stack(np.meshgrid(*[np.arange(m) for m in nc], indexing="ij"), -1).reshape(-1, 3)
        wc = igl.fast_winding_number(v, f, points(cidx * k)).reshape(tuple(nc))
        fine = np.stack(np.meshgrid(*[np.arange(m) / k for m in n], indexing="ij"), 0)
        w = ndimage.map_coordinates(wc, fine.reshape(3, -1), order=1).reshape(tuple(n))
        band = np.zeros(tuple(n), dtype=bool)
        cells = np.floor((_surface_samples(mesh, pitch) - lo) / pitch + 0.5).astype(int)
        cells = np.clip(cells, 0, n - 1)
        band[cells[:, 0], cells[:, 1], cells[:, 2]] = True
        band = ndimage.binary_dilation(band, iterations=band_cells)
        bidx = np.argwhere(band)
        w[band] = igl.fast_winding_number(v, f, points(bidx))
    w = np.abs(w)
    for axis in range(3):  # far from holes w can exceed 1/2 outside the box: close it off
        sl = [slice(None)] * 3
        sl[axis] = 0
        w[tuple(sl)] = 0.0
        sl[axis] = -1
        w[tuple(sl)] = 0.0
    return w, lo, pitch


@dataclass(frozen=True)
class Closed:
    """What `close_surface` made of one input.

    mesh: the closed, outward-oriented surface (one component).
    enclosed_volume: volume of the whole voxelised input, every part of {w >= 1/2} (cubic
        units) on the final grid: the input's volume, against which the output is judged.
    dropped_volume: volume of the parts of {w >= 1/2} that are not connected to the kept one
        on the final grid (0 when nothing was dropped).
    n_dropped_parts: how many such parts.
    pitch: spacing of the final grid.
    reoriented: whether the input's faces were re-oriented consistently before the winding
        number (`orient_for_winding`).
    input_volume: the input's own signed volume (faces as oriented for the winding number)
        where it is nearly closed (`nearly_closed_volume`), else None: a measure of its volume
        that no grid limits.
    """

    mesh: Mesh
    enclosed_volume: float
    dropped_volume: float
    n_dropped_parts: int
    pitch: float
    reoriented: bool
    input_volume: float | None = None

    @property
    def reference_volume(self) -> float:
        """The input's volume to judge a result by: `input_volume` where known, else
        `enclosed_volume`."""
        return self.enclosed_volume if self.input_volume is None else self.input_volume


def nearly_closed_volume(mesh: Mesh) -> float | None:
    """Signed volume of `mesh` as its faces are oriented, where at most `NEARLY_CLOSED_EDGES`
    of its edges are on holes and none is shared by three faces or more (a few missing faces
    change it by about their share of the volume); None otherwise."""
    f = np.asarray(mesh.faces, dtype=np.int64)
    codes, _ = geo.pair_codes(np.sort(geo.directed_edges(f), axis=1))
    _, counts = np.unique(codes, return_counts=True)
    if np.any(counts > 2) or np.sum(counts == 1) > NEARLY_CLOSED_EDGES * len(counts):
        return None
    volume = abs(geo.signed_volume(np.asarray(mesh.vertices, dtype=np.float64), f))
    return volume if volume > 0 else None


def _ambiguous_share(mesh: Mesh) -> float:
    """Share of a coarse grid around `mesh` where the winding number is neither about 0 nor
    about 1: near 0 for a well-oriented (even open) surface, large where patches are flipped."""
    w, _, _ = winding_number_grid(mesh, resolution=ORIENTATION_GRID, band_cells=0)
    return float(np.mean((w > AMBIGUOUS_WINDING[0]) & (w < AMBIGUOUS_WINDING[1])))


def orient_for_winding(mesh: Mesh) -> tuple[Mesh, bool]:
    """The input with the face orientation that gives the cleaner winding-number field.

    The winding number needs faces oriented as the geometry is. A consistent orientation
    (`clean`) is right for an orientable surface, but a real surface with a fold or a pinched
    handle is not orientable: propagating one face's orientation then flips a whole patch
    across the fold, and on AMOS livers that took 12% of the faces and up to a fifth of the
    volume. The input's own orientation (written face by face by whatever made it) is then
    the better one. Both are tried on a coarse grid; the one whose field is more nearly 0 or 1
    everywhere wins, the consistent one on a tie. -> (mesh, whether the consistent one won)
    """
    f = np.asarray(mesh.faces, dtype=np.int64)
    rep = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])
    f = f[~rep]
    if len(f):  # a face listed twice would count twice in the winding number
        _, first = np.unique(np.sort(f, axis=1), axis=0, return_index=True)
        f = f[np.sort(first)]
    given = Mesh(mesh.vertices, f, name=mesh.name)
    consistent = clean(mesh, keep_largest=False)
    if _ambiguous_share(given) < _ambiguous_share(consistent) - ORIENTATION_MARGIN:
        log.info("%s: kept the input's face orientation for the winding number (a consistent "
                 "one flips a patch: the surface is not orientable)", mesh.name)
        return given, False
    return consistent, True


def close_surface(
    mesh: Mesh,
    *,
    resolution: int = DEFAULT_GRID_RESOLUTION,
    pitch: float | None = None,
    max_refinements: int = MAX_GRID_REFINEMENTS,
) -> Closed:
    """A closed, outward-oriented surface of the region the input encloses, and its bookkeeping.

    The region is {winding number >= 1/2} (`orient_for_winding` picks the faces' orientation),
    which is what "inside" means for an open or self-intersecting surface. The output must be
    one surface, so only the largest connected part of the region is kept; when the other
    parts hold more than `SPECK_VOLUME_FRACTION` of the volume (a thin bridge the grid could
    not resolve), the grid is refined by `REFINE_FACTOR`, up to `max_refinements` times. What
    is still dropped then is reported (`Closed.dropped_volume`) and logged, never silent. The
    grid is refined the same way while it holds more than `GRID_VOLUME_GAP` less than a
    nearly closed input's own volume (`nearly_closed_volume`): thin parts between grid points.
    """
    from scipy import ndimage
    from skimage.measure import marching_cubes

    source, reoriented = orient_for_winding(mesh)
    own = nearly_closed_volume(source)
    for attempt in range(max_refinements + 1):
        w, origin, step = winding_number_grid(source, resolution=resolution, pitch=pitch)
        inside = w >= WINDING_LEVEL
        if not inside.any():
            raise MeshError(
                mesh.name,
                "encloses no volume (winding number below 1/2 everywhere): is it a flat or "
                "very open surface?",
            )
        labels, n_parts = ndimage.label(inside)
        sizes = np.bincount(labels.ravel())[1:]
        largest = int(np.argmax(sizes)) + 1
        rest = float(sizes.sum() - sizes[largest - 1]) / float(sizes.sum())
        surface = held = None
        if own is not None and (rest <= SPECK_VOLUME_FRACTION or attempt == max_refinements):
            # What the level set holds (sub-cell accurate, unlike a count of grid points,
            # which a thin part can leave as it is while the surface misses it).
            surface = marching_cubes(w, level=WINDING_LEVEL, spacing=(step, step, step))[:2]
            held = abs(geo.signed_volume(surface[0].astype(np.float64), surface[1]))
            if abs(held / own - 1.0) > NEARLY_CLOSED_AGREEMENT:
                own = None  # the faces' orientation is in doubt, not the grid
        short = own is not None and held is not None and held < (1.0 - GRID_VOLUME_GAP) * own
        if (rest <= SPECK_VOLUME_FRACTION and not short) or attempt == max_refinements:
            break
        if short:
            log.info("%s: the grid at a %.2f step holds %.2f%% less than the surface's own "
                     "volume; refining it", mesh.name, step, 100 * (1.0 - held / own))
        else:
            log.info("%s: %d parts at a %.2f grid step, %.2f%% of the volume outside the "
                     "largest; refining the grid", mesh.name, n_parts, step, 100 * rest)
        resolution = int(round(resolution * REFINE_FACTOR))
        pitch = None if pitch is None else pitch / REFINE_FACTOR
    enclosed = float(inside.sum()) * step**3
    if n_parts > 1:
        # Marching cubes of the kept part alone: the others would be separate surfaces.
        keep = ndimage.binary_dilation(labels == largest, iterations=1)
        w = np.where(keep, w, np.minimum(w, 0.0))
        if rest > SPECK_VOLUME_FRACTION:
            log.warning("%s: %d part(s) disconnected from the rest even at a %.2f grid step, "
                        "%.2f%% of the volume, dropped", mesh.name, n_parts - 1, step, 100 * rest)
        else:
            log.info("%s: dropped %d speck(s) of %.3f%% of the volume", mesh.name, n_parts - 1,
                     100 * rest)
    if surface is None or n_parts > 1:
        surface = marching_cubes(w, level=WINDING_LEVEL, spacing=(step, step, step))[:2]
    verts, faces = surface
    verts = verts.astype(np.float64) + origin
    faces = faces.astype(np.int64)  # scikit-image's marching cubes already shares vertices
    out = _largest_component(Mesh(verts, faces, name=mesh.name))
    if geo.signed_volume(np.asarray(out.vertices), np.asarray(out.faces)) < 0:
        out = Mesh(out.vertices, out.faces[:, ::-1], name=mesh.name)
    if not out.is_watertight:
        raise MeshError(mesh.name, "marching cubes did not give a closed surface")
    return Closed(mesh=out, enclosed_volume=enclosed, dropped_volume=rest * enclosed,
                  n_dropped_parts=n_parts - 1, pitch=step, reoriented=reoriented,
                  input_volume=own)


def make_watertight(
    mesh: Mesh,
    *,
    resolution: int = DEFAULT_GRID_RESOLUTION,
    pitch: float | None = None,
    max_refinements: int = MAX_GRID_REFINEMENTS,
) -> tuple[Mesh, float]:
    """`close_surface`, returning `(mesh, enclosed_volume)`: the new surface and the volume of
    the whole voxelised input (grid cells with w >= 1/2, in cubic units) on the final grid."""
    closed = close_surface(mesh, resolution=resolution, pitch=pitch,
                           max_refinements=max_refinements)
    return closed.mesh, closed.enclosed_volume


def decimate(
    mesh: Mesh, *, target_vertices: int, method: Literal["quadric", "uniform"] = "quadric"
) -> Mesh:
    """Decimate to about `target_vertices` vertices, keeping a watertight input watertight.

    method:
        "quadric": libigl's QSlim (quadric error metric), which keeps volume and thin parts best
        (measured on the 77 AMOS livers: within about 1% of the voxelised volume at 2,500
        vertices) at the cost of less regular triangles.
        "uniform": libigl's shortest-edge collapse to midpoints: near-equilateral triangles, but
        it rounds off thin ridges (up to about 3% volume loss on the same livers).
    Both refuse collapses that break manifoldness. (fast-simplification was tried first: its
    folds broke watertightness on real livers.) Neither checks that the surface does not pass
    through itself, and on thin parts they do: the result is checked, its crossings smoothed
    away (`untangle`) or, where smoothing leaves some, repaired locally against the input
    (`repair_crossings`, whichever leaves fewer; QSlim's result, else shortest-edge
    collapse's if that has fewer left; a warning names what remains), and its volume
    restored to the input's (`restore_volume`). A repair may remove a few vertices.
    A mesh at or below the target is subdivided (midpoints) until it is above. For a closed
    surface F = 2V - 2*chi.
    """
    import igl

    if target_vertices < 4:
        raise ValueError(f"target_vertices must be at least 4, got {target_vertices}")
    if method not in ("quadric", "uniform"):
        raise ValueError(f"method must be 'quadric' or 'uniform', got {method!r}")
    if not mesh.is_watertight:
        # libigl's collapses loop until std::bad_alloc (tens of GB) on surfaces with holes.
        raise MeshError(mesh.name, "decimation needs a closed (watertight) surface and this one "
                        "has holes or non-manifold edges: groom it with --watertight first")
    v = np.array(mesh.vertices, dtype=np.float64)
    f = np.array(mesh.faces, dtype=np.int64)
    while len(v) <= target_vertices:
        v, f = _subdivide(v, f)
    chi = geo.euler_characteristic(len(v), f)
    target_faces = max(4, 2 * target_vertices - 2 * chi)
    if target_faces >= len(f):
        return Mesh(v, f, name=mesh.name)
    volume = geo.signed_volume(v, f)
    dense = Mesh(v, f, name=mesh.name)
    if method == "quadric" and len(f) > QUADRIC_PREDECIMATION * target_faces:
        # QSlim's cost grows with the input; a cheap shortest-edge pass first removes the
        # marching-cubes over-sampling (tiny edges), which QSlim would collapse first anyway.
        v, f = _igl_collapse(igl.decimate, v, f, QUADRIC_PREDECIMATION * target_faces)
    fn = igl.qslim if method == "quadric" else igl.decimate
    v2, f2 = _igl_collapse(fn, v, f, target_faces)
    collapsed = _drop_unused(Mesh(v2, f2, name=mesh.name))
    out, n_crossing, changed = _uncross(collapsed, dense)
    if n_crossing and method == "quadric":
        # Shortest-edge collapses to midpoints fold thin parts less often than QSlim.
        v3, f3 = _igl_collapse(igl.decimate, v, f, target_faces)
        other, n_other, other_changed = _uncross(_drop_unused(Mesh(v3, f3, name=mesh.name)),
                                                  dense)
        if n_other < n_crossing:
            out, n_crossing, changed = other, n_other, other_changed
    if n_crossing:
        log.warning("%s: %d faces of the decimated surface cross others even after repairing "
                    "and smoothing them", mesh.name, n_crossing)
    # Smoothing shrinks, and a repaired surface holds a little less: then the volume is
    # always restored, else only beyond the slack.
    return restore_volume(out, volume=volume, n_crossing=n_crossing,
                          slack=0.0 if changed else VOLUME_SLACK)


def _uncross(mesh: Mesh, surface: Mesh) -> tuple[Mesh, int, bool]:
    """`untangle`; where faces still cross, `repair_crossings` of `mesh` instead (then
    `untangle` of what it leaves), if that leaves fewer.
    -> (mesh, faces still crossing, whether it was changed: smoothed or repaired)"""
    out, n_crossing = untangle(mesh)
    if n_crossing:
        repaired, n_left = repair_crossings(mesh, surface)
        if n_left:
            repaired, n_left = untangle(repaired)
        if n_left < n_crossing:
            out, n_crossing = repaired, n_left
    return out, n_crossing, out is not mesh


def untangle(mesh: Mesh, *, rounds: int = UNTANGLE_ROUNDS,
             context: str = "after decimation") -> tuple[Mesh, int]:
    """Smooth the surface around its self-intersecting faces until none is left.

    A collapse that is fine for the quadric error can fold a thin part (a liver's lobe edge a
    few mm thick, under a 6 mm edge) through the sheet facing it. Each round finds the crossing
    faces (`validity.self_intersecting_faces`) and moves their vertices and `UNTANGLE_RINGS`
    rings around them (one more every round) `UNTANGLE_STEPS` times towards the mean of their
    neighbours; where `rounds` rounds do not clear them, the same again from the start with
    one ring and twice the steps. context: how the log line says where the crossings came from.
    -> (mesh, number of faces still crossing; 0 when it succeeded)
    """
    from scipy import sparse


    v = np.array(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    bad = self_intersecting_faces(v, f)
    if len(bad) == 0:
        return mesh, 0
    e = geo.unique_edges(f)
    adj = sparse.coo_matrix((np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]],
                                                   np.r_[e[:, 1], e[:, 0]])),
                            shape=(len(v), len(v))).tocsr()
    degree = np.maximum(np.asarray(adj.sum(axis=1)).ravel(), 1.0)[:, None]
    start = v.copy()
    # Wide and gentle first; where that fails, from the start again, narrow and stronger.
    for rings, steps in ((UNTANGLE_RINGS, UNTANGLE_STEPS), (1, 2 * UNTANGLE_STEPS)):
        v, bad = start.copy(), self_intersecting_faces(start, f)
        for r in range(rounds):
            moving = np.zeros(len(v), dtype=bool)
            moving[np.unique(f[bad])] = True
            for _ in range(rings + r):
                moving |= (adj @ moving) > 0
            for _ in range(steps):
                v[moving] += UNTANGLE_WEIGHT * ((adj @ v)[moving] / degree[moving] - v[moving])
            bad = self_intersecting_faces(v, f)
            if len(bad) == 0:
                break
        if len(bad) == 0:
            break
    log.info("%s: smoothed %s self-intersections %s", mesh.name,
             "away the" if len(bad) == 0 else "but could not remove all", context)
    return Mesh(v, f, name=mesh.name), len(bad)


def repair_crossings(mesh: Mesh, surface: Mesh, *,
                     rounds: int = REPAIR_ROUNDS) -> tuple[Mesh, int]:
    """Remove self-intersections of a decimated `mesh` one local change at a time.

    The crossings QSlim leaves on thin parts (measured on AMOS livers) are mostly a fold of a
    vertex's fan over itself, and the rest small knots: a few vertices all joined to each
    other around a tiny pinched handle. Each round tries, for every corner of a crossing face
    and its neighbours, moves to the nearest point of `surface` (the surface before
    decimation, which does not cross itself) from where it is and from the mean of its
    neighbours, then halfway to that mean and the mean itself; then for every edge of a
    crossing face its flip and its collapse (to its midpoint or either end, where the link
    condition keeps the surface manifold); then, for each knot left, the faces around it (one
    ring wider at a time, `REPAIR_KNOT_RINGS`) replaced by a fan around one new vertex on
    `surface`, where their rim is one loop. A change is kept when it lowers the number of
    crossing faces among the faces within `REPAIR_REACH` median edges and makes no face
    degenerate (a collapse may also keep it). Collapses and fans remove a few vertices.
    -> (mesh, number of faces still crossing; the same mesh where none crosses)
    """
    import igl
    from scipy.sparse import csgraph
    from scipy.spatial import cKDTree


    def crossing(faces: np.ndarray, verts: np.ndarray | None = None) -> int:
        # A degenerate face is not judged for crossings: count it as worse than any crossing.
        verts = v if verts is None else verts
        return len(self_intersecting_faces(verts, faces)) + len(faces) * int(
            degenerate_mask(verts, faces).any())

    v = np.array(mesh.vertices, dtype=np.float64)
    f = np.array(mesh.faces, dtype=np.int64)
    vs = np.asarray(surface.vertices, dtype=np.float64)
    fs = np.asarray(surface.faces, dtype=np.int64)
    alive = np.ones(len(f), dtype=bool)
    bad = self_intersecting_faces(v, f)
    if len(bad) == 0:
        return mesh, 0
    e = geo.unique_edges(f)
    reach = REPAIR_REACH * float(np.median(np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)))
    for _ in range(rounds):
        if len(bad) == 0:
            break
        changed = False
        adj = _adjacency(f[alive], len(v))
        tree = cKDTree(v[f].mean(axis=1))

        def near(points: np.ndarray) -> np.ndarray:
            hits = tree.query_ball_point(points, reach)
            idx = np.unique(np.concatenate([np.asarray(h, dtype=np.int64) for h in hits]))
            return idx[alive[idx]]

        # Vertex moves: the crossing faces' corners first, then their neighbours.
        corners = np.unique(f[np.flatnonzero(alive)[bad]])
        ring = np.setdiff1d(np.unique(adj[corners].indices), corners)
        for x in np.r_[corners, ring]:
            nbrs = adj[x].indices
            local = near(np.vstack([v[x], v[nbrs]]))
            count = crossing(f[local])
            if count == 0:
                continue
            mean = v[nbrs].mean(axis=0)
            _, _, closest = igl.point_mesh_squared_distance(np.vstack([v[x], mean]), vs, fs)
            start = v[x].copy()
            best, best_count = start, count
            # Points of the surface first: they keep a flat part (a cap, a cut) flat.
            for cand in (closest[0], closest[1], 0.5 * (start + mean), mean):
                v[x] = cand
                n = crossing(f[local])
                if n < best_count:
                    best, best_count = cand.copy(), n
            v[x] = best
            changed |= best_count < count
        # Edge flips and collapses at the crossing faces that are left.
        bad = self_intersecting_faces(v, f[alive])
        bad = np.flatnonzero(alive)[bad]
        for a, b in sorted({tuple(sorted(p)) for t in f[bad] for p in ((t[0], t[1]),
                                                                       (t[1], t[2]),
                                                                       (t[2], t[0]))}):
            both = np.flatnonzero(alive & (f == a).any(axis=1) & (f == b).any(axis=1))
            if len(both) != 2:
                continue  # an edge an earlier change removed
            f1, f2 = f[both[0]], f[both[1]]
            c = int(np.setdiff1d(f1, [a, b])[0])
            d = int(np.setdiff1d(f2, [a, b])[0])
            local = near(v[[a, b, c, d]])
            count = crossing(f[local])
            if count == 0:
                continue
            old_f, old_v = f.copy(), v.copy()
            trials = []
            if c != d and d not in adj[c].indices:  # else the flip would not be manifold
                # Keep orientation: in f1 the edge runs p -> q; new faces (p, d, c), (q, c, d).
                i = int(np.flatnonzero(f1 == a)[0])
                p, q = (a, b) if f1[(i + 1) % 3] == b else (b, a)
                trials.append(("flip", [[p, d, c], [q, c, d]]))
            if len(np.intersect1d(adj[a].indices, adj[b].indices)) == 2:  # link condition
                for where in (0.5 * (v[a] + v[b]), v[a].copy(), v[b].copy()):
                    trials.append(("collapse", where))
            kept = False
            for kind, what in trials:
                if kind == "flip":
                    f[both] = what
                else:  # b into a, at `where`; its two faces go
                    f[f == b] = a
                    v[a] = what
                    alive[both] = False
                after = local[alive[local]]
                # A collapse may also leave the count as it is: it removes a vertex of a
                # crumpled cluster, and the next change can then untie it (no cycle: each
                # collapse has one vertex fewer to work with).
                n = crossing(f[after])
                if n < count or (kind == "collapse" and n == count):
                    kept = True
                    break
                f[:], v[:] = old_f, old_v
                alive[both] = True
            if kept:
                changed = True
                adj = _adjacency(f[alive], len(v))
        # A knot of a few vertices all joined to each other, where no single change helps:
        # its faces are replaced by a fan around one new vertex (a collapse of the knot).
        bad = np.flatnonzero(alive)[self_intersecting_faces(v, f[alive])]
        _, label = csgraph.connected_components(_adjacency(f[bad], len(v)), directed=False)
        for k in np.unique(label[np.unique(f[bad])]):
            knot = np.flatnonzero(label == k)
            adj = _adjacency(f[alive], len(v))
            for _ in range(REPAIR_KNOT_RINGS + 1):
                fixed = _refill(v, f, alive, knot, vs, fs, near, crossing)
                if fixed is not None:
                    v, f, alive = fixed
                    changed = True
                    break
                knot = np.unique(np.r_[knot, adj[knot].indices])
        bad = self_intersecting_faces(v, f[alive])
        if not changed:
            break
    log.info("%s: %s crossings of the decimated surface by local changes", mesh.name,
             "repaired the" if len(bad) == 0 else f"{len(bad)} faces still cross after repairing")
    return _drop_unused(Mesh(v, f[alive], name=mesh.name)), len(bad)


def _refill(v: np.ndarray, f: np.ndarray, alive: np.ndarray, knot: np.ndarray, vs: np.ndarray,
            fs: np.ndarray, near, crossing):
    """Replace the faces around the vertices `knot` by a fan around one new vertex, where their
    rim is one loop and the fan crosses fewer faces nearby. -> (v, f, alive) or None"""
    import igl

    patch = np.flatnonzero(alive & np.isin(f, knot).any(axis=1))
    pf = f[patch]
    directed = pf[:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2)
    codes = directed[:, 0] * len(v) + directed[:, 1]
    rim = directed[~np.isin(directed[:, 1] * len(v) + directed[:, 0], codes)]
    # The rim must be one simple loop. The patch is then a disk or, where QSlim pinched a
    # tiny handle (Euler characteristic below 1), a disk with handles, which the fan removes.
    if len(rim) < 3 or len(np.unique(rim[:, 0])) != len(rim):
        return None
    after = dict(zip(rim[:, 0].tolist(), rim[:, 1].tolist()))
    if set(after.values()) != set(after):
        return None
    start = int(rim[0, 0])
    seen, node = 1, after[start]
    while node != start:  # `after` is a permutation: this ends
        seen, node = seen + 1, after[node]
    if seen != len(rim):
        return None
    local = near(v[np.unique(pf)])
    local = np.setdiff1d(local, patch)
    count = crossing(f[np.r_[local, patch]])
    knot_pts = v[np.setdiff1d(np.unique(pf), rim[:, 0])]
    _, _, closest = igl.point_mesh_squared_distance(
        np.vstack([v[rim[:, 0]].mean(axis=0), knot_pts.mean(axis=0) if len(knot_pts)
                   else v[rim[:, 0]].mean(axis=0)]), vs, fs)
    new_faces = np.c_[rim, np.full(len(rim), len(v))]
    for centre in (closest[0], closest[1], v[rim[:, 0]].mean(axis=0)):
        v2 = np.vstack([v, centre])
        f2 = np.vstack([f, new_faces])
        keep = np.r_[local, len(f) + np.arange(len(rim))]
        if crossing(f2[keep], v2) < count:
            alive2 = np.r_[alive, np.ones(len(rim), dtype=bool)]
            alive2[patch] = False
            return v2, f2, alive2
    return None


def _adjacency(faces: np.ndarray, n_vertices: int):
    """Vertex adjacency of a triangle mesh as a (V, V) CSR matrix of ones."""
    from scipy import sparse

    e = geo.unique_edges(faces)
    return sparse.coo_matrix((np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]],
                                                    np.r_[e[:, 1], e[:, 0]])),
                             shape=(n_vertices, n_vertices)).tocsr()


def restore_volume(mesh: Mesh, *, volume: float, n_crossing: int | None = None,
                   slack: float = 0.0) -> Mesh:
    """Move every vertex along its normal by the same distance so that the closed surface
    encloses `volume` again (the change is about area x distance; two passes), unless it is
    within `slack` (a share) of it already. Where the move makes more faces cross others than
    `n_crossing` (default: counted here), they are smoothed apart (`untangle`), and where that
    fails too the mesh is returned as it was. Decimation and smoothing shrink a little."""

    v0 = np.array(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    if abs(geo.signed_volume(v0, f) / volume - 1.0) <= slack:
        return mesh
    if n_crossing is None:
        n_crossing = len(self_intersecting_faces(v0, f))
    v = v0
    for _ in range(2):
        gap = volume - geo.signed_volume(v, f)
        v = v + (gap / geo.face_areas(v, f).sum()) * geo.vertex_normals(v, f)
    if len(self_intersecting_faces(v, f)) <= n_crossing:
        return Mesh(v, f, name=mesh.name)
    if n_crossing == 0:
        # The move made faces cross (a pointed apex, a sharp rim): the move, not the surface,
        # is smoothed where they do, which keeps almost all of the volume it restores.
        projected, report = Projector(f, v0)(v)
        if report.valid and abs(geo.signed_volume(projected, f) - volume) < \
                abs(geo.signed_volume(v0, f) - volume):
            return Mesh(projected, f, name=mesh.name)
    # Else the surface is smoothed apart again.
    again, n_left = untangle(Mesh(v, f, name=mesh.name))
    if n_left <= n_crossing and abs(again.volume - volume) < abs(mesh.volume - volume):
        return again
    log.info("%s: volume not restored after decimation: faces would cross", mesh.name)
    return mesh


def _igl_collapse(fn, v: np.ndarray, f: np.ndarray, target_faces: int):
    out = fn(np.asfortranarray(v), np.asfortranarray(f, dtype=np.int32), int(target_faces))
    # libigl returns (V, F, J, I) here; older releases prepended a success flag.
    arrays = [x for x in out if isinstance(x, np.ndarray) and x.ndim == 2]
    return np.asarray(arrays[0], dtype=np.float64), np.asarray(arrays[1], dtype=np.int64)


def _subdivide(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One 1-to-4 midpoint subdivision. (V, 3), (F, 3) -> (V + E, 3), (4F, 3)"""
    import trimesh

    v2, f2 = trimesh.remesh.subdivide(v, f)
    return np.asarray(v2, dtype=np.float64), np.asarray(f2, dtype=np.int64)


def split_long_edges(mesh: Mesh, max_edge: float) -> Mesh:
    """Split every edge longer than `max_edge` (mesh units) at its midpoint, and each face on
    it in two, until none is longer (longest-edge bisection: each round splits the edges that
    are the longest edge of every face they bound, so neighbouring faces always agree and a
    closed manifold stays one). The surface does not move: only vertices are added.
    -> a new Mesh (the same object where no edge is too long)"""
    if not max_edge > 0:
        raise ValueError(f"max_edge must be positive, got {max_edge}")
    v = np.array(mesh.vertices, dtype=np.float64)
    f = np.array(mesh.faces, dtype=np.int64)
    split_any = False
    for _ in range(MAX_SPLIT_ROUNDS):
        corner = f[:, [[0, 1], [1, 2], [2, 0]]]  # (F, 3, 2): edge j runs corner j -> j + 1
        length = np.linalg.norm(v[corner[:, :, 1]] - v[corner[:, :, 0]], axis=2)
        codes, _ = geo.pair_codes(np.sort(corner.reshape(-1, 2), axis=1))
        uniq, edge_id = np.unique(codes, return_inverse=True)
        edge_id = edge_id.reshape(-1, 3)
        longest = np.argmax(length, axis=1)
        rows = np.arange(len(f))
        own = edge_id[rows, longest]
        faces_on = np.bincount(edge_id.ravel(), minlength=len(uniq))
        longest_of = np.bincount(own, minlength=len(uniq))
        split_edge = (longest_of == faces_on) & (np.bincount(
            edge_id.ravel(), weights=length.ravel(), minlength=len(uniq)) > max_edge * faces_on)
        cut = split_edge[own]
        if not cut.any():
            break
        split_any = True
        new_id = np.full(len(uniq), -1, dtype=np.int64)
        chosen = np.flatnonzero(split_edge)
        new_id[chosen] = len(v) + np.arange(len(chosen))
        # Midpoints, one per split edge, from any face that holds it.
        first = np.zeros(len(uniq), dtype=np.int64)
        first[own[cut][::-1]] = np.flatnonzero(cut)[::-1]
        ends = corner[first[chosen], longest[first[chosen]]]
        v = np.concatenate([v, 0.5 * (v[ends[:, 0]] + v[ends[:, 1]])])
        fc, j = f[cut], longest[cut]
        a, b, c = fc[np.arange(len(fc)), j], fc[np.arange(len(fc)), (j + 1) % 3], \
            fc[np.arange(len(fc)), (j + 2) % 3]
        m = new_id[own[cut]]
        f = np.concatenate([f[~cut], np.stack([a, m, c], axis=1), np.stack([m, b, c], axis=1)])
    else:
        log.warning("%s: edges longer than %.3g remain after %d rounds of splitting", mesh.name,
                    max_edge, MAX_SPLIT_ROUNDS)
    return Mesh(v, f, name=mesh.name) if split_any else mesh


def even_out(mesh: Mesh, *, ratio: float = EVEN_EDGE_RATIO) -> Mesh:
    """`split_long_edges` at `ratio` times the mesh's median edge length."""
    e = geo.unique_edges(np.asarray(mesh.faces))
    v = np.asarray(mesh.vertices, dtype=np.float64)
    median = float(np.median(np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)))
    return split_long_edges(mesh, ratio * median)


def decimate_even(mesh: Mesh, *, target_vertices: int) -> Mesh:
    """QSlim to `target_vertices` vertices with flat parts keeping vertices: `decimate`, then
    `even_out`; where the split vertices overshoot the target, the same from a target lowered
    in proportion, and the few vertices still over it removed by shortest-edge collapses."""
    out = even_out(decimate(mesh, target_vertices=target_vertices))
    if len(out.vertices) > target_vertices:
        lower = max(4, round(target_vertices ** 2 / len(out.vertices)))
        second = even_out(decimate(mesh, target_vertices=lower))
        if len(second.vertices) >= target_vertices:
            out = second
    if len(out.vertices) > target_vertices:
        out = decimate(out, target_vertices=target_vertices, method="uniform")
    return out
