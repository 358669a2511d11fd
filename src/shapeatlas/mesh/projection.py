"""Projection of shapes in atlas topology onto valid meshes: the last step of every shape the
package writes in atlas topology (`sample`, `reconstruct`, `correspond`).

A decoded or matched shape shares the atlas's faces, so it is closed and 2-manifold by
construction; what can fail is geometry: a thin part (a liver lobe a few mm thick) whose two
sheets cross, faces turned over or collapsed. `project_valid` removes those failures with the
smallest local change it finds, and leaves a valid shape untouched:

1. The atlas (a valid mesh with the same faces) is mapped onto the shape by the least-squares
   similarity (rotation, scale, translation: it keeps every angle, so the mapped atlas is valid;
   an affine map could flatten a fold below the check's angle), and the shape is written as
   that mapped atlas plus a displacement per vertex.
2. Around the failing faces (self-intersecting, touching or folded flat, degenerate, or turned
   over against the atlas), the displacement is smoothed over the atlas graph, on a region grown
   by one ring every round. A locally smooth displacement of a valid mesh keeps its sheets apart.
3. Where smoothing alone does not succeed, the displacement in the region is halved every round,
   moving it towards the mapped atlas, which is valid.

Everything outside the failing regions is untouched, so the population's distribution is the
model's except where a shape had to change to be valid; `ProjectionReport` records how far each
shape moved. Written here because no mesh library offers a repair that keeps the connectivity
(vertex correspondence) fixed: libigl's and CGAL's repairs re-triangulate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.validity import (
    degenerate_mask,
    inverted_faces,
    self_intersecting_faces,
)

#: Rounds that only smooth the displacement, then rounds that also halve it.
SMOOTH_ROUNDS = 12
SHRINK_ROUNDS = 12
#: Smoothing steps per round and their weight (Jacobi steps towards the neighbours' mean); few
#: steps per round move the vertices least (on liver samples, 3 steps moved them 0.7 mm on
#: average where 10 steps moved them 1.0 mm).
SMOOTH_STEPS = 3
SMOOTH_WEIGHT = 0.5


@dataclass(frozen=True)
class ProjectionReport:
    """What `project_valid` did to one shape.

    changed: vertices moved (0 for a shape that was already valid).
    max_move_mm / mean_move_mm: largest and mean move of the moved vertices (0 when none).
    valid: the result passes the geometric checks (always, unless the reference fails them; the
        shape is then returned unchanged).
    rounds: rounds of smoothing it took; beyond `SMOOTH_ROUNDS` the displacement was also halved,
        and `SMOOTH_ROUNDS + SHRINK_ROUNDS + 1` means the mapped atlas itself was used.
    """

    changed: int = 0
    max_move_mm: float = 0.0
    mean_move_mm: float = 0.0
    valid: bool = True
    rounds: int = 0

    def as_dict(self) -> dict:
        return {"changed_vertices": self.changed, "max_move_mm": round(self.max_move_mm, 4),
                "mean_move_mm": round(self.mean_move_mm, 4), "rounds": self.rounds}


def failing_faces(vertices: np.ndarray, faces: np.ndarray, reference: np.ndarray, *,
                  active: np.ndarray | None = None) -> np.ndarray:
    """Faces that make a shape with the reference's faces invalid: self-intersecting (touching
    and folded flat included), degenerate, or turned over against `reference`. active: optional
    (F,) mask; only pairs with an active face are tested for intersections. -> (n,) indices"""
    bad = np.zeros(len(faces), dtype=bool)
    bad[self_intersecting_faces(vertices, faces, active=active)] = True
    bad |= degenerate_mask(vertices, faces)
    bad[inverted_faces(vertices, faces, reference)] = True
    return np.flatnonzero(bad)


def _fit_similarity(reference: np.ndarray, target: np.ndarray) -> np.ndarray:
    """reference mapped onto target by the least-squares similarity (rotation, scale and
    translation), which keeps every angle: a valid reference stays valid. (K, 3) x2 -> (K, 3)"""
    a, b = reference - reference.mean(0), target - target.mean(0)
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    scale = (s[0] + s[1] + d * s[2]) / max(float((a ** 2).sum()), np.finfo(float).tiny)
    return scale * a @ rot + target.mean(0)


class Projector:
    """`project_valid` for many shapes with one set of faces and one reference (the atlas).
    `reference_valid` says whether the reference passes the checks; only then is every result
    guaranteed valid (an atlas that crosses itself is smoothed apart first by the caller, e.g.
    with `remesh.untangle`)."""

    def __init__(self, faces: np.ndarray, reference: np.ndarray):
        self.faces = np.asarray(faces, dtype=np.int64)
        self.reference = np.asarray(reference, dtype=np.float64)
        k = len(self.reference)
        adj = geo.vertex_adjacency(self.faces, k).astype(np.float64)
        deg = np.maximum(np.asarray(adj.sum(axis=1)).ravel(), 1.0)
        self._adj = adj.tocsr()
        self._mean = (adj.multiply(1.0 / deg[:, None])).tocsr()  # neighbours' mean
        self.reference_valid = len(failing_faces(self.reference, self.faces,
                                                 self.reference)) == 0

    def _grow(self, mask: np.ndarray, rings: int) -> np.ndarray:
        for _ in range(rings):
            mask = mask | ((self._adj @ mask.astype(np.float64)) > 0)
        return mask

    def __call__(self, vertices: np.ndarray) -> tuple[np.ndarray, ProjectionReport]:
        """One shape (K, 3) -> (valid shape (K, 3), report). A valid shape comes back as is."""
        x = np.asarray(vertices, dtype=np.float64)
        f = self.faces
        bad = failing_faces(x, f, self.reference)
        if len(bad) == 0:
            return x, ProjectionReport()
        base = _fit_similarity(self.reference, x)
        d = x - base
        region = np.zeros(len(x), dtype=bool)
        v, rounds = x, SMOOTH_ROUNDS + SHRINK_ROUNDS + 1
        for r in range(SMOOTH_ROUNDS + SHRINK_ROUNDS):
            seed = np.zeros(len(x), dtype=bool)
            seed[f[bad].ravel()] = True
            region |= self._grow(seed, 1 + r // 2)
            for _ in range(SMOOTH_STEPS):
                d[region] += SMOOTH_WEIGHT * ((self._mean @ d)[region] - d[region])
            if r >= SMOOTH_ROUNDS:
                d[region] *= 0.5
            v = x.copy()  # outside the region, the shape bit for bit
            v[region] = base[region] + d[region]
            active = region[f].any(axis=1)
            bad = failing_faces(v, f, self.reference, active=active)
            if len(bad) == 0:
                rounds = r + 1
                break
        if len(bad):
            if not self.reference_valid:  # nothing valid to fall back on: keep the shape
                return x, ProjectionReport(changed=0, valid=False, rounds=rounds)
            v = base  # the mapped atlas itself, valid since the atlas is
            bad = failing_faces(v, f, self.reference)
        move = np.linalg.norm(v - x, axis=1)
        moved = move > 0
        return v, ProjectionReport(changed=int(moved.sum()), max_move_mm=float(move.max()),
                                   mean_move_mm=float(move[moved].mean()) if moved.any() else 0.0,
                                   valid=len(bad) == 0, rounds=rounds)


def project_valid(vertices: np.ndarray, faces: np.ndarray, reference: np.ndarray
                  ) -> tuple[np.ndarray, list[ProjectionReport]]:
    """Shapes (S, K, 3) or (K, 3) with the faces of the valid `reference` (K, 3) -> (the same
    shapes made valid, one report per shape). See the module docstring."""
    x = np.asarray(vertices, dtype=np.float64)
    single = x.ndim == 2
    proj = Projector(faces, reference)
    out, reports = [], []
    for shape in (x[None] if single else x):
        v, rep = proj(shape)
        out.append(v)
        reports.append(rep)
    res = np.stack(out)
    return (res[0] if single else res), reports
