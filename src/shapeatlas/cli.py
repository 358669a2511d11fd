"""The `shapeatlas` command line: parses, builds options, calls one library function per verb.

Bad arguments exit with code 2 and a one-line reason; a problem with the data exits with 1 and a
one-line message naming the file; progress bars are drawn here and nowhere else.

Every verb takes the common options `-q/--quiet` and `-v/--verbose`, before or after the verb
(one parent parser, `_common_options`): -q draws no progress bars and logs warnings only; by
default the bars are drawn and the library's `logging` is shown at INFO; -v shows it at DEBUG.
The library reports progress through callbacks and `logging` and never prints; the bars and
the log lines are both written to stderr here, the log lines above the bars.

Each verb imports its library module when it runs, the one place in the package with imports
inside functions: the library pulls in torch and PyTorch Geometric (several seconds), which
`shapeatlas --help`, `info` and a mistyped option should not wait for.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from shapeatlas import __version__
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.outputs import recorded_command

log = logging.getLogger("shapeatlas")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus exit code 2), not the whole usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _Progress:
    """Adapter from the library's `(stage, increment, total)` callbacks to tqdm bars, one bar
    per stage (a stage seen again after its bar filled starts a new one)."""

    def __init__(self, enabled: bool = True, unit: str = "shape"):
        self.enabled = enabled
        self.unit = unit
        self.bars: dict[str, object] = {}

    def __call__(self, stage: str, increment: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None or bar.n >= bar.total:
            bar = self.bars[stage] = tqdm(total=total, desc=f"{stage:>8}", unit=self.unit,
                                          leave=True, file=sys.stderr)
        bar.update(increment)
        if bar.n >= total:
            bar.close()

    def count(self, stage: str, total: int):
        """A `(increment)` callback (the per-file verbs' form) for one stage of `total`."""
        return lambda increment: self(stage, increment, total)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


class _FitProgress:
    """Adapter from a fit's per-step dicts (`shapeatlas.runs.fit.fit_run`'s `progress`) to one
    tqdm bar at a time: "preparing" over the training shapes, "round r/R, epoch e/E" over the
    correspondence network's steps, "matching" over the training shapes, "β-VAE" over its
    epochs (per atlas for several), "CPD round r/R" over the baseline's registrations."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None
        self.desc = None

    def __call__(self, info: dict) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        stage = info.get("stage", "correspondence")
        if stage == "generator":
            desc = "β-VAE" + (f" of atlas {info['atlas']}/{info['atlases']}"
                              if "atlas" in info else "")
            done, total, unit = info["epoch"], info["epochs"], "epoch"
        elif stage == "registration":
            desc = f"CPD round {info['round']}/{info['rounds']}"
            done, total, unit = info["step"], info["steps"], "shape"
        elif stage == "matching":
            desc = "matching the training shapes"
            done, total, unit = info["step"], info["steps"], "shape"
        elif stage == "preparing":
            desc = "preparing the training shapes"
            done, total, unit = info["step"], info["steps"], "shape"
        else:
            desc = (f"round {info['round']}/{info['rounds']}, "
                    f"epoch {info['epoch']}/{info['epochs']}")
            done, total, unit = info["step"], info["steps"], "step"
        if self.bar is None or desc != self.desc or done < self.bar.n:
            self.close()
            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)
            self.desc = desc
        self.bar.update(done - self.bar.n)
        if "loss" in info:
            self.bar.set_postfix(loss=f"{info['loss']:.4f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = self.desc = None


class _LogHandler(logging.Handler):
    """The library's log records on stderr, written above any progress bar (tqdm.write clears
    the bars and draws them again below the line)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 (logging's own contract: report, never raise)
            self.handleError(record)


def _configure_logging(args: argparse.Namespace):
    """Show the library's logging as -q/-v ask (warnings / INFO / DEBUG); -> a function that
    puts the `shapeatlas` logger back as it was (main runs more than once in one process)."""
    logger = logging.getLogger("shapeatlas")
    before = logger.level
    level = (logging.WARNING if args.quiet else logging.DEBUG if args.verbose
             else logging.INFO)
    handler = _LogHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s" if args.verbose
                                           else "shapeatlas: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(before)

    return restore


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _label_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected label values separated by commas, such as "
                                         f"1,2,3; got {text!r}") from None
    if any(v == 0 for v in values):
        raise argparse.ArgumentTypeError("label 0 is the background; name the organ's labels")
    return tuple(sorted(set(values)))


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {value}")
    return value


def _atlases(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}"
                                         ) from None


# ----------------------------------------------------------------------------------- verbs
def cmd_info(args: argparse.Namespace) -> int:
    from shapeatlas.mesh.checks import summary
    from shapeatlas.mesh.io import read_mesh
    from shapeatlas.mesh.labelmap import is_label_map_file

    failures = 0
    results = []
    for path in args.meshes:
        if is_label_map_file(path):
            row = _label_map_info(path, args)
            results.append(row)
            failures += row.get("error") is not None or row.get("problem") is not None or any(
                not s["ok"] for s in row.get("surfaces") or [])
            continue
        try:
            mesh = read_mesh(path)
        except ShapeAtlasError as exc:
            failures += 1
            results.append({"name": str(path), "error": exc.problem if hasattr(exc, "problem") else str(exc)})
            if not args.json:
                print(f"{path}: ERROR: {results[-1]['error']}")
            continue
        s = summary(mesh)
        results.append(s)
        failures += s["unusable"] is not None
        if args.json:
            continue
        vol = f"{s['volume_ml']:.2f} mL" if s["volume_ml"] is not None else "undefined (open)"
        lo = ", ".join(f"{x:.1f}" for x in s["bounds_min"])
        hi = ", ".join(f"{x:.1f}" for x in s["bounds_max"])
        print(f"{path}:")
        print(f"  vertices {s['n_vertices']}, faces {s['n_faces']}, components {s['n_components']}, "
              f"Euler characteristic {s['euler_characteristic']}")
        print(f"  watertight {'yes' if s['watertight'] else 'no'}, volume {vol}, "
              f"area {s['area_mm2']:.1f} mm^2")
        print(f"  bounds [{lo}] .. [{hi}]")
        print("  problems: " + ("none" if not s["problems"] else ""))
        for p in s["problems"]:
            print(f"    - {p}")
        val = s["validity"]
        print("  mesh check: " + ("valid (closed, manifold, outward, no self-intersections, no "
                                  "degenerate faces)" if val["valid"] else
                                  f"NOT valid ({len(val['problems'])} of the problems above)"))
        if s["unusable"]:
            print(f"  UNUSABLE for shape modelling: {s['unusable']}")
    if args.json:
        print(json.dumps(results, indent=1))
    return 1 if failures else 0


