"""Benchmark: ground-truth correspondence error on real livers deformed by known smooth warps.

Real surfaces have no known correspondence, so this bench makes some: each of `--bases` real
input meshes (sorted by name, evenly spaced over DATA) is closed (`remesh.close_surface`) and
decimated to a dense base surface of `DENSE_VERTICES` vertices, and each base gets `--copies`
copies, every one deformed by a known warp, posed and remeshed at its own resolution:

1. Warp (in mm, about the base's centroid c): x -> c + S (x + d(x) - c), where
   d(x) = sum_j a_j exp(-|x - c_j|^2 / (2 s_j^2)) is a sum of 3 to 6 Gaussian radial basis
   displacements (`RBF_COUNT`), centres c_j at random base vertices, widths s_j uniform in
   30-60 mm (`RBF_WIDTH_MM`), directions of a_j random, magnitudes normal and rescaled so that
   the RMS of |d| over the vertices is uniform in 4-8 mm (`RBF_RMS_MM`); a draw whose largest
   |d| exceeds 15 mm (`RBF_MAX_MM`) is redrawn (about 40% of draws on livers, mostly the
   larger ones, so the accepted RMS has a median of about 5 mm). S = Q diag(s) Q^T is an
   anisotropic scale along random orthogonal axes Q, each s_i uniform in 0.92-1.08
   (`SCALE_RANGE`). A draw is also redrawn unless the warp is a diffeomorphism near the
   surface (Jacobian determinant of the whole warp above 0.2 at every vertex, `MIN_JACOBIAN`)
   and the warped dense surface is free of self-intersections (`validity.mesh_validity`).
2. Pose: any rotation (uniform) about c, then a translation in a random direction of length
   uniform in 0-100 mm (`MAX_TRANSLATION_MM`).
3. Remesh: `remesh.decimate` (QSlim, which moves the vertices off the dense vertex set) to a
   vertex count uniform in 1,500-4,000 (`COPY_VERTICES`); a copy that crosses itself is
   decimated again to another count. Written as OUT/cohort/bBB_cC.ply.

Ground truth (OUT/truth/bBB_cC.npz): every vertex of a copy is located on its dense warped and
posed surface (closest point: face and barycentric coordinates), which has the base's faces, so
the same face and weights on the base give its base coordinate (`base_points`, (V, 3), with
`base`, the base id). The true correspondent on copy B of a point p on copy A (same base) is
p's face and weights on A's dense surface applied to B's dense surface. The decimated copy
lies a little off its dense surface; that distance is the floor of every error here
(`truth_check.floor_mean_mm`, a copy against itself), and a round trip A -> B -> A must give
p's closest point on A back (`truth_check.round_trip_max_mm`, asserted below 1e-3 mm).

Then, as a user would: `shapeatlas fit OUT/cohort --out OUT/run [--epochs E] [--seed S]
[--atlas-vertices K]` (`runs.fit.fit_run`, which grooms the copies itself) and `shapeatlas
correspond OUT/run OUT/cohort --out OUT/corr` (`runs.correspond.correspond_files`).

Scores, on pairs of consecutive copies of the same base (c0-c1, c1-c2, ..., and the last back
to c0, so every copy is a source once), every base:
- model: atlas vertex k gives P_A[k] on A and P_B[k] on B (each in its file's frame);
  error = |P_B[k] - truth_B(P_A[k])|.
- baseline: A aligned rigidly onto B (`align.align_to_reference`: principal-axes starts, all
  24 signed axis permutations, symmetric ICP), then for every vertex of A its nearest point on
  B's surface; error against the truth of that vertex the same way.
Mean, median and 95th percentile over all points of all pairs (mm), the mean as % of the
mean long axis (the extent of each copy along its first principal axis, averaged), the ratio
model / baseline (the target: at most 0.5), seconds per shape of `correspond` (its summary),
and the share of matched shapes that `mesh_validity` finds valid (closed, manifold, free of
self-intersections).

    python bench/real_warps.py DATA --out OUT [--bases 10] [--copies 4] [--cohort-seed 0]
                               [--epochs E] [--seed S] [--atlas-vertices K] [--overwrite]
    python bench/real_warps.py DATA --out OUT --skip-fit [--transport-iterations N]
                               [--transport-sharpness L] [--transport-relaxation W]
                               [--deformation-smoothing N] [--refine-motion free|normal]
                               [--pose-iterations N] [--surface-cpd N] [--realign]

`--skip-fit` reuses OUT/cohort, OUT/truth and OUT/run and only corresponds and scores again, into
OUT/corr-TAG (TAG names the matching options given); the figures go to `--json` (default
OUT/real_warps[-TAG].json), with the commit and machine under "provenance". The matching options
replace those fields of the run's `config.matching` (`--surface-cpd`: its
`surface_cpd_iterations`), and the result is `correspond_files`' `match`; without them the run
matches with its own.

Time on 2 CPU cores (shared with another job): the cohort about 15 s per base (closing, dense
decimation) plus 5-10 s per copy; `correspond` about 4 s per shape, the baseline about 1.6 s
per pair. The fit dominates: 9.5 minutes for 2 bases x 3 copies at `--epochs 2`; the default
(10 x 4 copies, 25 epochs) takes hours (`fit_seconds` in the output).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import write_json
from scipy.spatial.transform import Rotation

from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.align import align_to_reference, principal_frame, similarity_fit
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.groom import find_mesh_files
from shapeatlas.mesh.io import read_mesh, write_mesh
from shapeatlas.mesh.remesh import close_surface, decimate
from shapeatlas.mesh.validity import mesh_validity
from shapeatlas.metrics.correspondence import barycentric_in_triangles
from shapeatlas.metrics.ground_truth import consecutive_pairs
from shapeatlas.metrics.surface import closest_points_on_surface
from shapeatlas.runs.correspond import correspond_files
from shapeatlas.runs.fit import fit_run
from shapeatlas.runs.folder import run_is_complete
from shapeatlas.training.config import FitConfig, MatchConfig

log = logging.getLogger("real_warps")

#: Vertices of each dense base surface (copies are decimated from its warped versions).
DENSE_VERTICES = 7000
#: Gaussian radial basis displacements per warp (inclusive range), their widths (mm), the RMS
#: of their sum over the vertices (mm) and its largest allowed value (mm).
RBF_COUNT = (3, 6)
RBF_WIDTH_MM = (30.0, 60.0)
RBF_RMS_MM = (4.0, 8.0)
RBF_MAX_MM = 15.0
#: Per-axis factors of the anisotropic scale.
SCALE_RANGE = (0.92, 1.08)
#: Smallest Jacobian determinant of the warp allowed at a vertex.
MIN_JACOBIAN = 0.2
#: Draws of a warp before a base is given up.
MAX_DRAWS = 200
#: Largest translation of the random pose (mm).
MAX_TRANSLATION_MM = 100.0
#: Vertex counts of the copies (inclusive range), and decimations tried per copy.
COPY_VERTICES = (1500, 4000)
DECIMATION_TRIES = 5
#: The largest round-trip error A -> B -> A the truth may have (mm).
ROUND_TRIP_TOLERANCE_MM = 1e-3
#: Matching options (argparse dest -> short tag in OUT/corr-TAG), in the tag's order; each
#: replaces one field of the run's `config.matching` (`MATCHING_FIELDS`) for `correspond_files`.
MATCHING_OPTIONS = {"transport_iterations": "t", "transport_sharpness": "l",
                    "transport_relaxation": "w", "deformation_smoothing": "d",
                    "refine_motion": "", "pose_iterations": "p", "surface_cpd": "c"}
#: The `MatchConfig` field of each matching option whose dest is not the field's name.
MATCHING_FIELDS = {"surface_cpd": "surface_cpd_iterations"}


@dataclass(frozen=True)
class Truth:
    """One copy's ground truth: its base id, its dense warped and posed surface (the base's
    faces) and where each of its vertices lies on it (face, barycentric coordinates)."""

    base: int
    dense: np.ndarray
    faces: np.ndarray
    face: np.ndarray
    bary: np.ndarray


# ----------------------------------------------------------------------------- the truth
def locate(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Closest point of each point on the surface: (face (K,), barycentric (K, 3))."""
    cp = closest_points_on_surface(points, vertices, faces)
    return cp.face_index, barycentric_in_triangles(cp.points, vertices[faces[cp.face_index]])


