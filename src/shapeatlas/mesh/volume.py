"""Tetrahedral (volume) meshes of closed surfaces, with TetGen as an optional dependency.

Build vs buy: tetrahedralising a surface with its boundary preserved is a research code of its
own; TetGen is the standard one and has a small pip wheel (`tetgen`, the Python binding is MIT,
TetGen itself AGPL-3.0), so it is an optional extra (`pip install 'shapeatlas[volume]'`) and
never a hard dependency. fTetWild (`pytetwild`, MPL-2.0) would also mesh invalid surfaces, but it
needs pyvista+vtk (about 660 MB).

TetGen runs in a child process: on an exactly degenerate surface (two edges meeting exactly)
TetGen 1.6 (wheel 0.8.4) crashes the interpreter (segmentation fault) instead of raising, and then
writes `*_skipped.face/.node` files into the current folder. The child works in a temporary
folder and a crash becomes a `MeshError` for that one surface.
"""

from __future__ import annotations

import io
import os
import select
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import meshio
import numpy as np

from shapeatlas.atomic import write_atomic
from shapeatlas.errors import MeshError, ShapeAtlasError
from shapeatlas.mesh.core import Mesh

#: Seconds TetGen may take for one surface before its process is killed and the surface is
#: reported (a few thousand faces take well under a second).
MESH_TIMEOUT_S = 300.0

#: What to install for volume meshing (TetGen is AGPL-3.0).
INSTALL_HINT = "pip install 'shapeatlas[volume]'"

#: The child process: reads length-prefixed .npz requests (vertices, faces) on stdin, answers
#: b"o" + .npz (points, tets) or b"e" + TetGen's message on the original stdout; TetGen's own
#: printing goes to /dev/null. Plain arrays both ways, never pickle.
_WORKER = """
import io, os, struct, sys
import numpy as np
import tetgen
out = os.fdopen(os.dup(1), "wb")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
inp = sys.stdin.buffer
def send(tag, data):
    out.write(tag + struct.pack("<Q", len(data)) + data)
    out.flush()
while True:
    head = inp.read(8)
    if len(head) < 8:
        break
    req = np.load(io.BytesIO(inp.read(struct.unpack("<Q", head)[0])), allow_pickle=False)
    try:
        nodes, elems, *_ = tetgen.TetGen(req["vertices"], req["faces"]).tetrahedralize(
            quality=False)
    except Exception as exc:
        send(b"e", (str(exc) or type(exc).__name__).encode())
        continue
    buf = io.BytesIO()
    np.savez(buf, points=np.asarray(nodes, dtype=np.float64),
             tets=np.asarray(elems, dtype=np.int64))
    send(b"o", buf.getvalue())
"""


def require_mesher(what: str = "volume meshing") -> None:
    """Raise `ShapeAtlasError` with one line saying what to install if TetGen is missing."""
    try:
        import tetgen  # noqa: F401
    except ImportError:
        raise ShapeAtlasError(f"{what} needs the optional mesher: {INSTALL_HINT}") from None


class Tetrahedralizer:
    """A TetGen child process that meshes one surface per call; use as a context manager so a
    cohort pays the process start once.

    >>> with Tetrahedralizer() as mesher:  # doctest: +SKIP
    ...     points, tets = mesher(mesh)
    """

    def __init__(self) -> None:
        require_mesher()
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="shapeatlas-tetgen-")
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, "-c", _WORKER], cwd=self._tmp.name,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL)
        return self._proc

    def _ask(self, v: np.ndarray, f: np.ndarray) -> tuple[bytes, bytes] | None:
        """(tag, data) of TetGen's answer; None when it crashed; (b"t", b"") past the timeout."""
        proc = self._start()
        buf = io.BytesIO()
        np.savez(buf, vertices=v, faces=f)
        try:
            proc.stdin.write(struct.pack("<Q", buf.getbuffer().nbytes) + buf.getvalue())
            proc.stdin.flush()
            if os.name == "posix" and not select.select([proc.stdout], [], [], MESH_TIMEOUT_S)[0]:
                proc.kill()
                self._stop()
                return b"t", b""
            head = proc.stdout.read(9)
            if len(head) < 9:
                raise BrokenPipeError
            data = proc.stdout.read(struct.unpack("<Q", head[1:])[0])
        except (BrokenPipeError, OSError):
            self._stop()
            return None
        return head[:1], data

    def __call__(self, mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
        """Tetrahedralise the closed surface `mesh` (its vertices stay, on its boundary).

        -> points (P, 3) (the surface's V vertices first), tets (T, 4) vertex indices.
        Raises `MeshError` naming the mesh with TetGen's reason when TetGen refuses it.
        """
        answer = self._ask(np.ascontiguousarray(mesh.vertices, dtype=np.float64),
                           np.ascontiguousarray(mesh.faces, dtype=np.int32))
        if answer is None:
            raise MeshError(mesh.name, "the volume mesher (TetGen) crashed on this surface")
        tag, data = answer
        if tag == b"t":
            raise MeshError(mesh.name, f"the volume mesher (TetGen) did not finish within "
                            f"{MESH_TIMEOUT_S:.0f} s")
        if tag == b"e":
            reason = data.decode(errors="replace").strip().rstrip(".") or "no reason given"
            raise MeshError(mesh.name, f"the volume mesher (TetGen) refused it: {reason}")
        out = np.load(io.BytesIO(data), allow_pickle=False)
        points, tets = out["points"], out["tets"]
        if len(tets) == 0:
            raise MeshError(mesh.name, "the volume mesher (TetGen) produced no tetrahedra")
        return points, tets

    def _stop(self) -> None:
        if self._proc is not None:
            for stream in (self._proc.stdin, self._proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def close(self) -> None:
        self._stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "Tetrahedralizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tetrahedralize(mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Tetrahedral mesh of one closed surface. -> points (P, 3), tets (T, 4).

    Raises `MeshError` with the mesher's reason when it refuses the surface, and
    `ShapeAtlasError` saying what to install when TetGen is missing. For many surfaces use one
    `Tetrahedralizer` (one child process for all).
    """
    with Tetrahedralizer() as mesher:
        return mesher(mesh)


def tet_volumes(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Signed volume of each tetrahedron. points (P, 3), tets (T, 4) -> (T,)"""
    p = np.asarray(points, dtype=np.float64)[np.asarray(tets)]
    return np.einsum("ij,ij->i", p[:, 1] - p[:, 0],
                     np.cross(p[:, 2] - p[:, 0], p[:, 3] - p[:, 0])) / 6.0


def write_vtu(path: str | Path, points: np.ndarray, tets: np.ndarray) -> None:
    """Write a tetrahedral mesh as VTK XML unstructured grid (.vtu), atomically."""
    grid = meshio.Mesh(np.asarray(points, dtype=np.float64),
                       [("tetra", np.asarray(tets, dtype=np.int64))])
    write_atomic(path, lambda tmp: meshio.write(tmp, grid, file_format="vtu"))
