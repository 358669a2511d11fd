"""shapeatlas: statistical shape atlases and virtual populations from anatomical surface meshes.

The top level re-exports the objects most users need; everything else lives in topic modules
(`shapeatlas.mesh`, `shapeatlas.data`, `shapeatlas.metrics`, `shapeatlas.models`).

    import shapeatlas
    model = shapeatlas.load_run("RUN")            # any run folder that `shapeatlas fit` wrote
    samples = model.sample(100)
    codes = model.encode(meshes)                  # (B, D) latent codes; model.decode(codes)

The estimators and the functions behind the verbs pull in torch, which takes seconds to import,
so they are resolved on first use (PEP 562 `__getattr__`): `import shapeatlas` and the command
line's `--help` stay fast.
"""

from importlib import import_module

from shapeatlas.errors import MeshError, ShapeAtlasError
from shapeatlas.mesh import Mesh, as_mesh, read_mesh, write_mesh

__version__ = "0.1.0"

#: Name -> (module, attribute) of the objects imported on first use.
_LAZY = {
    "load_run": ("shapeatlas.runs.load", "load_model"),
    "fit_run": ("shapeatlas.runs.fit", "fit_run"),
    "correspond_files": ("shapeatlas.runs.correspond", "correspond_files"),
    "sample_run": ("shapeatlas.runs.sample", "sample_run"),
    "reconstruct_files": ("shapeatlas.runs.reconstruct", "reconstruct_files"),
    "evaluate_run": ("shapeatlas.runs.evaluate", "evaluate_run"),
    "run_demo": ("shapeatlas.runs.demo", "run_demo"),
    "groom_cohort": ("shapeatlas.mesh.groom", "groom_cohort"),
    "GroomOptions": ("shapeatlas.mesh.groom", "GroomOptions"),
    "AtlasModel": ("shapeatlas.models.atlas", "AtlasModel"),
    "MultiAtlasModel": ("shapeatlas.models.multi_atlas", "MultiAtlasModel"),
    "CPDPCAModel": ("shapeatlas.models.cpd_pca", "CPDPCAModel"),
    "FitConfig": ("shapeatlas.training.config", "FitConfig"),
    "MatchConfig": ("shapeatlas.training.config", "MatchConfig"),
    "ModelConfig": ("shapeatlas.training.config", "ModelConfig"),
    "TrainingConfig": ("shapeatlas.training.config", "TrainingConfig"),
    "GeneratorConfig": ("shapeatlas.training.config", "GeneratorConfig"),
    "ClusterConfig": ("shapeatlas.training.config", "ClusterConfig"),
    "GroomConfig": ("shapeatlas.training.config", "GroomConfig"),
    "CPDConfig": ("shapeatlas.training.config", "CPDConfig"),
    "mesh_validity": ("shapeatlas.mesh.validity", "mesh_validity"),
    "Samples": ("shapeatlas.models.generative", "Samples"),
    "Codes": ("shapeatlas.models.generative", "Codes"),
    "Correspondence": ("shapeatlas.models.atlas", "Correspondence"),
    "compactness": ("shapeatlas.metrics.ssm", "compactness"),
    "generalization": ("shapeatlas.metrics.ssm", "generalization"),
    "specificity": ("shapeatlas.metrics.ssm", "specificity"),
    "plausibility": ("shapeatlas.metrics.ssm", "plausibility"),
    "chamfer_distance": ("shapeatlas.metrics.surface", "chamfer_distance"),
    "hausdorff_distance": ("shapeatlas.metrics.surface", "hausdorff_distance"),
    "hausdorff95": ("shapeatlas.metrics.surface", "hausdorff95"),
    "mesh_surface_distances": ("shapeatlas.metrics.surface", "mesh_surface_distances"),
    "point_to_surface_distance": ("shapeatlas.metrics.surface", "point_to_surface_distance"),
    "correspondence_error": ("shapeatlas.metrics.correspondence", "correspondence_error"),
}

__all__ = ["Mesh", "MeshError", "ShapeAtlasError", "as_mesh", "read_mesh", "write_mesh",
           "__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'shapeatlas' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = getattr(import_module(module), attr)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