def transfer(face: np.ndarray, bary: np.ndarray, vertices: np.ndarray,
             faces: np.ndarray) -> np.ndarray:
    """The points at those faces and weights of a surface with the same faces. -> (K, 3)"""
    return np.einsum("ki,kij->kj", bary, vertices[faces[face]])


def true_points(points_a: np.ndarray, a: Truth, b: Truth) -> np.ndarray:
    """True correspondents on copy B of points on copy A (same base), in B's file frame."""
    return transfer(*locate(points_a, a.dense, a.faces), b.dense, b.faces)


def load_truth(truth_dir: Path) -> dict[str, Truth]:
    """NAME -> Truth for every copy in OUT/truth."""
    faces = {}
    out = {}
    for path in sorted(truth_dir.glob("b*_c*.npz")):
        d = np.load(path)
        base = int(d["base"])
        if base not in faces:
            faces[base] = np.load(truth_dir / f"b{base:02d}.npz")["faces"]
        out[path.stem] = Truth(base=base, dense=d["dense_vertices"], faces=faces[base],
                               face=d["face"], bary=d["barycentric"])
    return out


# ----------------------------------------------------------------------------- the cohort
def dense_base(path: Path) -> Mesh:
    """A closed, self-intersection-free dense surface of the input; MeshError otherwise."""
    closed = close_surface(read_mesh(path)).mesh
    mesh = decimate(closed, target_vertices=DENSE_VERTICES)
    problems = mesh_validity(mesh.vertices, mesh.faces).problems
    if problems:
        raise ShapeAtlasError(f"{path.name}: dense base not valid: {'; '.join(problems)}")
    return mesh


