"""shapeatlas: statistical shape atlases and virtual populations from anatomical surface meshes.

The top level re-exports the objects most users need; everything else lives in topic modules
(`shapeatlas.mesh`, `shapeatlas.data`, `shapeatlas.metrics`).
"""

from shapeatlas.errors import MeshError, ShapeAtlasError
from shapeatlas.mesh import Mesh, read_mesh, write_mesh

__version__ = "0.1.0"

__all__ = ["Mesh", "MeshError", "ShapeAtlasError", "read_mesh", "write_mesh", "__version__"]
