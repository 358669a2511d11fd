"""Tiny exact test shapes built in code (importable from any test module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from shapeatlas.data.synthetic_lv import write_lv_cohort
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.groom import GroomOptions, groom_cohort, load_groomed


def asymmetric_blob(n_sub: int = 3, *, seed: int = 0) -> Mesh:
    """A closed, clearly asymmetric shape (ellipsoid with an off-axis bump), in mm."""
    t = trimesh.creation.icosphere(subdivisions=n_sub, radius=1.0)
    v = np.asarray(t.vertices) * np.array([40.0, 25.0, 15.0])
    bump = np.exp(-np.sum((np.asarray(t.vertices) - np.array([0.6, 0.6, 0.5])) ** 2, axis=1) / 0.1)
    v = v * (1.0 + 0.35 * bump)[:, None]
    return Mesh(v, t.faces, name=f"blob{seed}")


#: Two bumps every `bumpy_torus` shares, (relative height, theta, phi, width in radians): the
#: landmarks that fix its turn about its axis.
TORUS_LANDMARKS = ((0.35, 0.0, 0.0, 0.6), (0.3, 2.0, np.pi / 2, 0.6))


def bumpy_torus(major: float, minor: float, *, stretch: float, warp: float, bumps: tuple,
                sections: tuple[int, int]) -> Mesh:
    """A torus about z (radii in mm) whose tube is stretched along z by `stretch`, whose rim
    rises by `6 * warp * cos(theta)` mm, and whose tube radius carries `bumps` (relative height,
    theta, phi, width) plus `TORUS_LANDMARKS`. Its two in-plane principal moments are nearly
    equal, so principal axes say nothing about its turn about z. sections: (around z, around
    the tube), the grid of its triangulation."""
    nu, nv = sections
    th, ph = np.meshgrid(np.arange(nu) * 2 * np.pi / nu, np.arange(nv) * 2 * np.pi / nv,
                         indexing="ij")
    th, ph = th.ravel(), ph.ravel()

    def wrap(a):
        return np.angle(np.exp(1j * a))

    rr = minor * (1 + sum(a * np.exp(-(wrap(th - t0) ** 2 + wrap(ph - p0) ** 2) / w**2)
                          for a, t0, p0, w in (*bumps, *TORUS_LANDMARKS)))
    ring = major + rr * np.cos(ph)
    v = np.stack([ring * np.cos(th), ring * np.sin(th),
                  stretch * rr * np.sin(ph) + 6 * warp * np.cos(th)], axis=1)
    i = np.arange(nu * nv).reshape(nu, nv)
    j, k = np.roll(i, -1, axis=0), np.roll(i, -1, axis=1)
    jk = np.roll(j, -1, axis=1)
    f = np.concatenate([np.stack([i, j, jk], -1).reshape(-1, 3),
                        np.stack([i, jk, k], -1).reshape(-1, 3)])
    return Mesh(v, f, name="torus")


def groomed_lv_cohort(root: Path, *, n: int, seed: int):
    """A small two-phenotype synthetic LV cohort (1,000-1,200 vertices) in root/raw, groomed to
    500 vertices in root/groomed. -> (meshes, manifest) of the groomed folder."""
    write_lv_cohort(root / "raw", n=n, seed=seed, phenotypes="mixed", n_vertices=(1000, 1200))
    groom_cohort(root / "raw", root / "groomed", GroomOptions(target_vertices=500, n_jobs=1))
    return load_groomed(root / "groomed")


def icosphere(radius: float, subdivisions: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and faces of an origin-centred icosphere (trimesh)."""
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.array(s.vertices), np.array(s.faces)


def inscribed_radius(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Smallest distance from the origin to a face plane of a convex, origin-centred mesh."""
    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    return float(np.abs(np.einsum("ij,ij->i", n, tri[:, 0])).min())
