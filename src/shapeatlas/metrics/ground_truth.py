"""Ground-truth correspondence scores for cohorts whose truth is known (the synthetic
generators, the real-warp benchmark): the error between matched atlas vertices across pairs of
shapes, the rigid nearest-point baseline, and how closely matched points cover a surface."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from shapeatlas.metrics.correspondence import (
    nearest_point_baseline_error,
    paired_atlas_error,
)
from shapeatlas.metrics.surface import mesh_surface_distances

log = logging.getLogger(__name__)


def consecutive_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """(shape i, shape i+1) for every i, wrapping around: each shape is a source once."""
    return list(zip(names, names[1:] + names[:1]))


def atlas_pair_errors(points: dict, truth: dict, names: Sequence[str]) -> list[np.ndarray]:
    """Ground-truth error of atlas correspondences on consecutive pairs of a synthetic cohort.

    points: NAME -> (K, 3) atlas points in that file's frame; truth: from `load_truth`.
    -> per pair, (K,) distances in mm (see `metrics.correspondence.paired_atlas_error`).
    """

    return [paired_atlas_error(points[a], points[b], a_vertices=truth[a].vertices_file,
                               a_faces=truth[a].faces, a_domain=truth[a].domain,
                               b_vertices=truth[b].vertices_file, b_faces=truth[b].faces,
                               b_domain=truth[b].domain)
            for a, b in consecutive_pairs(names)]


def surface_matching(meshes: Sequence, corr: Sequence, atlas_faces: np.ndarray) -> dict:
    """Mean surface Chamfer and Hausdorff (mm) between each input mesh and its matched shape
    (the atlas faces on its correspondence points), vertex-to-triangle both ways and
    area-weighted (`metrics.surface.mesh_surface_distances`). `Correspondence.chamfer_mm` and
    `hausdorff_mm` are vertex-to-vertex, like the paper's: a point inside a large flat triangle
    of the input (a QSlim-decimated LV cap has no vertex inside its rim) is as far from every
    vertex as the triangle is wide, though it lies on the surface. -> {"surface_chamfer_mm",
    "surface_hausdorff_mm"}"""

    d = [mesh_surface_distances(m, (c.points, atlas_faces)) for m, c in zip(meshes, corr)]
    return {"surface_chamfer_mm": float(np.mean([x.chamfer for x in d])),
            "surface_hausdorff_mm": float(np.mean([x.hausdorff for x in d]))}


def baseline_pair_errors(transforms: dict, truth: dict, names: Sequence[str]) -> list[np.ndarray]:
    """The same pairs for "rigid alignment (transforms: file -> aligned), then nearest point".

    -> per pair, (V_A,) distances in mm, one per vertex of the source shape.
    """

    out = []
    for a, b in consecutive_pairs(names):
        ta, tb, fa, fb = truth[a], truth[b], transforms[a], transforms[b]
        xa, xb = ta.vertices_file, tb.vertices_file
        out.append(nearest_point_baseline_error(
            a_aligned=xa @ fa[:3, :3].T + fa[:3, 3], b_aligned=xb @ fb[:3, :3].T + fb[:3, 3],
            b_faces=tb.faces, b_vertices=xb, a_domain=ta.domain, b_domain=tb.domain,
            b_to_file=np.linalg.inv(fb)))
    return out
