"""Your own meshes -> a statistical shape atlas -> a virtual cohort.

A few synthetic left ventricles stand in for your own meshes: they are written into a folder of
PLY files, each with its own triangulation and in a random pose, as segmentations usually come.
The script grooms them (clean, decimate, align), fits an atlas and a β-VAE with a configuration
small enough for a CPU in seconds, samples a virtual cohort and writes it as meshes.

    python examples/virtual_cohort.py                    # into a new temporary folder
    python examples/virtual_cohort.py --out example-run  # into ./example-run (new or empty)

For your own data, point `groom_cohort` at your folder (OBJ, PLY, STL, OFF, VTK or VTP, in mm)
and fit with `FitConfig()` (the defaults) instead of `TINY`: that takes minutes, not seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import shapeatlas
from shapeatlas.data import write_lv_cohort
from shapeatlas.mesh.groom import GroomOptions, groom_cohort, load_groomed

#: A fit small enough for seconds on a CPU: a 200-vertex atlas, a small network, 2 epochs.
TINY = shapeatlas.FitConfig(
    device="cpu",
    model={"encoder": {"widths": [16, 16], "heads": 2, "latent_dim": 16}, "atlas_vertices": 200},
    training={"epochs": 2, "atlas_rounds": 1, "batch_size": 2},
    matching={"refine_steps": 5},
    generator={"epochs": 300},
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="folder to write into, new or empty (default: a temporary folder)")
    parser.add_argument("--n", type=int, default=6, help="synthetic meshes to fit on")
    parser.add_argument("--samples", type=int, default=10, help="virtual shapes to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="shapeatlas-example-"))
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        parser.error(f"{out} is not empty")
    t0 = time.perf_counter()

    # 1. "Your own meshes": a folder of PLY files (any triangulation, any pose).
    write_lv_cohort(out / "meshes", n=args.n, seed=args.seed, n_vertices=(800, 1000))
    # 2. Groom: clean, decimate to about 500 vertices, align rigidly to a reference.
    groom_cohort(out / "meshes", out / "groomed", GroomOptions(target_vertices=500, n_jobs=1))
    meshes, _ = load_groomed(out / "groomed")
    # 3. Fit the atlas, the correspondence network and the β-VAE; save the model.
    model = shapeatlas.AtlasModel(TINY.replace(seed=args.seed)).fit(meshes)
    model.save(out / "model")
    # 4. A virtual cohort: new shapes with the atlas's faces, in the aligned frame (mm).
    virtual = model.sample(args.samples, seed=args.seed)
    (out / "virtual").mkdir()
    for mesh in virtual.meshes():
        shapeatlas.write_mesh(mesh, out / "virtual" / f"{mesh.name}.ply")
    volumes = model.sample_volumes(virtual.vertices)                      # mL

    summary = {
        "out": str(out),
        "training_shapes": len(meshes),
        "atlas_vertices": int(model.atlas_vertices_.shape[0]),
        "latent_dim": int(model.generator_.latent_dim),
        "samples": args.samples,
        "valid_samples": int(sum(r.valid for r in virtual.projection)),
        "real_volume_ml": [float(np.nanmin(model.real_volumes_)),
                           float(np.nanmax(model.real_volumes_))],
        "virtual_volume_ml": [float(volumes.min()), float(volumes.max())],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"fitted an atlas of {summary['atlas_vertices']} vertices on {len(meshes)} shapes; "
          f"wrote {args.samples} virtual shapes ({summary['valid_samples']} valid meshes) to "
          f"{out / 'virtual'}")
    print(f"volumes: real {summary['real_volume_ml'][0]:.0f}-{summary['real_volume_ml'][1]:.0f} "
          f"mL, virtual {summary['virtual_volume_ml'][0]:.0f}-"
          f"{summary['virtual_volume_ml'][1]:.0f} mL ({summary['seconds']:.0f} s)")
    return summary


if __name__ == "__main__":
    main()
