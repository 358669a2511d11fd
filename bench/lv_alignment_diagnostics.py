"""Diagnostics: where the LV ground-truth correspondence error comes from (issue 3).

Works on a `--organ kidney` run of `bench/rasm_lv.py` too (the twist is then about the kidney's
long axis, domain x).

On a folder written by `bench/rasm_lv.py` (OUT/cohort + OUT/run-TAG/groomed):
1. The rigid + nearest-point baseline with different per-shape normalisations (none, isotropic
   scale, per-axis scale in the aligned frame, PCA whitening), once with the grooming poses and
   once with the true poses: an estimate of what a purely geometric, proportional matching can
   reach, and of how much the pose residual costs.
2. The same with the poses after a few rounds of consensus re-alignment
   (`shapeatlas.mesh.align.consensus_rotations`, groom's `--consensus-rounds`), and with the
   poses that generalised Procrustes analysis gives on the TRUE correspondences (an oracle: the
   best pose any correspondence-based alignment could reach). Every pose's rotation residual
   against the truth, split into the twist about the LV's long axis and the tilt of that axis.
3. `--from-truth`: consensus rounds started from the true poses, to see whether the truth is a
   fixed point of the consensus alignment (then the alignment is stuck, not biased).

    python bench/lv_alignment_diagnostics.py /tmp/shapeatlas-rasm-lv --tag shape
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from shapeatlas.data import load_cohort_truth
from shapeatlas.mesh.align import consensus_rotations, rotation_about
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.groom import load_groomed
from shapeatlas.metrics.correspondence import nearest_point_baseline_error
from shapeatlas.models.multi_atlas import rigid_consensus
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
    """Each shape's (aligned <- domain) rotation relative to the cohort's mean one, as a
    rotation vector in the domain frame (degrees; the long axis is z for the LV, x for the
    kidney). -> (N, 3)"""
    rs = []
    for n in names:
        m = (poses[n] @ truth[n].pose)[:3, :3]
        rs.append(m / np.cbrt(np.linalg.det(m)))
    rot = Rotation.from_matrix(np.array(rs))
    return np.degrees((rot.mean().inv() * rot).as_rotvec())


def describe_residual(v: np.ndarray, axis: int = 2) -> str:
    """Total, twist (about the long axis, domain axis `axis`: 2 for the LV, 0 for the kidney)
    and tilt of rotation vectors (N, 3) in degrees."""
    total, twist = np.linalg.norm(v, axis=1), np.abs(v[:, axis])
    tilt = np.linalg.norm(np.delete(v, axis, axis=1), axis=1)
    return (f"median {np.median(total):.2f} deg (mean {total.mean():.2f}, max {total.max():.1f}); "
            f"twist about the long axis median {np.median(twist):.2f}, tilt median "
            f"{np.median(tilt):.2f}")


def true_correspondence_poses(names, truth, poses, *, n_points: int = 4000,
                              iterations: int = 10, seed: int = 0) -> dict:
    """Oracle poses: generalised Procrustes (rotation + translation) of every shape's points at
    the same random domain coordinates (true correspondences), started from `poses`.
    -> NAME -> (4, 4) file -> aligned."""
    u = np.random.default_rng(seed).normal(size=(n_points, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    pts = {}
    for n in names:
        full = poses[n] @ truth[n].pose
        pts[n] = truth[n].surface(u) @ full[:3, :3].T + full[:3, 3]
    _, extra, _ = rigid_consensus(np.stack([pts[n] for n in names]), iterations=iterations)
    return {n: e @ poses[n] for n, e in zip(names, extra)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the --out folder of bench/rasm_lv.py")
    p.add_argument("--tag", required=True, help="the run's tag (folder run-TAG)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--from-truth", action="store_true",
                   help="also run the consensus rounds from the true poses")
    args = p.parse_args()
    out = Path(args.out)
    meshes, manifest = load_groomed(out / f"run-{args.tag}" / "groomed")
    names = [s["name"] for s in manifest["shapes"]]
    truth = load_cohort_truth(out / "cohort")
    groomed = {s["name"]: np.asarray(s["transform"]) for s in manifest["shapes"]}
    true = {n: np.linalg.inv(truth[n].pose) for n in names}
    axis = type(truth[names[0]]).LONG_AXIS
    c_rot = consensus_rotations(meshes, rounds=args.rounds)
    consensus = {n: rotation_about(r, m.centroid) @ groomed[n]
                 for n, m, r in zip(names, meshes, c_rot)}
    oracle = true_correspondence_poses(names, truth, groomed)
    print(f"nearest-point baseline (mm) | grooming pose | after {args.rounds} consensus rounds | "
          "Procrustes on true correspondences | true pose")
    for mode in ("none", "isotropic", "per-axis", "pca"):
        print(f"{mode:>27} | {baseline(names, truth, groomed, mode):.2f} | "
              f"{baseline(names, truth, consensus, mode):.2f} | "
              f"{baseline(names, truth, oracle, mode):.2f} | "
              f"{baseline(names, truth, true, mode):.2f}")
    for what, poses in (("grooming", groomed), (f"{args.rounds} consensus rounds", consensus),
                        ("Procrustes on true correspondences", oracle)):
        print(f"rotation residual after {what}: "
              f"{describe_residual(rotation_residual(names, truth, poses), axis)}")
    if args.from_truth:
        at_truth = [Mesh(truth[n].vertices_domain, truth[n].faces, name=n) for n in names]
        rots = consensus_rotations(at_truth, rounds=args.rounds)
        v = np.degrees(Rotation.from_matrix(np.array(rots)).as_rotvec())
        print(f"{args.rounds} consensus rounds started from the true poses move them by "
              f"{describe_residual(v, axis)}")


if __name__ == "__main__":
    main()
