"""Diagnostics: where the LV ground-truth correspondence error comes from (issue 3).

On a folder written by `bench/rasm_lv.py` (OUT/cohort + OUT/run-TAG/groomed):
1. The rigid + nearest-point baseline with different per-shape normalisations (none, isotropic
   scale, per-axis scale in the aligned frame, PCA whitening), once with the grooming poses and
   once with the true poses: an estimate of what a purely geometric, proportional matching can
   reach, and of how much the pose residual costs.
2. The same with the poses after a few rounds of consensus re-alignment
   (`shapeatlas.mesh.align.consensus_rotations`, groom's `--consensus-rounds`), and both poses'
   rotation residual against the truth, to see whether a better alignment is available.

    python bench/lv_alignment_diagnostics.py /tmp/shapeatlas-rasm-lv --tag shape
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from shapeatlas.data.synthetic_lv import load_truth
from shapeatlas.mesh.align import consensus_rotations, rotation_about
from shapeatlas.mesh.groom import load_groomed
from shapeatlas.metrics.correspondence import nearest_point_baseline_error
from shapeatlas.pipeline import consecutive_pairs


def normaliser(x: np.ndarray, mode: str) -> np.ndarray:
    """(4, 4) map from normalised to aligned coordinates for one shape's vertices x (V, 3)."""
    c = x.mean(axis=0)
    if mode == "none":
        a = np.eye(3)
        c = np.zeros(3)
    elif mode == "isotropic":
        a = np.eye(3) * np.sqrt(np.square(x - c).sum(axis=1).mean())
    elif mode == "per-axis":
        a = np.diag((x - c).std(axis=0))
    else:  # PCA whitening
        w, u = np.linalg.eigh(np.cov((x - c).T))
        a = u @ np.diag(np.sqrt(w)) @ u.T
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = a, c
    return m


def baseline(names, truth, poses, mode: str) -> float:
    errs = []
    for a, b in consecutive_pairs(names):
        ta, tb = truth[a], truth[b]
        xa = ta.vertices_file @ poses[a][:3, :3].T + poses[a][:3, 3]
        xb = tb.vertices_file @ poses[b][:3, :3].T + poses[b][:3, 3]
        na, nb = normaliser(xa, mode), normaliser(xb, mode)
        ya = (xa - na[:3, 3]) @ np.linalg.inv(na[:3, :3]).T
        yb = (xb - nb[:3, 3]) @ np.linalg.inv(nb[:3, :3]).T
        errs.append(nearest_point_baseline_error(
            a_aligned=ya, b_aligned=yb, b_faces=tb.faces, b_vertices=tb.vertices_file,
            a_domain=ta.domain, b_domain=tb.domain, b_to_file=np.linalg.inv(poses[b]) @ nb).mean())
    return float(np.mean(errs))


def rotation_residual(names, truth, poses) -> np.ndarray:
    """Degrees between each shape's (aligned <- domain) rotation and the cohort's mean one."""
    rs = []
    for n in names:
        m = (poses[n] @ truth[n].pose)[:3, :3]
        rs.append(m / np.cbrt(np.linalg.det(m)))
    rot = Rotation.from_matrix(np.array(rs))
    return np.degrees(np.linalg.norm((rot.mean().inv() * rot).as_rotvec(), axis=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the --out folder of bench/rasm_lv.py")
    p.add_argument("--tag", required=True, help="the run's tag (folder run-TAG)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    out = Path(args.out)
    meshes, manifest = load_groomed(out / f"run-{args.tag}" / "groomed")
    names = [s["name"] for s in manifest["shapes"]]
    truth = load_truth(out / "cohort")
    groomed = {s["name"]: np.asarray(s["transform"]) for s in manifest["shapes"]}
    true = {n: np.linalg.inv(truth[n].pose) for n in names}
    c_rot = consensus_rotations(meshes, rounds=args.rounds)
    consensus = {n: rotation_about(r, m.centroid) @ groomed[n]
                 for n, m, r in zip(names, meshes, c_rot)}
    print(f"nearest-point baseline (mm) | grooming pose | after {args.rounds} consensus rounds | "
          "true pose")
    for mode in ("none", "isotropic", "per-axis", "pca"):
        print(f"{mode:>27} | {baseline(names, truth, groomed, mode):.2f} | "
              f"{baseline(names, truth, consensus, mode):.2f} | "
              f"{baseline(names, truth, true, mode):.2f}")
    for what, poses in (("grooming", groomed), (f"{args.rounds} consensus rounds", consensus)):
        res = rotation_residual(names, truth, poses)
        print(f"rotation residual after {what}: median {np.median(res):.2f} deg, mean "
              f"{res.mean():.2f}, max {res.max():.1f}")


if __name__ == "__main__":
    main()