def candidate_bases(files: list[Path], n: int):
    """Dense bases from files evenly spaced over the sorted list, then from the others in
    order; a file that gives no valid base is skipped. Yields (path, dense base)."""
    if n > len(files):
        raise SystemExit(f"--bases {n}: only {len(files)} mesh files")
    wanted = [int(i) for i in np.linspace(0, len(files), n, endpoint=False).astype(int)]
    for j in wanted + [k for k in range(len(files)) if k not in wanted]:
        try:
            yield files[j], dense_base(files[j])
        except ShapeAtlasError as exc:
            log.warning("skipped as a base: %s", exc)


def rbf_field(x: np.ndarray, centres: np.ndarray, widths: np.ndarray, amps: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Displacement d(x) (V, 3) and its Jacobian (V, 3, 3) of a sum of Gaussian bumps."""
    diff = x[:, None, :] - centres[None]  # (V, J, 3)
    phi = np.exp(-(diff**2).sum(axis=2) / (2 * widths**2))  # (V, J)
    grad = -(phi / widths**2)[:, :, None] * diff  # (V, J, 3): gradient of each bump
    return phi @ amps, np.einsum("ja,vjb->vab", amps, grad)


def draw_warp(rng: np.random.Generator, x: np.ndarray) -> tuple[np.ndarray, dict] | None:
    """One random warp of the vertices `x` (step 1 of the docstring), or None when the draw
    breaks a limit on the displacement or the Jacobian. -> (warped (V, 3), magnitudes)"""
    n = rng.integers(RBF_COUNT[0], RBF_COUNT[1] + 1)
    centres = x[rng.choice(len(x), n, replace=False)]
    widths = rng.uniform(*RBF_WIDTH_MM, n)
    amps = rng.normal(size=(n, 3))
    d, jac = rbf_field(x, centres, widths, amps)
    k = rng.uniform(*RBF_RMS_MM) / np.sqrt((d**2).sum(axis=1).mean())
    d, jac = d * k, jac * k
    q = Rotation.random(random_state=rng).as_matrix()
    s = q @ np.diag(rng.uniform(*SCALE_RANGE, 3)) @ q.T
    det = np.linalg.det(s) * np.linalg.det(np.eye(3) + jac)
    mag = np.linalg.norm(d, axis=1)
    if mag.max() > RBF_MAX_MM or det.min() <= MIN_JACOBIAN:
        return None
    c = x.mean(axis=0)
    warped = c + (x + d - c) @ s.T
    return warped, {"rbf_rms_mm": float(np.sqrt((mag**2).mean())),
                    "rbf_max_mm": float(mag.max()), "min_jacobian": float(det.min()),
                    **nonrigid_magnitude(x, warped)}


def nonrigid_magnitude(x: np.ndarray, y: np.ndarray) -> dict:
    """RMS and largest displacement x -> y, as is and after the best rigid fit of y onto x
    (what rigid alignment cannot take away)."""
    m, _ = similarity_fit(y, x, scale=False)
    left = np.linalg.norm(y @ m[:3, :3].T + m[:3, 3] - x, axis=1)
    total = np.linalg.norm(y - x, axis=1)
    return {"total_rms_mm": float(np.sqrt((total**2).mean())), "total_max_mm": float(total.max()),
            "nonrigid_rms_mm": float(np.sqrt((left**2).mean())),
            "nonrigid_max_mm": float(left.max())}


def valid_warp(rng: np.random.Generator, base: Mesh) -> tuple[np.ndarray, dict]:
    """Redraw `draw_warp` until it passes its limits and leaves the surface uncrossed."""
    x = np.asarray(base.vertices, dtype=np.float64)
    for draw in range(1, MAX_DRAWS + 1):
        got = draw_warp(rng, x)
        if got is not None and not mesh_validity(got[0], base.faces).n_self_intersecting:
            return got[0], {**got[1], "draws": draw}
    raise ShapeAtlasError(f"{base.name}: no valid warp in {MAX_DRAWS} draws")


def random_pose(rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    """(4, 4): any rotation about `centre`, then a translation of up to MAX_TRANSLATION_MM."""
    r = Rotation.random(random_state=rng).as_matrix()
    t = rng.normal(size=3)
    t *= rng.uniform(0, MAX_TRANSLATION_MM) / np.linalg.norm(t)
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = r, centre - r @ centre + t
    return m


def remesh_copy(rng: np.random.Generator, dense: Mesh) -> Mesh:
    """`dense` decimated to a random vertex count, redrawn while it crosses itself."""
    for _ in range(DECIMATION_TRIES):
        mesh = decimate(dense, target_vertices=int(rng.integers(COPY_VERTICES[0],
                                                                COPY_VERTICES[1] + 1)))
        if mesh_validity(mesh.vertices, mesh.faces).valid:
            return mesh
    raise ShapeAtlasError(f"{dense.name}: every decimation crossed itself")


def make_copy(rng: np.random.Generator, base: Mesh, name: str, truth_dir: Path,
              base_id: int) -> tuple[Mesh, dict]:
    """Warp, pose and remesh one copy of `base`; write its truth. -> (copy, its magnitudes)"""
    warped, info = valid_warp(rng, base)
    pose = random_pose(rng, np.asarray(base.vertices).mean(axis=0))
    faces = np.asarray(base.faces)
    dense = warped @ pose[:3, :3].T + pose[:3, 3]
    mesh = remesh_copy(rng, Mesh(dense, faces, name=name))
    face, bary = locate(np.asarray(mesh.vertices), dense, faces)
    np.savez_compressed(truth_dir / f"{name}.npz", base=np.int64(base_id),
                        base_points=transfer(face, bary, np.asarray(base.vertices), faces),
                        face=face, barycentric=bary, dense_vertices=dense, pose=pose)
    return mesh, {"name": name, "vertices": mesh.n_vertices, **info}


def build_cohort(data: Path, out: Path, n_bases: int, n_copies: int, seed: int) -> dict:
    """OUT/cohort (the copies) and OUT/truth (bases and truths). -> a summary"""
    cohort, truth_dir = out / "cohort", out / "truth"
    cohort.mkdir(parents=True)
    truth_dir.mkdir()
    rng = np.random.default_rng(seed)
    bases, copies = [], []
    for path, base in candidate_bases(find_mesh_files(data), n_bases):
        b = len(bases)
        try:
            made = [make_copy(rng, base, f"b{b:02d}_c{c}", truth_dir, b) for c in range(n_copies)]
        except ShapeAtlasError as exc:
            log.warning("skipped as a base: %s: %s", path.name, exc)
            for stale in truth_dir.glob(f"b{b:02d}_c*.npz"):
                stale.unlink()
            continue
        np.savez_compressed(truth_dir / f"b{b:02d}.npz", vertices=np.asarray(base.vertices),
                            faces=np.asarray(base.faces), source=path.name)
        bases.append({"base": b, "source": path.name, "dense_vertices": base.n_vertices})
        for mesh, info in made:
            write_mesh(mesh, cohort / f"{info['name']}.ply")
            copies.append(info)
            log.info("%s: %d vertices, RBF RMS %.1f mm (max %.1f), non-rigid RMS %.1f mm",
                     info["name"], info["vertices"], info["rbf_rms_mm"], info["rbf_max_mm"],
                     info["nonrigid_rms_mm"])
        if len(bases) == n_bases:
            break
    if len(bases) < n_bases:
        raise SystemExit(f"only {len(bases)} files gave bases with valid warped copies")
    return {"bases": bases, "copies": copies}


# ----------------------------------------------------------------------------- scoring
def stats(errors: np.ndarray, long_axis: float) -> dict:
    """Mean, median, 95th percentile (mm) and the mean in % of the long axis."""
    return {"mean_mm": float(errors.mean()), "median_mm": float(np.median(errors)),
            "p95_mm": float(np.percentile(errors, 95)),
            "mean_pct_long_axis": float(100 * errors.mean() / long_axis)}


def copy_pairs(names: list[str], truth: dict[str, Truth]) -> list[tuple[str, str]]:
    """Consecutive pairs (wrapping) of the copies of each base."""
    bases = sorted({truth[n].base for n in names})
    return [p for b in bases for p in consecutive_pairs([n for n in names if truth[n].base == b])]


def model_errors(corr: Path, pairs: list, truth: dict[str, Truth]) -> list[np.ndarray]:
    """Per pair, the atlas points' distances to their true correspondents (K,)."""
    pts = {n: np.load(corr / f"{n}.npz")["points"] for n in {x for p in pairs for x in p}}
    return [np.linalg.norm(pts[b] - true_points(pts[a], truth[a], truth[b]), axis=1)
            for a, b in pairs]


def baseline_errors(meshes: dict[str, Mesh], pairs: list, truth: dict[str, Truth]
                    ) -> list[np.ndarray]:
    """Per pair, rigid ICP of A onto B then nearest point on B, against the truth (V_A,)."""
    out = []
    for a, b in pairs:
        m = align_to_reference(meshes[a], meshes[b], scale=False).matrix
        moved = np.asarray(meshes[a].vertices) @ m[:3, :3].T + m[:3, 3]
        near = closest_points_on_surface(moved, meshes[b]).points
        ta, tb = truth[a], truth[b]
        out.append(np.linalg.norm(near - transfer(ta.face, ta.bary, tb.dense, tb.faces), axis=1))
    return out


def truth_check(meshes: dict[str, Mesh], pairs: list, truth: dict[str, Truth]) -> dict:
    """A copy against itself (the floor: its distance to its dense surface) and the round trip
    A -> B -> A of A's vertices on the first pair of each base (must return their closest
    points on A's dense surface)."""
    floor = np.concatenate([np.linalg.norm(np.asarray(m.vertices) - true_points(
        np.asarray(m.vertices), truth[n], truth[n]), axis=1) for n, m in meshes.items()])
    trip, seen = [], set()
    for a, b in pairs:
        if truth[a].base in seen:
            continue
        seen.add(truth[a].base)
        x = np.asarray(meshes[a].vertices)
        back = true_points(true_points(x, truth[a], truth[b]), truth[b], truth[a])
        trip.append(float(np.abs(back - true_points(x, truth[a], truth[a])).max()))
    worst = max(trip)
    assert worst < ROUND_TRIP_TOLERANCE_MM, f"the truth's round trip is off by {worst:.3g} mm"
    return {"floor_mean_mm": float(floor.mean()), "floor_max_mm": float(floor.max()),
            "round_trip_max_mm": worst}


def long_axis(meshes: dict[str, Mesh]) -> float:
    """Mean extent of the copies along their first principal axis (mm)."""
    return float(np.mean([np.ptp(np.asarray(m.vertices) @ principal_frame(m)[1][:, 0])
                          for m in meshes.values()]))


# ----------------------------------------------------------------------------- the run
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, help="folder of real surface meshes (mm)")
    p.add_argument("--out", type=Path, required=True,
                   help="working folder: cohort/, truth/, run/, corr[-TAG]/ and the figures")
    p.add_argument("--bases", type=int, default=10, help="real meshes used as bases")
    p.add_argument("--copies", type=int, default=4, help="warped copies of each base")
    p.add_argument("--cohort-seed", type=int, default=0, help="seed of the warps and poses")
    p.add_argument("--epochs", type=int, default=None, help="fit: epochs per atlas round")
    p.add_argument("--seed", type=int, default=None, help="fit: random seed")
    p.add_argument("--atlas-vertices", type=int, default=None, help="fit: atlas vertex count")
    p.add_argument("--skip-fit", action="store_true",
                   help="reuse OUT/cohort, OUT/truth and OUT/run: correspond and score only")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the cohort, the run and the correspondence folder if present")
    p.add_argument("--transport-iterations", type=int, default=None)
    p.add_argument("--transport-sharpness", type=float, default=None)
    p.add_argument("--transport-relaxation", type=float, default=None)
    p.add_argument("--deformation-smoothing", type=int, default=None)
    p.add_argument("--refine-motion", default=None, choices=["free", "normal"])
    p.add_argument("--pose-iterations", type=int, default=None)
    p.add_argument("--surface-cpd", type=int, default=None)
    p.add_argument("--realign", action="store_true",
                   help="correspond: align every copy to the atlas from scratch")
    p.add_argument("--json", type=Path, default=None,
                   help="where to write the figures (default OUT/real_warps[-TAG].json)")
    return p


