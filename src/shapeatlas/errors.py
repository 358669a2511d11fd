"""Exceptions raised by shapeatlas.

Every error about a user's file names the file (or the mesh's name) and the problem, so a CLI can
print it as one line instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class ShapeAtlasError(Exception):
    """Base class of every error shapeatlas raises on purpose."""


class MeshError(ShapeAtlasError, ValueError):
    """A mesh (or the file it came from) cannot be used, and why.

    Parameters
    ----------
    source:
        The file path or mesh name the problem belongs to.
    problem:
        What is wrong, phrased so that the user knows what to fix.
    """

    def __init__(self, source: str | Path, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class OpenMeshError(MeshError):
    """A quantity that needs a closed surface (enclosed volume) was asked of an open mesh."""