def _label_map_info(path: str, args: argparse.Namespace) -> dict:
    """`info` of one label map: describe it (and with --surface make and check its shapes as
    groom would); printed here unless --json. -> the JSON row"""
    from shapeatlas.mesh.groom import GroomOptions, prepare_shapes
    from shapeatlas.mesh.segmentation import describe_label_map

    try:
        d = describe_label_map(path, labels=args.labels, min_fraction=args.min_component)
    except ShapeAtlasError as exc:
        row = {"name": str(path), "kind": "label map",
               "error": getattr(exc, "problem", str(exc))}
        if not args.json:
            print(f"{path}: ERROR: {row['error']}")
        return row
    d["error"] = None
    d["surfaces"] = None
    if args.surface and d["problem"] is None:
        opts = GroomOptions(labels=args.labels, components="each",
                            min_component_fraction=args.min_component,
                            target_vertices=args.target_vertices, align="none",
                            cap_twist=False, keep_failed=True)
        try:
            shapes = prepare_shapes(path, opts)
        except ShapeAtlasError as exc:
            shapes = [{"ok": False, "suffix": "", "error": str(exc)}]
        d["surfaces"] = [
            {"name": c["name"], "ok": s["ok"] and s["volume_check"]["verdict"] == "ok",
             "n_vertices": len(s["vertices"]) if "vertices" in s else None,
             "volume_check": s.get("volume_check"), "validity": s.get("validity"),
             "error": s.get("error")}
            for c, s in zip(d["components"], shapes)]
    if args.json:
        return d
    size = " x ".join(map(str, d["shape"]))
    spacing = " x ".join(f"{x:.2f}" for x in d["spacing_mm"])
    where = (f"orientation {d['orientation']} (RAS+ world, mid-sagittal plane at x = "
             f"{d['midline_x_mm']:.1f} mm)" if d["oriented"] else
             "orientation unknown (no qform/sform code or anatomical space: left and right "
             "cannot be told)")
    print(f"{path}: label map {size} voxels of {spacing} mm, {where}")
    print("  labels: " + ", ".join(f"{r['label']} ({r['voxels']:,} voxels, {r['volume_ml']:.2f} "
                                   "mL)" for r in d["labels"]))
    if d["problem"] is not None:
        print(f"  ERROR: {d['problem']}")
        return d
    chosen = ", ".join(map(str, d["chosen_labels"]))
    print(f"  components of label{'s' if len(d['chosen_labels']) > 1 else ''} {chosen} "
          f"(26-connected): {len(d['components'])} of {d['n_components']} at or above "
          f"{d['min_fraction']:g} of the largest, named {d['naming']}")
    for c in d["components"]:
        side = f"patient's {c['side']}" if c["side"] else "side unknown"
        print(f"    {c['name']}: {c['volume_ml']:.2f} mL ({c['voxels']:,} voxels), {side}, "
              f"centroid x {c['centroid_mm'][0]:.1f} mm")
    if d["dropped_components"]:
        print(f"    {d['dropped_components']} smaller component"
              f"{'s' if d['dropped_components'] > 1 else ''} left out "
              f"({d['dropped_volume_ml']:.3g} mL in all)")
    if d["surfaces"] is None:
        print("  surfaces: not made (--surface makes and checks them as groom would)")
        return d
    for s in d["surfaces"]:
        if s["n_vertices"] is None:
            print(f"  surface {s['name']}: ERROR: {s['error']}")
            continue
        vc, val = s["volume_check"], s["validity"]
        verdict = "valid" if val["valid"] else "NOT valid: " + "; ".join(val["problems"])
        print(f"  surface {s['name']}: {s['n_vertices']:,} vertices, volume "
              f"{-vc['volume_loss_percent']:+.2f}% against the voxels, mesh check {verdict}"
              + ("" if s["ok"] else f"; groom leaves it out: {vc['problem']}"))
    return d


def _groom_options(args: argparse.Namespace):
    from shapeatlas.mesh.groom import GroomOptions

    return GroomOptions(
        clean=not args.no_clean,
        watertight=args.watertight,
        grid_resolution=args.resolution,
        target_vertices=args.target_vertices,
        decimation=args.decimation,
        center=not args.no_center,
        align=args.align,
        reference=args.reference,
        consensus_rounds=args.consensus_rounds,
        cap_twist=not args.no_cap_twist,
        input_units=args.input_units,
        keep_outliers=args.keep_outliers,
        keep_failed=args.keep_failed,
        n_jobs=args.jobs,
        labels=args.labels,
        components=args.components,
        min_component_fraction=args.min_component,
        mirror=args.mirror,
    )


def cmd_groom(args: argparse.Namespace) -> int:
    from shapeatlas.mesh.groom import groom_cohort

    src = Path(args.input)
    if not src.is_dir():
        _usage_error(args, f"input folder {src} does not exist or is not a folder")
    progress = _Progress(enabled=not args.quiet)
    t0 = time.perf_counter()
    try:
        result = groom_cohort(src, args.out, _groom_options(args), progress=progress,
                              overwrite=args.overwrite, cache=_cache_setting(args))
    finally:
        progress.close()
    dt = time.perf_counter() - t0
    m = result.manifest
    n_maps = m.get("n_label_maps", 0)
    what = (f"{len(result.shapes)} shapes from {m['n_inputs']} files ({n_maps} label maps)"
            if n_maps else f"{len(result.shapes)} of {m['n_inputs']} meshes")
    print(f"groomed {what} in {dt:.1f} s -> {result.out_dir} (manifest: "
          f"{result.out_dir / 'groom.json'})")
    print(f"reference shape: {m['reference']}")
    print(f"cap twist: {m['cap_twist']}")
    from_maps = [s for s in result.shapes if "label_map" in s]
    if from_maps:
        sides = [s["label_map"]["side"] for s in from_maps]
        errors = [abs(s["volume_check"]["volume_loss_percent"]) for s in from_maps]
        print(f"from label maps: {len(from_maps)} shapes ({sides.count('left')} left, "
              f"{sides.count('right')} right, {sides.count(None)} side unknown; "
              f"{sum(s['mirrored'] for s in from_maps)} mirrored); surface volume within "
              f"{max(errors):.2f}% of the labelled voxels' (mean {sum(errors) / len(errors):.2f}%)")
    for note in m.get("notes", []):
        print(f"note: {note}")
    for f in result.failed:
        print(f"skipped: {f['error']}")
    return 0 if not result.failed else 1