def matching_tag(args: argparse.Namespace) -> str:
    """A short name of the matching options given ('' for none)."""
    parts = [f"{short}{getattr(args, k)}" for k, short in MATCHING_OPTIONS.items()
             if getattr(args, k) is not None]
    return "-".join(parts + (["realign"] if args.realign else []))


def match_config(args: argparse.Namespace, run_config: FitConfig) -> MatchConfig | None:
    """The matching options given, over the run's `config.matching` (None when none is given:
    the run matches with its own)."""
    changes = {MATCHING_FIELDS.get(k, k): getattr(args, k) for k in MATCHING_OPTIONS
               if getattr(args, k) is not None}
    return run_config.matching.replace(**changes) if changes else None


def prepare(args: argparse.Namespace) -> tuple[dict, float | None]:
    """Build the cohort and fit, or check that both are there (`--skip-fit`).
    -> (cohort summary, fit seconds)"""
    out = args.out
    if args.skip_fit:
        if not run_is_complete(out / "run") or not (out / "truth").is_dir():
            raise SystemExit(f"--skip-fit needs OUT/cohort, OUT/truth and a finished OUT/run "
                             f"in {out}")
        return json.loads((out / "cohort.json").read_text()), None
    for sub in ("cohort", "truth"):
        if (out / sub).exists():
            if not args.overwrite:
                raise SystemExit(f"{out / sub} exists: use --overwrite or --skip-fit")
            shutil.rmtree(out / sub)
    t0 = time.perf_counter()
    summary = build_cohort(args.data, out, args.bases, args.copies, args.cohort_seed)
    summary["seconds"] = time.perf_counter() - t0
    (out / "cohort.json").write_text(json.dumps(summary, indent=1) + "\n")
    cfg = FitConfig().replace(seed=args.seed, training={"epochs": args.epochs},
                              model={"atlas_vertices": args.atlas_vertices})
    t0 = time.perf_counter()
    fit_run(out / "cohort", out / "run", cfg, overwrite=args.overwrite)
    return summary, time.perf_counter() - t0


