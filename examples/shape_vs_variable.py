"""How does shape change with a clinical variable? Latent codes from `encode`, a least-squares
fit of the codes on the variable, and the shape decoded at a high value of it.

The cohort is synthetic, so the answer is known: left ventricles whose end-diastolic volume
(EDV, mL) is drawn uniformly, with the other shape features drawn independently of it. Each
original mesh is encoded to its latent code (the β-VAE's posterior mean) in the pose its
grooming found (the transforms in `groom.json`). The codes are regressed on EDV (R² says how
much of their variance EDV explains), and the shapes at the mean EDV and at +1 standard
deviation are decoded: the second must enclose more volume.

    python examples/shape_vs_variable.py                    # into a new temporary folder
    python examples/shape_vs_variable.py --out example-edv  # into ./example-edv (new or empty)

With your own cohort, replace the synthetic meshes and `truth` by your meshes and your
variable (one value per mesh, in the same order).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import shapeatlas
from shapeatlas.data import load_truth, write_lv_cohort
from shapeatlas.mesh.groom import GroomOptions, groom_cohort, load_groomed

#: A fit small enough for seconds on a CPU: a 200-vertex atlas, a small network, 2 epochs.
TINY = shapeatlas.FitConfig(
    device="cpu",
    model={"encoder": {"widths": [16, 16], "heads": 2, "latent_dim": 16}, "atlas_vertices": 200},
    training={"epochs": 2, "atlas_rounds": 1, "batch_size": 2},
    matching={"refine_steps": 5},
    generator={"epochs": 300, "latent_dim": 3},
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="folder to write into, new or empty (default: a temporary folder)")
    parser.add_argument("--n", type=int, default=10, help="synthetic meshes in the cohort")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="shapeatlas-example-"))
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        parser.error(f"{out} is not empty")
    t0 = time.perf_counter()

    # A cohort with a known variable: each LV's exact EDV is in the cohort's truth files.
    write_lv_cohort(out / "meshes", n=args.n, seed=args.seed, n_vertices=(800, 1000))
    groom_cohort(out / "meshes", out / "groomed", GroomOptions(target_vertices=500, n_jobs=1))
    meshes, manifest = load_groomed(out / "groomed")
    truth = load_truth(out / "meshes")
    edv = np.array([truth[s["name"]].volume_ml for s in manifest["shapes"]])   # (B,) mL
    model = shapeatlas.AtlasModel(TINY.replace(seed=args.seed)).fit(meshes)

    # Codes of the original files, each moved into the model's frame by its grooming transform
    # (without `transforms`, each would be aligned to the atlas from scratch).
    originals = [shapeatlas.read_mesh(out / "meshes" / f"{s['name']}.ply")
                 for s in manifest["shapes"]]
    to_model = [np.array(s["transform"]) for s in manifest["shapes"]]     # (4, 4) each
    codes = model.encode(originals, transforms=to_model)                   # (B, D)
    # Least squares: codes = a + b * (EDV standardised); R² over every latent column.
    x = (edv - edv.mean()) / edv.std()
    design = np.column_stack([np.ones_like(x), x])                          # (B, 2)
    coef, *_ = np.linalg.lstsq(design, codes, rcond=None)                  # (2, D)
    fitted = design @ coef
    r2 = 1.0 - ((codes - fitted) ** 2).sum() / ((codes - codes.mean(axis=0)) ** 2).sum()
    # The shapes the fit predicts at the mean EDV and at +1 sd, decoded and written.
    shapes = model.decode(np.array([[1.0, 0.0], [1.0, 1.0]]) @ coef)
    volumes = model.sample_volumes(shapes.vertices)                        # mL
    for mesh, label in zip(shapes.meshes(), ("edv_mean", "edv_plus_1sd")):
        shapeatlas.write_mesh(mesh, out / f"{label}.ply")

    summary = {
        "out": str(out),
        "shapes": len(meshes),
        "latent_dim": int(codes.shape[1]),
        "edv_ml": {"mean": float(edv.mean()), "sd": float(edv.std())},
        "r2": float(r2),
        "decoded_volume_ml": {"edv_mean": float(volumes[0]), "edv_plus_1sd": float(volumes[1])},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"EDV {edv.mean():.0f} ± {edv.std():.0f} mL over {len(meshes)} shapes; it explains "
          f"R² = {r2:.2f} of the variance of the {codes.shape[1]} latent codes")
    print(f"decoded shape at the mean EDV: {volumes[0]:.0f} mL; at +1 sd "
          f"({edv.mean() + edv.std():.0f} mL): {volumes[1]:.0f} mL; written to {out}")
    print(f"({summary['seconds']:.0f} s)")
    return summary


if __name__ == "__main__":
    main()