def _synth_arguments(p: argparse.ArgumentParser) -> None:
    """The options every `synth KIND` verb takes."""
    _count_argument(p, default=50, what="shapes")
    p.add_argument("--out", required=True, metavar="DIR", help=_OUT_HELP)
    _overwrite_argument(p)
    _seed_argument(p)
    p.add_argument("--min-vertices", type=_positive_int, default=1000, metavar="N",
                   help="fewest vertices of a shape (each shape draws its count between "
                   "--min-vertices and --max-vertices; default 1000)")
    p.add_argument("--max-vertices", type=_positive_int, default=4000, metavar="N",
                   help="most vertices of a shape (default 4000)")


def cmd_synth(args: argparse.Namespace) -> int:
    """`synth lv` and `synth kidney` (args.organ): the same checks, progress and summary."""
    if args.organ == "lv":
        from shapeatlas.data.synthetic_lv import MIN_VERTICES
        from shapeatlas.data.synthetic_lv import write_lv_cohort as write
        extra, label = {"phenotypes": args.phenotypes}, "LV"
    else:
        from shapeatlas.data.synthetic_kidney import MIN_VERTICES
        from shapeatlas.data.synthetic_kidney import write_kidney_cohort as write
        extra, label = {}, "kidney"
    if args.min_vertices > args.max_vertices:
        _usage_error(args, "--min-vertices must not exceed --max-vertices")
    if args.min_vertices < MIN_VERTICES:
        _usage_error(args, f"--min-vertices must be at least {MIN_VERTICES}")
    progress = _Progress(enabled=not args.quiet)
    try:
        paths = write(args.out, n=args.n, seed=args.seed,
                      n_vertices=(args.min_vertices, args.max_vertices),
                      progress=lambda done, total: progress("synth", 1, total),
                      overwrite=args.overwrite, **extra)
    finally:
        progress.close()
    print(f"wrote {len(paths)} {label} shapes to {args.out} "
          "(ground truth: truth.json, truth/*.npz)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from shapeatlas.runs.demo import run_demo

    progress = _Progress(enabled=not args.quiet)
    steps = _FitProgress(enabled=not args.quiet)
    t0 = time.perf_counter()
    try:
        summary = run_demo(args.out, n=args.n, seed=args.seed,
                           target_vertices=args.target_vertices, progress=progress,
                           step_progress=steps, announce=None if args.quiet else print,
                           overwrite=args.overwrite)
    finally:
        progress.close()
        steps.close()
    print()
    print(f"{'shape':<10}{'phenotype':>10}{'truth mL':>10}{'groomed mL':>12}"
          f"{'match CD mm':>13}{'HD mm':>8}")
    corr = {c["name"]: c for c in summary["correspond"]}
    for s in summary["shapes"]:
        c = corr[s["name"]]
        print(f"{s['name']:<10}{s['phenotype']:>10}{s['truth_ml']:>10.1f}{s['groomed_ml']:>12.1f}"
              f"{c['chamfer_mm']:>13.2f}{c['hausdorff_mm']:>8.2f}")
    la = summary["long_axis_mm"]
    print()
    print(f"ground-truth correspondence error (consecutive pairs, mean long axis {la:.0f} mm):")
    print(f"  R-ASM atlas:                      {summary['gt_error_mm']:.2f} mm "
          f"({100 * summary['gt_error_mm'] / la:.1f}% of the long axis)")
    print(f"  rigid alignment + nearest point:  {summary['baseline_gt_error_mm']:.2f} mm "
          f"({100 * summary['baseline_gt_error_mm'] / la:.1f}%)")
    sm, ev = summary["samples"], summary["evaluation"]
    pl, sp, g = ev["plausibility"], ev["specificity_mm"], ev["generalization_mm"][-1]
    print()
    print(f"virtual cohort: {sm['n']} shapes sampled in {sm['seconds']['sampling']:.3f} s, "
          f"{100 * sm['valid_share']:.0f}% valid; volume {pl['virtual_volume_ml']['mean']:.0f} ± "
          f"{pl['virtual_volume_ml']['sd']:.0f} mL vs real {pl['real_volume_ml']['mean']:.0f} ± "
          f"{pl['real_volume_ml']['sd']:.0f} mL (KS {pl['volume_ks']:.2f})")
    print(f"evaluation on {ev['n_test']} new LVs: matching Chamfer "
          f"{ev['matching']['chamfer_mm']['mean']:.2f} mm, generalization {g['mean']:.2f} mm, "
          f"specificity {sp['vertex_mean']:.2f} mm (figures: {', '.join(ev['figures'])})")
    print()
    print(f"done in {time.perf_counter() - t0:.1f} s (fit {summary['fit_seconds']:.0f} s); "
          f"outputs in {summary['out']}")
    return 0


def _fit_config(args: argparse.Namespace):
    from shapeatlas.training.config import FitConfig

    cfg = FitConfig.from_json(args.config) if args.config else FitConfig()
    return cfg.replace(
        method=args.method, seed=args.seed, device=args.device,
        model={"atlas_vertices": args.atlas_vertices},
        training={"epochs": args.epochs},
        generator={"latent_dim": args.latent_dim},
        clustering={"atlases": args.atlases},
        grooming={"keep_outliers": True if args.keep_outliers else None})


def _match_config(args: argparse.Namespace):
    from shapeatlas.training.config import load_match_config

    return load_match_config(args.matching)


def _matching_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--matching", default=None, metavar="NAME|FILE",
                   help="how to match each shape onto the atlas: 'default', 'paper' (the "
                   "published Atlas-R-ASMG matching) or a JSON file of matching settings (a "
                   "config.json's 'matching' object, or the object itself; "
                   "docs/configuration.md); default: the run's own")


