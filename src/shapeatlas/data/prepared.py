"""A fit's training shapes kept on disk and read back one at a time: memory bounded by the batch.

`AtlasModel.fit` reads every training shape many times: for the cohort's normalisation, the
initial atlas, each epoch, each atlas re-estimation and the matching for the generator. Held
in memory with their graphs, the shapes cost about 0.8 MiB each (2.2 GiB at 1,000 LVs of
2,000 vertices), so a cohort of tens of thousands would not fit. Read from the user's files
each time, every access would pay the reading and the evening-out of the edges again: about
30 ms a shape, a fifth of a training step.

`PreparedMeshes` prepares each shape once (`remesh.even_out` where the fit evens edges) and
keeps it in a `DiskCache` folder by content: the run's `prepared/` while the fit runs, or a
temporary folder. It reads each shape back (about a millisecond) whenever it is asked for,
so a fit holds only the shapes of the step it is on. A resumed fit finds the prepared shapes
where it left them.

Written here rather than with a dataset library: torch's `Dataset` is only an interface, and
PyG's datasets store the processed graphs, which here depend on the cohort's normalisation,
known only after every shape is prepared. PyG's in-memory datasets also save `torch.save`
pickles, which shapeatlas never loads.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np

from shapeatlas.data.cache import DiskCache, Entry, array_digest
from shapeatlas.errors import MeshError, ShapeAtlasError
from shapeatlas.mesh.core import Mesh, MeshSequence
from shapeatlas.mesh.remesh import even_out

log = logging.getLogger(__name__)

#: The run folder's subfolder that holds the prepared shapes while a fit runs.
PREPARED_NAME = "prepared"
#: The cache kind of a prepared shape (`DiskCache.key`).
PREPARED_KIND = "prepared"


class PreparedMeshes(MeshSequence):
    """The training shapes, each prepared once and read back from `cache` when asked for.

    source: the training meshes (a list, or a `MeshSequence` read one at a time), read once
    here; later only if a prepared shape goes missing from the folder.
    cache: where the prepared shapes are kept.
    even_edges: prepare each shape by `remesh.even_out` (the fit's `model.even_edges`), else
    keep it as it is.
    progress: called with (shapes done, shapes) after each shape.
    """

    def __init__(self, source: Sequence[Mesh], cache: DiskCache, *, even_edges: bool,
                 progress: Callable[[int, int], None] | None = None):
        self.source, self.cache, self.even_edges = source, cache, even_edges
        self.names: list[str] = []
        self.keys: list[str] = []
        made = 0
        for i, mesh in enumerate(source):
            key = self._key(mesh)
            if self._load(key, mesh.name) is None:
                self.cache.put(key, self._prepare(mesh))
                made += 1
            self.names.append(mesh.name)
            self.keys.append(key)
            if progress:
                progress(i + 1, len(source))
        log.info("%d training shapes prepared in %s (%d found there already)", len(self.keys),
                 cache.root, len(self.keys) - made)

    def _key(self, mesh: Mesh) -> str:
        return DiskCache.key(PREPARED_KIND, ("shapeatlas.mesh",), {"even_edges": self.even_edges},
                             array_digest([mesh.vertices, mesh.faces]))

    def _prepare(self, mesh: Mesh) -> Entry:
        out = even_out(mesh) if self.even_edges else mesh
        return Entry({"vertices": np.asarray(out.vertices, dtype=np.float64),
                      "faces": np.asarray(out.faces, dtype=np.int64)}, {})

    def _load(self, key: str, name: str) -> Mesh | None:
        """The prepared shape under `key`, or None (absent, unreadable or malformed)."""
        entry = self.cache.get(key)
        if entry is None:
            return None
        try:
            v, f = entry.arrays["vertices"], entry.arrays["faces"]
            if v.dtype != np.float64 or not np.isfinite(v).all():
                raise MeshError(name, "non-finite or non-float64 vertices")
            return Mesh(v, f, name=name)
        except (KeyError, MeshError) as exc:
            log.warning("prepared shape %s malformed (%s): preparing it again", name, exc)
            return None

    def _read(self, i: int) -> Mesh:
        mesh = self._load(self.keys[i], self.names[i])
        if mesh is not None:
            return mesh
        # Removed or damaged since: prepared again from its source, if that is unchanged.
        source = self.source[i]
        if self._key(source) != self.keys[i]:
            raise ShapeAtlasError(f"{self.names[i]}: the training shape changed while the fit "
                                  "ran; fit again")
        entry = self._prepare(source)
        self.cache.put(self.keys[i], entry)
        return Mesh(entry.arrays["vertices"], entry.arrays["faces"], name=self.names[i])
