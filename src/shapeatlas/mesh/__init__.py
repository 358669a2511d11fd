"""Meshes: the `Mesh` container, file I/O, label-map surfaces, pure geometry and grooming."""

from shapeatlas.mesh.core import Mesh, as_mesh
from shapeatlas.mesh.io import read_mesh, write_mesh

__all__ = ["Mesh", "as_mesh", "read_mesh", "write_mesh"]