def cmd_fit(args: argparse.Namespace) -> int:
    from shapeatlas.outputs import check_output, staging_dir, work_dir
    from shapeatlas.runs.fit import fit_run
    from shapeatlas.runs.folder import run_is_complete
    from shapeatlas.training.distributed import DEFAULT_TIMEOUT_S, from_env, session

    if not Path(args.data).is_dir():
        _usage_error(args, f"data folder {args.data} does not exist or is not a folder")
    dist = from_env()  # several processes under torchrun
    if not dist.is_main:
        # Only the main process shows progress and writes; the others log warnings and errors.
        args.quiet = True
        logging.getLogger("shapeatlas").setLevel(logging.WARNING)
    if (not dist.active and args.resume and not staging_dir(args.out).exists()
            and run_is_complete(args.out)):
        print(f"{args.out} is complete: nothing to resume (pass --overwrite without --resume "
              "to fit it again)")
        return 0
    cfg = _fit_config(args)
    cache = _cache_setting(args)
    if dist.active:
        from shapeatlas.runs.fit import distributed_problem

        problem = distributed_problem(cfg)
        if problem:
            raise ShapeAtlasError(problem)
    steps = _FitProgress(enabled=not args.quiet)
    progress = _Progress(enabled=not args.quiet)
    t0 = time.perf_counter()
    if not args.resume and not dist.active:
        check_output(args.out, overwrite=args.overwrite, inputs=[args.data])
    if dist.is_main:
        print(f"working in {work_dir(args.out)} (moved to {args.out} when done; if stopped, "
              "--resume continues it)"
              + (f"; {dist.world_size} processes" if dist.active else ""), flush=True)
    try:
        with session(dist, cfg.device, timeout_s=args.dist_timeout or DEFAULT_TIMEOUT_S):
            fit_run(args.data, args.out, cfg, resume=args.resume, progress=steps,
                    groom_progress=progress, overwrite=args.overwrite, dist=dist, cache=cache)
    except KeyboardInterrupt:
        if staging_dir(args.out).is_dir():
            args.interrupted = (f"the unfinished fit is kept in {work_dir(args.out)}: add "
                                "--resume to the same command to continue it")
        raise
    finally:
        progress.close()
        steps.close()
    if not dist.is_main:
        return 0
    metrics = json.loads((Path(args.out) / "fit_metrics.json").read_text())
    procs = (f", {metrics['world_size']} processes" if metrics.get("world_size", 1) > 1 else "")
    print(f"fitted an atlas of {metrics['atlas_vertices']} vertices on {metrics['n_shapes']} "
          f"shapes in {time.perf_counter() - t0:.1f} s ({metrics['epochs_run']} epochs, "
          f"device {metrics['device']}{procs})")
    g = metrics["generator"]
    dims = (" (per atlas: " + ", ".join(map(str, g["latent_dims"])) + ")"
            if "latent_dims" in g else "")
    print(f"generator: {g['kind']} with {g['latent_dim']} latent dimensions{dims} "
          f"({metrics['generator_seconds']:.1f} s)")
    print(f"matching: Chamfer {metrics['chamfer_mm_mean']:.2f} mm, Hausdorff "
          f"{metrics['hausdorff_mm_mean']:.2f} mm (mean over training shapes)")
    pm = metrics.get("point_model")
    if pm:
        chamfer = (f"training Chamfer {pm['chamfer_before_mm']:.2f} -> "
                   f"{pm['chamfer_after_mm']:.2f} mm")
        print(f"point model: {pm['modes']} modes, correspondences refined together "
              f"({pm['seconds']:.1f} s, {chamfer})" if pm["kept"] else
              f"point model: NOT KEPT, its {pm['modes']} modes raised the {chamfer}; "
              "matching runs without it")
    if "atlases" in metrics:
        a = metrics["atlases"]
        counts = [list(a["labels"].values()).count(m) for m in range(a["n_atlases"])]
        print(f"atlases: {a['n_atlases']}, weights "
              + ", ".join(f"{w:.2f}" for w in a["weights"])
              + f", shapes per atlas {counts}")
        sel = a["selection"]
        if sel and sel.get("criterion") == "bimodality":
            print(f"chosen by a bimodality test (a group is split when p < {sel['alpha']}): "
                  + ("; ".join(f"{t['shapes']} shapes, p = {t['p']:.2f}"
                               + (" (split)" if t["split"] else "") for t in sel["tests"])
                     or f"no group of {sel['min_group']} shapes or more to test"))
        elif sel:  # a model fitted before the bimodality test
            print(f"chosen by {sel['criterion']} (the largest M at or above "
                  f"{sel['threshold']}): "
                  + ", ".join(f"M={c['atlases']}: {c['strength']:.2f}±{c['se']:.2f}"
                              for c in sel["curve"]))
    print(f"run folder: {Path(args.out).resolve()} (model, atlas.ply, train_log.csv, "
          "fit_metrics.json)")
    return 0


def cmd_correspond(args: argparse.Namespace) -> int:
    from shapeatlas.runs.correspond import correspond_files

    progress = _Progress(enabled=not args.quiet)
    try:
        done, errors = correspond_files(args.run, args.meshes, args.out, refine=not args.no_refine,
                                        device=args.device, match=_match_config(args),
                                        realign=args.realign,
                                        point_model=not args.no_point_model,
                                        overwrite=args.overwrite, progress=progress.count(
                                            "match", _count_mesh_files(args.meshes)))
    finally:
        progress.close()
    for d in done:
        print(f"{d['name']}: Chamfer {d['chamfer_mm']:.2f} mm, Hausdorff {d['hausdorff_mm']:.2f} "
              f"mm, confidence {d['mean_confidence']:.2f}, {d['seconds']:.2f} s"
              + ("" if d["pose"] == "aligned" else f", pose of the {d['pose']}")
              + (f", atlas {d['atlas']} (membership {max(d['memberships']):.2f})"
                 if "atlas" in d else ""))
    for e in errors:
        print(f"skipped: {e}")
    n_bad = sum(not d["valid"] for d in done)
    print(f"wrote {len(done)} correspondences to {args.out}"
          + (f" ({n_bad} failed the mesh check, written anyway; NAME.npz says why)"
             if n_bad else ""))
    return 1 if errors else 0