def magnitudes(copies: list[dict]) -> dict:
    """Mean and largest of each warp magnitude over the copies."""
    keys = [k for k in copies[0] if k.endswith("_mm")]
    return {k: {"mean": float(np.mean([c[k] for c in copies])),
                "max": float(np.max([c[k] for c in copies]))} for k in keys}


def run(args: argparse.Namespace) -> dict:
    """Cohort and fit (or `--skip-fit`), correspond, score, write the figures. -> them"""
    cohort_summary, fit_s = prepare(args)
    tag = matching_tag(args)
    corr = args.out / ("corr" + (f"-{tag}" if tag else ""))
    run_cfg = FitConfig.from_json(args.out / "run" / "config.json")
    done, failed = correspond_files(
        args.out / "run", [args.out / "cohort"], corr, realign=args.realign,
        overwrite=args.overwrite, match=match_config(args, run_cfg))
    truth = load_truth(args.out / "truth")
    names = sorted(d["name"] for d in done)
    meshes = {n: read_mesh(args.out / "cohort" / f"{n}.ply") for n in names}
    pairs = copy_pairs(names, truth)
    axis = long_axis(meshes)
    model = np.concatenate(model_errors(corr, pairs, truth))
    t0 = time.perf_counter()
    base = np.concatenate(baseline_errors(meshes, pairs, truth))
    base_s = (time.perf_counter() - t0) / len(pairs)
    result = {
        "bases": len(cohort_summary["bases"]), "copies": len(cohort_summary["copies"]),
        "pairs": len(pairs), "matching_tag": tag or None,
        "model": stats(model, axis), "baseline": stats(base, axis),
        "ratio": float(model.mean() / base.mean()),
        "meets_target_ratio_0_5": bool(model.mean() <= 0.5 * base.mean()),
        "mean_long_axis_mm": axis, "long_axis": "extent along the first principal axis",
        "correspond_s_per_shape": float(np.mean([d["seconds"] for d in done])),
        "valid_share": float(np.mean([d["valid"] for d in done])),
        "correspond_failed": failed, "baseline_s_per_pair": base_s,
        "truth_check": truth_check(meshes, pairs, truth),
        "warp": magnitudes(cohort_summary["copies"]),
        "cohort_seconds": cohort_summary.get("seconds"), "fit_seconds": fit_s,
        "fit_config": {"epochs": run_cfg.training.epochs, "seed": run_cfg.seed,
                       "atlas_vertices": run_cfg.model.atlas_vertices},
        "cohort": cohort_summary,
    }
    write_json(args.json or args.out / f"real_warps{'-' + tag if tag else ''}.json", result)
    return result


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    r = run(parser().parse_args())
    m, b = r["model"], r["baseline"]
    print(f"{r['copies']} copies of {r['bases']} bases, {r['pairs']} pairs; long axis "
          f"{r['mean_long_axis_mm']:.0f} mm")
    print(f"model    {m['mean_mm']:.2f} mm mean ({m['mean_pct_long_axis']:.2f}%), median "
          f"{m['median_mm']:.2f}, p95 {m['p95_mm']:.2f}")
    print(f"baseline {b['mean_mm']:.2f} mm mean ({b['mean_pct_long_axis']:.2f}%), median "
          f"{b['median_mm']:.2f}, p95 {b['p95_mm']:.2f}")
    print(f"ratio {r['ratio']:.3f} (target <= 0.5: {r['meets_target_ratio_0_5']}); correspond "
          f"{r['correspond_s_per_shape']:.2f} s/shape, valid {100 * r['valid_share']:.0f}%; "
          f"truth floor {r['truth_check']['floor_mean_mm']:.3f} mm")


if __name__ == "__main__":
    main()
