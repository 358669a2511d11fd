"""Benchmark: seconds for `correspond` of one new mesh (aligned from scratch), after loading.

Loads a fitted run, corresponds MESH once to warm up, then `--repeat` times per setting, with this
version's default matching (`MatchConfig()`'s transport, deformation smoothing, pull motion and
normal-pull steps, whatever the run was fitted with; the rest of the run's `config.matching` is
kept, and matching changes no training) and with the paper's (plain softmax, no deformation
smoothing, free pull), each passed to `correspond` as its `match`, on 1 thread and on
`inputs.ALIGN_WORKERS` threads for the rigid search (the poses are the same). Printed, and
written to `--json` (default correspond_speed.json in the working folder) with the commit and
machine under "provenance".

    python bench/correspond_speed.py RUN_DIR MESH [--repeat 3] [--json PATH]
    # e.g. the run of `bench/rasm_lv.py --out OUT` and one of its cohort files:
    python bench/correspond_speed.py OUT/run-hybrid-s0 OUT/cohort/lv_014.ply --repeat 5
"""

from __future__ import annotations

import argparse
import time

from common import write_json

from shapeatlas.mesh.io import read_mesh
from shapeatlas.models import inputs
from shapeatlas.models.atlas import AtlasModel
from shapeatlas.training.config import MatchConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("mesh")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", default="correspond_speed.json", metavar="PATH",
                   help="where to write the timings (default %(default)s)")
    args = p.parse_args()
    mesh = read_mesh(args.mesh)
    model = AtlasModel.load(args.run)
    threads = inputs.ALIGN_WORKERS
    print(f"{mesh.name}: {len(mesh.vertices)} vertices; atlas {len(model.atlas_vertices_)}")
    d = MatchConfig()
    default = {"transport_iterations": d.transport_iterations,
               "transport_sharpness": d.transport_sharpness,
               "transport_relaxation": d.transport_relaxation,
               "deformation_smoothing": d.deformation_smoothing,
               "refine_motion": d.refine_motion,
               "normal_refine_steps": d.normal_refine_steps}
    paper = {"transport_iterations": 0, "deformation_smoothing": 0, "refine_motion": "free"}
    settings = (("default matching", default), ("paper's matching (softmax, free pull)", paper))
    fitted = model.config.matching
    timings = []
    try:
        for workers in sorted({1, threads}):
            inputs.ALIGN_WORKERS = workers
            for label, fields in settings:
                match = fitted.replace(**fields)
                model.correspond([mesh], match=match)  # warm-up
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    model.correspond([mesh], match=match)
                    times.append(time.perf_counter() - t0)
                print(f"{workers} search thread(s), {label}: "
                      + ", ".join(f"{t:.2f}" for t in times) + " s", flush=True)
                timings.append({"search_threads": workers, "matching": label,
                                "seconds": times})
    finally:
        inputs.ALIGN_WORKERS = threads
    write_json(args.json, {"run": args.run, "mesh": args.mesh, "vertices": len(mesh.vertices),
                           "atlas_vertices": len(model.atlas_vertices_), "repeat": args.repeat,
                           "timings": timings})


if __name__ == "__main__":
    main()