def cmd_sample(args: argparse.Namespace) -> int:
    from shapeatlas.runs.sample import sample_run

    if args.volume_mesh:
        from shapeatlas.mesh.volume import require_mesher

        require_mesher("--volume-mesh")
    progress = _Progress(enabled=not args.quiet)
    try:
        s = sample_run(args.run, args.out, n=args.n, seed=args.seed, fmt=args.format,
                       traverse=args.traverse, relax=args.relax, device=args.device,
                       overwrite=args.overwrite, volume_mesh=args.volume_mesh,
                       progress=progress.count("sample", args.n))
    finally:
        progress.close()
    sec = s["seconds"]
    print(f"wrote {s['n']} virtual shapes ({s['file_format']}) and samples.json to {args.out}")
    print(f"sampling {sec['sampling']:.2f} s, validity checks {sec['validity']:.1f} s, writing "
          f"{sec['writing']:.1f} s; {100 * s['valid_share']:.1f}% valid (closed, manifold, "
          "outward, no self-intersections, no degenerate or inverted faces)")
    if s["n_projected"]:
        print(f"{s['n_projected']} of {s['n']} decoded shapes were moved locally onto valid "
              "meshes (samples.json: projection)")
    if s["n_invalid"]:
        print(f"{s['n_invalid']} of {s['n']} shapes failed the mesh check (written anyway; "
              "samples.json says why)")
    vm = s["volume_mesh"]
    if vm is not None:
        print(f"volume meshes (TetGen): {vm['meshed']} of {s['n']} shapes written as NAME.vtu "
              f"in {sec['volume_meshing']:.1f} s"
              + (f"; {vm['refused']} refused by the mesher (samples.json says why)"
                 if vm["refused"] else ""))
    print(f"volume {s['volume_ml']['mean']:.1f} ± {s['volume_ml']['sd']:.1f} mL")
    if args.traverse:
        print(f"latent traversals of the first {args.traverse} directions in {args.out}/traverse")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from shapeatlas.runs.reconstruct import reconstruct_files

    progress = _Progress(enabled=not args.quiet)
    try:
        done, errors = reconstruct_files(
            args.run, args.meshes, args.out, n_components=args.components, device=args.device,
            match=_match_config(args), overwrite=args.overwrite,
            progress=progress.count("rebuild", _count_mesh_files(args.meshes)))
    finally:
        progress.close()
    for d in done:
        print(f"{d['name']}: reconstruction to input surface {d['surface_distance_mm']:.2f} mm"
              + ("" if d["valid"] else "; FAILED the mesh check: " + "; ".join(d["problems"])))
    for e in errors:
        print(f"skipped: {e}")
    n_bad = sum(not d["valid"] for d in done)
    print(f"wrote {len(done)} reconstructions to {args.out}"
          + (f" ({n_bad} failed the mesh check, written anyway)" if n_bad else ""))
    return 1 if errors else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from shapeatlas.runs.evaluate import evaluate_run

    if not Path(args.test).is_dir():
        _usage_error(args, f"test folder {args.test} does not exist or is not a folder")
    progress = _Progress(enabled=not args.quiet)
    try:
        m = evaluate_run(args.run, args.test, args.out, n_samples=args.n, seed=args.seed,
                         device=args.device, match=_match_config(args), progress=progress,
                         overwrite=args.overwrite)
    finally:
        progress.close()
    mt, sp, pl = m["matching"], m["specificity_mm"], m["plausibility"]
    g = m["generalization_mm"][-1]
    print(f"{m['method']} ({m['generator']}, D={m['latent_dim']}), {m['n_train']} training and "
          f"{m['n_test']} test shapes")
    print(f"matching: Chamfer {mt['chamfer_mm']['mean']:.2f} mm, Hausdorff "
          f"{mt['hausdorff_mm']['mean']:.2f} mm, HD95 {mt['hd95_mm']['mean']:.2f} mm")
    print(f"generalization ({g['components']} directions): {g['mean']:.2f} ± {g['se']:.2f} mm")
    print(f"specificity ({sp['n_samples']} samples): {sp['vertex_mean']:.2f} ± "
          f"{sp['vertex_se']:.2f} mm (vertex), {sp['surface_mean']:.2f} mm (surface)")
    if "volume_ks" in pl:
        print(f"volumes: real {pl['real_volume_ml']['mean']:.1f} ± {pl['real_volume_ml']['sd']:.1f}"
              f" mL, virtual {pl['virtual_volume_ml']['mean']:.1f} ± "
              f"{pl['virtual_volume_ml']['sd']:.1f} mL, KS {pl['volume_ks']:.3f}, acceptance "
              f"{100 * pl['acceptance_rate']:.1f}%")
    print(f"valid virtual shapes: {100 * pl['validity']['valid']:.1f}%")
    for e in m["skipped"]:
        print(f"skipped: {e}")
    print(f"metrics.json, samples.csv and figures in {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from shapeatlas.report.html import MAX_GALLERY, write_report

    if not 1 <= args.n <= MAX_GALLERY:
        _usage_error(args, f"-n must be from 1 to {MAX_GALLERY}, got {args.n}")
    progress = _Progress(enabled=not args.quiet, unit="stage")
    try:
        s = write_report(args.run, args.out, evaluation=args.evaluation, n_samples=args.n,
                         seed=args.seed, device=args.device, overwrite=args.overwrite,
                         progress=progress)
    finally:
        progress.close()
    print(f"wrote {s['path']} ({s['bytes'] / 1e6:.1f} MB) in {s['seconds']['total']:.1f} s: "
          f"{s['directions']} of {s['latent_dim']} latent directions with a slider each, "
          f"{len(s['matched'])} matched shapes"
          + (", the evaluation" if s["evaluation"] else
             "; no evaluation (add one with --evaluation EVAL_DIR)"))
    return 0


def _usage_error(args: argparse.Namespace, message: str) -> None:
    args._parser.error(message)


def _count_mesh_files(items: Sequence[str]) -> int:
    """How many mesh files the per-file verbs go through (a folder counts its files): the
    length of their progress bar."""
    from shapeatlas.runs.load import collect_mesh_paths

    try:
        return len(collect_mesh_paths(items))
    except ShapeAtlasError:
        return len(items)  # (the verb itself says what is wrong)


#: --format choices of the verbs that write shapes: every format the mesh writer writes.
_SHAPE_FORMATS = ("ply", "vtk", "vtp", "obj", "stl")

#: --out of every verb that writes a folder.
_OUT_HELP = "output folder: new or empty (see --overwrite); built beside it and moved in at the end"


def _label_arguments(p: argparse.ArgumentParser) -> None:
    """The label-map options that `info` and `groom` share."""
    p.add_argument("--labels", type=_label_list, default=None, metavar="L[,L...]",
                   help="label maps: the labels merged into one organ, e.g. 1,2,3 (default: "
                   "every non-zero label); a file without any of them is reported and skipped")
    p.add_argument("--min-component", type=_fraction, default=0.1, metavar="FRACTION",
                   help="label maps: leave out connected components smaller than this fraction "
                   "of the largest one's volume (default 0.1)")


def _overwrite_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out whole (default: refuse it)")


def _cache_arguments(p: argparse.ArgumentParser) -> None:
    """--cache / --no-cache of the verbs that groom."""
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="keep each shape's grooming in DIR by content, so that the same files "
                   "are never groomed twice (default: $SHAPEATLAS_CACHE, else "
                   "~/.cache/shapeatlas)")
    p.add_argument("--no-cache", action="store_true",
                   help="groom without reading or writing the cache")


def _cache_setting(args: argparse.Namespace):
    """The `cache` argument of `groom_cohort` that --cache / --no-cache ask for."""
    if args.no_cache and args.cache:
        _usage_error(args, "--cache and --no-cache contradict each other")
    return False if args.no_cache else (args.cache or True)


def _device_argument(p: argparse.ArgumentParser, *, default: str | None = "auto") -> None:
    """--device of every verb that runs a network."""
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=default,
                   help="where to run the network; auto (default): CUDA when available")


def _count_argument(p: argparse.ArgumentParser, *, default: int, what: str) -> None:
    """-n/--n: the one spelling of a number of shapes."""
    p.add_argument("-n", "--n", dest="n", type=_positive_int, default=default, metavar="N",
                   help=f"number of {what} (default {default})")


def _seed_argument(p: argparse.ArgumentParser, *, default: int | None = 0) -> None:
    p.add_argument("--seed", type=int, default=default, metavar="S",
                   help="random seed: the same seed gives the same result on one machine "
                   f"(default {0 if default is None else default})")


def _common_options(*, top: bool) -> argparse.ArgumentParser:
    """-q/-v, the options every verb takes, as a parent parser: `top` for the one before the
    verb (defaults False), else for every verb's own (no default, so that a -v before the verb
    is not reset by the verb's parser)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    default = False if top else argparse.SUPPRESS
    g.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="no progress bars; log warnings and errors only")
    g.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="log debug details (the library's logging at DEBUG; default INFO)")
    return p


class _ConfigField(argparse.Action):
    """A former fit option that is now only a configuration field: refused with where it went."""

    def __init__(self, option_strings, dest, *, field: str, example: str, **kwargs):
        super().__init__(option_strings, dest, nargs=argparse.OPTIONAL,
                         help=argparse.SUPPRESS, **kwargs)
        self.field, self.example = field, example

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is a configuration setting ({self.field}): put it in a "
                     f"--config file, such as {self.example}")


#: fit options that became configuration fields only: option -> (field, --config example).
_FIT_CONFIG_FIELDS = {
    "--beta": ("generator.beta", '{"generator": {"beta": 2}}'),
    "--features": ("model.features", '{"model": {"features": "spatial"}}'),
    "--generator-training": ("generator.mode", '{"generator": {"mode": "joint"}}'),
    "--ssm-modes": ("model.ssm_modes", '{"model": {"ssm_modes": 4}}'),
}


# ----------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="shapeatlas", description="Statistical shape atlases and virtual "
                "populations from anatomical surface meshes (Atlas-R-ASMG).",
                parents=[_common_options(top=True)])
    p.add_argument("--version", action="version", version=f"shapeatlas {__version__}")
    common = _common_options(top=False)
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    sub.required = True

    def verb(parent, name: str, **kwargs) -> argparse.ArgumentParser:
        return parent.add_parser(name, parents=[common], **kwargs)

    q = verb(sub, "info", help="describe meshes and label maps, and their problems",
             description="Print counts, watertightness, volume, bounds and the problems "
             "found in each mesh, and the mesh check (closed, 2-manifold, outward, no "
             "self-intersections, no degenerate faces: what a volume mesher needs). "
             "For a label map (.nii .nii.gz .nrrd .nhdr): its grid, orientation, "
             "labels with voxel counts and volumes, and the connected components of "
             "the chosen labels with their volume, side and the name groom would "
             "give them; --surface also makes and checks their surfaces. "
             "Exit code 1 if any file cannot be read or cannot be used for shape "
             "modelling at all (all faces degenerate, or flat; a label map without "
             "the chosen labels): groom refuses those. Other problems are reported "
             "with exit code 0 (groom repairs many).")
    q.add_argument("meshes", nargs="+", metavar="FILE",
                   help="mesh files (OBJ PLY STL OFF VTK VTP) or label maps (NII NII.GZ NRRD NHDR)")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    _label_arguments(q)
    q.add_argument("--surface", action="store_true",
                   help="label maps: make each kept component's surface as groom would and "
                   "run groom's check on it (seconds per component)")
    q.add_argument("--target-vertices", type=_positive_int, default=None, metavar="N",
                   help="with --surface: decimate to about N vertices first, as groom would")
    q.set_defaults(func=cmd_info, _parser=q)

    g = verb(sub, "groom", help="clean, close, decimate and align a cohort of meshes",
             description="Groom every mesh and label map in IN_DIR for shape "
             "modelling and write them, with a groom.json manifest of per-shape "
             "transforms, into OUT_DIR. A label map (.nii .nii.gz .nrrd .nhdr) gives "
             "the smoothed, volume-preserving surface of its chosen labels; a folder "
             "may mix label maps and meshes. A file that cannot be groomed is "
             "reported and skipped.")
    g.add_argument("input", metavar="IN_DIR", help="folder of mesh files and/or label maps")
    g.add_argument("--out", required=True, metavar="OUT_DIR", help=_OUT_HELP)
    _overwrite_argument(g)
    g.add_argument("--no-clean", action="store_true",
                   help="skip merging duplicates / dropping degenerate faces / largest component")
    g.add_argument("--watertight", action="store_true",
                   help="rebuild closed surfaces (generalised winding number + marching cubes)")
    g.add_argument("--resolution", type=_positive_int, default=96, metavar="N",
                   help="winding-number grid cells along the longest side (default 96)")
    g.add_argument("--target-vertices", type=_positive_int, default=None, metavar="N",
                   help="decimate/remesh every shape to about N vertices")
    g.add_argument("--decimation", choices=["quadric", "uniform"], default="quadric",
                   help="quadric keeps volume best; uniform gives regular triangles")
    g.add_argument("--keep-failed", action="store_true",
                   help="keep shapes that fail the check (volume more than 1%% off the input's, "
                        "faces crossing others) instead of leaving them out")
    g.add_argument("--align", choices=["none", "rigid", "similarity"], default="rigid",
                   help="alignment to the reference shape (default rigid)")
    g.add_argument("--consensus-rounds", type=int, default=0, metavar="N",
                   help="then re-align every shape N times onto the cohort's consensus shape "
                        "(rotation only, sizes and proportions factored out; default 0: off)")
    g.add_argument("--no-cap-twist", action="store_true",
                   help="do not turn shapes about their flat cap (an LV's basal plane, a bone's "
                        "cut) to line the cap outlines up with the reference's")
    g.add_argument("--no-center", action="store_true", help="do not move the reference's centroid to the origin")
    g.add_argument("--reference", default=None, metavar="NAME",
                   help="file stem of the reference shape (default: the shape of median size)")
    g.add_argument("--input-units", choices=["um", "mm", "cm", "in", "m"], default="mm",
                   help="units of the input coordinates (um, mm, cm, in, m); outputs are in mm")
    g.add_argument("--keep-outliers", action="store_true",
                   help="keep shapes 3x or more larger or smaller than the cohort's median "
                        "(most likely in another unit; by default they are left out)")
    _label_arguments(g)
    g.add_argument("--components", choices=["largest", "each"], default="largest",
                   help="label maps: keep the largest connected component (default), or each "
                   "one as its own shape, named NAME_left / NAME_right by the patient's side "
                   "(NAME_c1, NAME_c2 by size where the side cannot be told)")
    g.add_argument("--mirror", choices=["left", "right"], default=None,
                   help="mirror the label-map shapes on this side of the patient across the "
                   "sagittal plane (x -> -x), so one atlas serves both sides; shapes whose "
                   "side is unknown (mesh files, no orientation in the header) are left out")
    g.add_argument("--jobs", type=int, default=0, metavar="N", help="worker processes (0: all cores)")
    _cache_arguments(g)
    g.set_defaults(func=cmd_groom, _parser=g)

    s = verb(sub, "synth", help="generate synthetic cohorts with ground truth",
             description="Generate synthetic cohorts with known ground truth.")
    ssub = s.add_subparsers(dest="kind", metavar="KIND", parser_class=_Parser)
    ssub.required = True
    lv = verb(ssub, "lv", help="left-ventricle cavities with ground-truth correspondence",
              description="Closed LV cavity surfaces in mm, each triangulated "
              "differently and in a random pose, with ground truth (truth.json and "
              "truth/NAME.npz: per-vertex coordinates on the shared domain).")
    _synth_arguments(lv)
    lv.add_argument("--phenotypes", choices=["healthy", "mixed"], default="healthy",
                    help="healthy only, or a mix of healthy and dilated ventricles")
    lv.set_defaults(func=cmd_synth, organ="lv", _parser=lv)
    kid = verb(ssub, "kidney", help="kidneys with ground-truth correspondence",
               description="Closed kidney surfaces in mm (a bent ellipsoid with a "
               "hilar dent and a fuller upper pole), each triangulated differently "
               "and in a random pose, with ground truth in the LV cohort's layout.")
    _synth_arguments(kid)
    kid.set_defaults(func=cmd_synth, organ="kidney", _parser=kid)

    f = verb(sub, "fit", help="learn an atlas, the correspondences and a shape generator",
             description="Fit an Atlas-R-ASMG model (R-ASM correspondences + β-VAE) or "
             "the CPD-PCA baseline on DATA_DIR: a groomed folder (with "
             "groom.json) or raw meshes or label maps, which are then groomed with the "
             "defaults into RUN_DIR/groomed (a label map's largest component of all "
             "its non-zero labels; run groom first for other choices). Works in "
             "RUN_DIR.partial/new, checkpointing every epoch, and moves it to RUN_DIR "
             "when done; --resume continues a killed run there. Data-parallel on several "
             "processes or GPUs: torchrun --nproc_per_node=N -m shapeatlas fit ... "
             "(docs/scaling.md).")
    f.add_argument("data", metavar="DATA_DIR",
                   help="groomed folder, or folder of raw meshes and/or label maps")
    f.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="run folder: new or empty (see --overwrite)")
    _overwrite_argument(f)
    f.add_argument("--method", choices=["rasm", "cpd-pca"], default=None,
                   help="Atlas-R-ASMG (default) or the classical CPD + PCA baseline")
    f.add_argument("--latent-dim", type=_positive_int, default=None, metavar="D",
                   help="β-VAE latent size / PCA modes (default min(16, shapes - 1))")
    f.add_argument("--atlases", type=_atlases, default=None, metavar="M|auto",
                   help="mAtlas-R-ASMG with M atlases (default 1), or 'auto' to choose M in "
                   "1..6 by splitting the cohort while a split is significantly bimodal")
    for option, (field, example) in _FIT_CONFIG_FIELDS.items():
        f.add_argument(option, action=_ConfigField, field=field, example=example)
    f.add_argument("--epochs", type=_positive_int, default=None,
                   help="most epochs per atlas round (default 25); a fit trains "
                   "training.atlas_rounds rounds (2 by default), so up to twice this, and early "
                   "stopping may end a round sooner")
    f.add_argument("--atlas-vertices", type=_positive_int, default=None, metavar="K",
                   help="atlas vertex count (default 1500)")
    _seed_argument(f, default=None)
    _device_argument(f, default=None)
    f.add_argument("--config", default=None, metavar="FILE",
                   help="a configuration file: a run's config.json, or any subset of its "
                   "sections and fields (docs/configuration.md); the options above override it")
    f.add_argument("--keep-outliers", action="store_true",
                   help="use training shapes 3x or more larger or smaller than the cohort's "
                        "median (most likely in another unit; by default fit refuses them)")
    f.add_argument("--resume", action="store_true",
                   help="continue the stopped run of RUN_DIR (in RUN_DIR.partial/new)")
    f.add_argument("--dist-timeout", type=_positive_int, default=None, metavar="SECONDS",
                   help="under torchrun (several processes): how long a process waits for a "
                   "silent one before all stop (default 600)")
    _cache_arguments(f)
    f.set_defaults(func=cmd_fit, _parser=f)

    c = verb(sub, "correspond", help="map the atlas onto new meshes with a fitted run",
             description="For each input NAME write OUT/NAME.ply (atlas topology: vertex "
             "j corresponds to atlas vertex j, in the input's own frame) and OUT/NAME.npz "
             "(points, confidence, atlas_vertex, transform). No retraining. A file the "
             "run was fitted on starts from its pose in the fit (refined locally on the "
             "atlas); others are aligned rigidly to the atlas from scratch. Both are then "
             "turned about their flat cap (an LV's basal plane) as grooming turned the "
             "training shapes, where the run keeps a cap outline.")
    c.add_argument("run", metavar="RUN_DIR", help="a run folder written by 'shapeatlas fit'")
    c.add_argument("meshes", nargs="+", metavar="MESH_OR_DIR", help="mesh files or folders")
    c.add_argument("--out", required=True, metavar="DIR", help=_OUT_HELP)
    _overwrite_argument(c)
    c.add_argument("--no-refine", action="store_true",
                   help="skip the test-time pull onto the surface (attention + smoothing only)")
    _matching_argument(c)
    c.add_argument("--no-point-model", action="store_true",
                   help="match without the run's point-distribution model (fit --ssm-modes)")
    c.add_argument("--realign", action="store_true",
                   help="align every input to the atlas from scratch, even a file the run was "
                   "fitted on (which otherwise starts from its pose in the fit)")
    _device_argument(c)
    c.set_defaults(func=cmd_correspond, _parser=c)

    sa = verb(sub, "sample", help="generate a virtual cohort from a fitted run",
              description="Write N virtual shapes (atlas faces, the run's aligned frame, "
              "mm) and samples.json (per sample: latent code, volume, validity flags). "
              "Shapes are written in blocks, so N may exceed memory.")
    sa.add_argument("run", metavar="RUN_DIR", help="a run folder written by 'shapeatlas fit'")
    _count_argument(sa, default=100, what="virtual shapes")
    sa.add_argument("--out", required=True, metavar="DIR", help=_OUT_HELP)
    _overwrite_argument(sa)
    _seed_argument(sa)
    sa.add_argument("--format", choices=list(_SHAPE_FORMATS), default="ply",
                    help="file format of the shapes (default ply)")
    sa.add_argument("--traverse", type=int, default=0, metavar="R",
                    help="also write traversals of the first R latent directions (-2..+2 sd)")
    sa.add_argument("--relax", type=int, default=None, metavar="N",
                    help="tangential relaxation steps (default: the run's generator.relax: 5 for "
                    "rasm, 0 for cpd-pca; 0 writes the raw output)")
    sa.add_argument("--volume-mesh", action="store_true",
                    help="also write a tetrahedral mesh of each shape (NAME.vtu) with the "
                    "optional mesher TetGen (AGPL-3.0): pip install 'shapeatlas[volume]'; a "
                    "shape it refuses gets no .vtu and is flagged in samples.json")
    _device_argument(sa)
    sa.set_defaults(func=cmd_sample, _parser=sa)

    rc = verb(sub, "reconstruct", help="pass meshes through a fitted model",
              description="Correspond, encode and decode each mesh; write OUT/NAME.ply "
              "(atlas faces, the input's own frame) and print its distance to the input.")
    rc.add_argument("run", metavar="RUN_DIR", help="a run folder written by 'shapeatlas fit'")
    rc.add_argument("meshes", nargs="+", metavar="MESH_OR_DIR", help="mesh files or folders")
    rc.add_argument("--out", required=True, metavar="DIR", help=_OUT_HELP)
    _overwrite_argument(rc)
    rc.add_argument("--components", type=_positive_int, default=None, metavar="M",
                    help="keep only the first M latent directions")
    _matching_argument(rc)
    _device_argument(rc)
    rc.set_defaults(func=cmd_reconstruct, _parser=rc)

    ev = verb(sub, "evaluate", help="score a fitted run on a test folder",
              description="Matching (CD/HD/HD95), compactness, generalization, "
              "specificity, volume plausibility and sample validity; writes "
              "OUT/metrics.json, OUT/samples.csv (every virtual shape's volume and "
              "validity) and PNG figures. Definitions: docs/metrics.md.")
    ev.add_argument("run", metavar="RUN_DIR", help="a run folder written by 'shapeatlas fit'")
    ev.add_argument("--test", required=True, metavar="DATA_DIR",
                    help="test meshes: a groomed folder or raw meshes (groomed first)")
    ev.add_argument("--out", required=True, metavar="DIR", help=_OUT_HELP)
    _overwrite_argument(ev)
    _count_argument(ev, default=1000, what="virtual shapes for specificity and plausibility")
    _seed_argument(ev)
    _matching_argument(ev)
    _device_argument(ev)
    ev.set_defaults(func=cmd_evaluate, _parser=ev)

    rp = verb(sub, "report", help="write one self-contained HTML page about a fitted run",
              description="Write one HTML file that opens offline in any browser: "
              "the atlas and the mean shape in 3D, a slider per latent direction "
              "(at most 16), virtual shapes beside real ones with their volumes, "
              "shapes matched onto the atlas coloured by matching error and "
              "confidence, the evaluation's charts (--evaluation), and the run's "
              "settings, data and timings. Nothing is written into RUN_DIR.")
    rp.add_argument("run", metavar="RUN_DIR", help="a run folder written by 'shapeatlas fit'")
    rp.add_argument("--evaluation", default=None, metavar="EVAL_DIR",
                    help="a folder written by 'shapeatlas evaluate' of this run")
    rp.add_argument("--out", required=True, metavar="FILE",
                    help="the HTML file to write (refused if it exists, see --overwrite; "
                    "never inside RUN_DIR or EVAL_DIR)")
    rp.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _count_argument(rp, default=4, what="virtual shapes in the gallery, and as many real "
                    "ones, 1 to 8")
    _seed_argument(rp)
    _device_argument(rp)
    rp.set_defaults(func=cmd_report, _parser=rp)

    d = verb(sub, "demo", help="run the whole pipeline on a built-in synthetic LV cohort",
             description="Synthesise a small LV cohort (healthy + dilated), groom it, "
             "fit Atlas-R-ASMG (R-ASM + β-VAE), correspond the original files and score "
             "them against the ground truth, sample a virtual cohort and evaluate the "
             "model on new LVs: the whole pipeline, on built-in data.")
    d.add_argument("--out", default="shapeatlas-demo", metavar="DIR",
                   help="output folder: new or empty (see --overwrite; default "
                   "./shapeatlas-demo)")
    _overwrite_argument(d)
    _count_argument(d, default=12, what="synthetic LVs to fit on")
    _seed_argument(d)
    d.add_argument("--target-vertices", type=_positive_int, default=1500, metavar="N",
                   help="groom every LV to about N vertices (default 1500)")
    d.set_defaults(func=cmd_demo, _parser=d)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quiet and args.verbose:
        args._parser.error("-q/--quiet and -v/--verbose exclude each other: choose one")
    restore_logging = _configure_logging(args)
    try:
        with recorded_command(["shapeatlas", *argv]):
            return int(args.func(args) or 0)
    except ShapeAtlasError as exc:
        print(f"shapeatlas: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        note = getattr(args, "interrupted", "no partial files were left behind")
        print(f"shapeatlas: interrupted ({note})", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`shapeatlas info x.ply | head -2`): stop quietly, and point
        # stdout at devnull so that flushing it at exit does not fail again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    finally:
        restore_logging()


if __name__ == "__main__":
    sys.exit(main())
