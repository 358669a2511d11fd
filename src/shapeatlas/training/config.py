"""Typed configuration of a fit, by concern: written into every run folder, enough to reproduce it.

A `FitConfig` holds the method, the seed and the device, and one section per concern:

- `model` (`ModelConfig`): what the correspondence network is (features, encoder, atlas size);
- `training` (`TrainingConfig`): how it is trained (epochs, optimiser, loss weights);
- `matching` (`MatchConfig`): how shapes are matched onto the atlas (transport, smoothing, CPD
  refinement, test-time pull, pose refinement). A fitted model keeps the one it was fitted with,
  and `correspond`/`reconstruct` take another one as an argument: nothing changes a fitted model;
- `generator` (`GeneratorConfig`): the β-VAE (or the PCA modes of cpd-pca);
- `clustering` (`ClusterConfig`): several atlases (mAtlas-R-ASMG);
- `grooming` (`GroomConfig`): how `fit` grooms a folder of raw meshes;
- `cpd` (`CPDConfig`): the non-rigid CPD of the cpd-pca baseline.

`FitConfig.to_json()` / `FitConfig.from_json()` round-trip exactly, and the CLI's `--config FILE`
accepts a saved `config.json` or any subset of its sections and fields. Every field has a type
and a range (each section's `SPECS`), checked whenever a config is built (from a file, a model
folder, CLI flags or code); a wrong one raises `ConfigError` naming the field as
`section.field`. The reference page `docs/configuration.md` is generated from the fields'
docstrings and specs by `configuration_markdown()` (`python -m shapeatlas.training.config`).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from shapeatlas.errors import ShapeAtlasError
from shapeatlas.nn.encoder import EncoderConfig
from shapeatlas.nn.rasm import PULL_MOTIONS
from shapeatlas.validate import (
    Bool,
    Choice,
    Float,
    Int,
    IntList,
    Invalid,
    Str,
    read_json,
    shown,
)

#: Format name and version of a saved configuration; bumped when a saved one can no longer be
#: read by older code.
CONFIG_FORMAT = "shapeatlas-config"
CONFIG_VERSION = 1
#: Largest accepted `MatchConfig.pose_relaxation` (larger steps overshoot).
MAX_POSE_RELAXATION = 5.0
#: Upper bound of every iteration, step and epoch count: far beyond real use, low enough that
#: a mistyped number fails at once instead of running for days.
MAX_STEPS = 10_000
#: Largest number of atlases (`ClusterConfig.atlases`, `max_atlases`).
MAX_ATLASES = 64
_WEIGHT = Float(0.0, 1e6)
_RATE = Float(0.0, 10.0, lo_open=True)


class ConfigError(ShapeAtlasError):
    """An invalid configuration; `problems` lists each field's problem as one phrase."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        head = f"{source}: " if source else "invalid fit configuration: "
        super().__init__(head + "; ".join(self.problems))


class Atlases:
    """`ClusterConfig.atlases`: a whole number of atlases or "auto"."""

    def describe(self) -> str:
        return f'"auto" or an integer in [1, {MAX_ATLASES}]'

    def check(self, value: Any) -> int | str:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                               and 1 <= value <= MAX_ATLASES):
            return value
        raise Invalid(f"must be 'auto' or an integer in [1, {MAX_ATLASES}], got {shown(value)}")


class Encoder:
    """`ModelConfig.encoder`: an `EncoderConfig` or its JSON object, each field checked."""

    SPECS = {
        "in_channels": Int(1, 6),
        "widths": IntList(1, 4096, 1, 16),
        "heads": Int(1, 64),
        "latent_dim": Int(1, 4096),
        "norm": Choice(("graph", "layer")),
        "conv": Choice(("reordered", "pyg")),
    }

    def describe(self) -> str:
        return "an object with the fields of `nn.encoder.EncoderConfig`"

    def check(self, value: Any) -> EncoderConfig:
        if isinstance(value, EncoderConfig):
            value = dataclasses.asdict(value)
        if not isinstance(value, dict):
            raise Invalid(f"must be a JSON object, got {shown(value)}")
        unknown = sorted(set(value) - set(self.SPECS))
        if unknown:
            raise Invalid(f"has unknown fields {unknown}")
        checked = {}
        for name, spec in self.SPECS.items():
            if name in value:
                try:
                    checked[name] = spec.check(value[name])
                except Invalid as exc:
                    raise Invalid(f"field '{name}' {exc.problem}") from None
        return EncoderConfig(**checked)


@dataclass(frozen=True)
class _Section:
    """A frozen group of checked fields. Subclasses set `NAME` (the key in a saved config) and
    `SPECS` (field -> spec with `check` and `describe`)."""

    NAME: ClassVar[str] = ""
    SPECS: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        problems = []
        for f in dataclasses.fields(self):
            try:
                object.__setattr__(self, f.name, self.SPECS[f.name].check(getattr(self, f.name)))
            except Invalid as exc:
                problems.append(f"field '{self.NAME}.{f.name}' {exc.problem}")
        if problems:
            raise ConfigError(problems)

    def replace(self, **changes: Any):
        """A copy with some fields changed (None values are ignored, handy for CLI flags)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "config"):
        """A section from its `to_dict` form or any subset of its fields, each checked."""
        if not isinstance(d, dict):
            raise ConfigError([f"field '{cls.NAME}' must be a JSON object, got {shown(d)}"],
                              source)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError([f"section '{cls.NAME}' has unknown fields {unknown}"], source)
        try:
            return cls(**d)
        except ConfigError as exc:
            raise ConfigError(exc.problems, source) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, EncoderConfig):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class ModelConfig(_Section):
    """What the correspondence network is: its input features, encoder, atlas and attention."""

    NAME: ClassVar[str] = "model"
    SPECS: ClassVar[dict[str, Any]] = {
        "features": Choice(("spatial", "hybrid")),
        "normalisation": Choice(("cohort", "shape", "whiten")),
        "encoder": Encoder(),
        "atlas_vertices": Int(100, 100_000),
        "atlas_init": Str(),
        "even_edges": Bool(),
        "sharpness": Float(0.0, 1e8, lo_open=True),
        "smooth_gamma": Float(0.0, 1e4),
        "smooth_iterations": Int(0, 1000),
        "attention_memory_mb": Float(0.0, 1e6, lo_open=True),
        "ssm_modes": Int(0, 1000),
    }

    features: Literal["spatial", "hybrid"] = "hybrid"
    """Node features: coordinates (sGCN) or coordinates + vertex normals (hGCN)."""
    normalisation: Literal["cohort", "shape", "whiten"] = "shape"
    """Coordinates the network sees: "shape", each shape's own centroid and RMS radius
    (size-invariant matching, points mapped back to mm); "whiten", each shape's own centroid and
    covariance (also invariant to stretching along any axis, so shapes of different proportions
    are matched proportionally); "cohort", one centre and scale for the whole cohort."""
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(
        in_channels=6, widths=(32, 32, 64, 64), heads=4, latent_dim=64))
    """Graph VAE architecture (`in_channels` follows `features`). CPU-sized by default."""
    atlas_vertices: int = 1500
    """K: vertices of the atlas (the canonical shape is remeshed to this many)."""
    atlas_init: str = "medoid"
    """"medoid" (the training shape with the least summed Chamfer distance to the others),
    "random" (a training shape drawn with `seed`) or a path to a mesh file in the groomed frame."""
    even_edges: bool = True
    """Give flat parts vertices: the training meshes' edges longer than
    `mesh.remesh.EVEN_EDGE_RATIO` times their median are split (the surface does not move; a
    QSlim-groomed LV's basal cap otherwise has no vertex inside its rim), and the atlas is
    `mesh.remesh.decimate_even` of the canonical shape (QSlim, split, K vertices) instead of a
    shortest-edge collapse to K. The cpd-pca method keeps the shortest-edge collapse."""
    sharpness: float = 1e4
    """lambda: inverse temperature of the attention softmax over the shape's vertices in
    training and the atlas re-estimation (matching uses `MatchConfig.transport_sharpness` when
    it balances the attention)."""
    smooth_gamma: float = 1.0
    """gamma of the graph smoothing h <- (I + gamma D)^-1 (h + gamma A h)."""
    smooth_iterations: int = 2
    """Iterations of that smoothing."""
    attention_memory_mb: float = 256.0
    """Upper bound on the similarity buffers the attention holds at once."""
    ssm_modes: int = 0
    """Groupwise refinement of the correspondences by a point-distribution model (0: off; see
    `models.point_model`). After training, the training shapes' correspondences (attention +
    smoothing) slide along their surfaces, together, towards the mean plus this many principal
    modes, and the model is kept; `correspond` then slides each shape's points towards it before
    the test-time pull, and the generator learns from the shapes refined that way (matched on
    the original files when `groom.json` names them). A model that raises the training shapes'
    mean Chamfer distance by more than 5% is not kept (`AtlasModel.fit_point_model`). Fewer than
    the training shapes minus one; single-atlas R-ASM only. Measured in docs/results.md:
    0.16-0.24 mm less ground-truth error on the synthetic LVs and kidneys with 4 modes, but worse
    matching of held-out real livers, hence off by default."""

    def __post_init__(self) -> None:
        super().__post_init__()
        want = 6 if self.features == "hybrid" else 3
        if self.encoder.in_channels != want:
            object.__setattr__(self, "encoder",
                               dataclasses.replace(self.encoder, in_channels=want))


@dataclass(frozen=True)
class TrainingConfig(_Section):
    """How the correspondence network is trained: rounds, epochs, optimiser and loss weights."""

    NAME: ClassVar[str] = "training"
    SPECS: ClassVar[dict[str, Any]] = {
        "atlas_rounds": Int(1, 100),
        "epochs": Int(1, MAX_STEPS),
        "batch_size": Int(1, 4096),
        "lr": _RATE,
        "lr_decay": Float(0.0, 1.0, lo_open=True),
        "grad_clip": Float(0.0, 1e6, lo_open=True),
        "patience": Int(0, MAX_STEPS),
        "min_delta": Float(0.0, 1.0),
        "checkpoint_every": Int(1, MAX_STEPS),
        "w_chamfer": _WEIGHT, "w_recon": _WEIGHT, "w_kl": _WEIGHT, "w_normal": _WEIGHT,
        "w_laplacian": _WEIGHT, "w_edge": _WEIGHT,
        "ssm_rounds": Int(1, MAX_STEPS),
    }

    atlas_rounds: int = 2
    """Training rounds; after each but the last the atlas is re-estimated as the vertex-wise mean
    of the refined normalised shapes."""
    epochs: int = 25
    """Epochs per atlas round (an upper bound: early stopping may end a round sooner), so a fit
    trains for at most `atlas_rounds` x `epochs` epochs. On both 50-LV cohorts 25 gave
    ground-truth errors within 0.03 mm of 30's in 5/6 of the training time."""
    batch_size: int = 4
    """Shapes packed into one training step."""
    lr: float = 1e-3
    """Adam (amsgrad) learning rate."""
    lr_decay: float = 0.97
    """Multiplicative learning-rate decay per epoch."""
    grad_clip: float = 1.0
    """Gradient-norm clip applied before every optimiser step."""
    patience: int = 8
    """Epochs without a relative improvement of `min_delta` before a round stops early."""
    min_delta: float = 1e-3
    """Relative loss improvement that counts for early stopping."""
    checkpoint_every: int = 1
    """Epochs between checkpoints (and `--resume` points)."""
    w_chamfer: float = 1.0
    """Weight of Chamfer(input, refined normalised shape) (squared, normalised units)."""
    w_recon: float = 0.1
    """Weight of the L1 reconstruction of the node features by the VAE decoder."""
    w_kl: float = 1e-4
    """Weight of the per-vertex KL divergence of the VAE posterior."""
    w_normal: float = 0.01
    """Weight of the normal consistency of the refined shape on the atlas faces."""
    w_laplacian: float = 0.1
    """Weight of the Laplacian smoothness of the refined shape (L_Ref)."""
    w_edge: float = 0.1
    """Weight of the edge-length regulariser of the refined shape (L_Ref)."""
    ssm_rounds: int = 20
    """Rounds of the point-distribution model's groupwise refinement (`ModelConfig.ssm_modes`;
    fewer once the points stop moving)."""


@dataclass(frozen=True)
class MatchConfig(_Section):
    """How a shape is matched onto the atlas: attention (balanced by transport), smoothing of
    the match, CPD refinement, the pull onto the surface, pose refinement.

    A fit uses its config's `matching` for the shapes the generator learns from and a
    multi-atlas run's clusters; `correspond`, `reconstruct` and the CLI's `--matching FILE` take
    another one without touching the fitted model (training and the atlas re-estimation use
    none of these settings except `refine_steps` and `refine_lr`, for the free pull of the
    atlas re-estimation). `MatchConfig.paper()` is the matching of Atlas-R-ASMG as published.
    """

    NAME: ClassVar[str] = "matching"
    SPECS: ClassVar[dict[str, Any]] = {
        "transport_iterations": Int(0, MAX_STEPS),
        "transport_relaxation": Float(1.0, 2.0, hi_open=True),
        "transport_sharpness": Float(0.0, 1e8, lo_open=True),
        "deformation_smoothing": Int(0, MAX_STEPS),
        "surface_cpd_iterations": Int(0, MAX_STEPS),
        "surface_cpd_beta": Float(0.0, 1e3, lo_open=True),
        "refine_motion": Choice(PULL_MOTIONS),
        "refine_steps": Int(0, MAX_STEPS),
        "normal_refine_steps": Int(0, MAX_STEPS),
        "refine_lr": _RATE,
        "pose_iterations": Int(0, 1000),
        "pose_relaxation": Float(0.0, MAX_POSE_RELAXATION, lo_open=True),
        "ssm_iterations": Int(1, MAX_STEPS),
    }

    transport_iterations: int = 30
    """Sinkhorn iterations that balance the attention into a transport plan, so every part of
    the shape receives atlas vertices in proportion to its area (`nn.attention`); 0 gives the
    paper's plain softmax. With the normal-only pull (and no deformation smoothing), 30
    over-relaxed iterations at `transport_sharpness` 300 gave a ground-truth error of 1.80 /
    1.57 mm on the two synthetic LV cohorts against 2.54 / 2.22 mm with 0 iterations and the free
    pull, and 1.44 against 1.99 mm on synthetic kidneys (docs/results.md)."""
    transport_relaxation: float = 1.5
    """omega of the over-relaxed Sinkhorn steps (1: plain; `nn.attention`): closer to the
    converged plan in fewer iterations. 30 iterations at 1.5 came within 0.05 mm (mean matched
    point) of 100 plain ones on synthetic LVs, with the same ground-truth errors to 0.01 mm."""
    transport_sharpness: float = 300.0
    """lambda of the attention when `transport_iterations` > 0 (transport spreads each atlas
    vertex's weight less than a softmax does, so it needs, and converges at, a lower one)."""
    deformation_smoothing: int = 8
    """Iterations of the graph smoothing (`ModelConfig.smooth_gamma`) applied, after the
    attention's own smoothing, to the displacement of the matched shape from the atlas (scaled to
    the shape) rather than to its positions, each move kept along the shape's surface
    (`nn.refine.smooth_deformation`): it smooths out the noise of where the points lie on the
    surface, which the normal-only pull cannot move; 0: off. Chosen on the seed-0 synthetic LVs
    (ground-truth error 1.800 / 1.780 / 1.770 / 1.761 / 1.763 / 1.793 mm with 0 / 2 / 4 / 8 / 16 /
    32), checked on held-out cohorts; it costs the real livers a little Hausdorff distance."""
    surface_cpd_iterations: int = 15
    """EM iterations of non-rigid Coherent Point Drift of the atlas onto the shape, started from
    the network's match (its first posterior comes from the matched points, at a 1 mm spread),
    then every point moved to the closest point of the surface; 0: off. A smooth deformation of
    the whole atlas keeps neighbouring points together where the attention may scatter them on a
    real organ. On real livers deformed by known smooth warps (`bench/real_warps.py`) it took the
    ground-truth error from 3.84 to 2.74 mm (rigid baseline 5.24 mm); docs/results.md."""
    surface_cpd_beta: float = 3.0
    """Width of that CPD's Gaussian motion kernel, in atlas RMS radii: wide, so that the
    refinement moves the matched points as a whole rather than one by one (on an earlier fit of
    the real-warp livers, 1 and 2 kept more of the attention's scatter: 3.35 and 2.67 mm against
    2.35 at 3; on synthetic LVs 1 and 2 were worse than no refinement)."""
    refine_motion: str = "normal"
    """How the test-time pull onto the input surface moves the points: "normal" (each point only
    along its normal on the smoothed shape, so it reaches the surface without sliding along it)
    or "free" (every coordinate; the paper's). On the synthetic LVs and kidneys "normal" has the
    smaller ground-truth error and "free" the smaller Chamfer distance (docs/results.md). The
    atlas re-estimation during `fit` always uses the free pull."""
    refine_steps: int = 60
    """Adam steps of the free pull (`refine_motion` "free", and the atlas re-estimation)."""
    normal_refine_steps: int = 20
    """Adam steps of the normal-only pull (one offset per point, so it settles sooner): on the
    seed-0 synthetic LVs, 20 steps gave the ground-truth error, Chamfer and Hausdorff distances
    of 60 to within 0.02 mm in a third of the time."""
    refine_lr: float = 0.005
    """Learning rate of the pull (normalised units)."""
    pose_iterations: int = 0
    """Pose refinement (0: off; single-atlas R-ASM only): up to this many rounds of matching the
    shape (attention + smoothing) and moving it rigidly so that its correspondences fit the atlas
    (Procrustes); a refinement that turns a shape by more than 30 degrees is dropped."""
    pose_relaxation: float = 1.0
    """Over-relaxation of each pose-refinement step (its rotation angle times this; 1 = plain
    Procrustes). Larger factors converge faster where the correspondences follow the shape as
    it turns, but overshoot where they stick to features: on the 50 synthetic LVs, 3 gained less
    than 1 and drifted after 12 rounds."""
    ssm_iterations: int = 10
    """Steps towards the point-distribution model per shape (`ModelConfig.ssm_modes`; about
    0.03 s each for K = 1,500)."""

    @classmethod
    def paper(cls) -> "MatchConfig":
        """The matching of Atlas-R-ASMG as published: plain softmax attention, no smoothing of
        the deformation, no CPD refinement, the free pull."""
        return cls(transport_iterations=0, deformation_smoothing=0, surface_cpd_iterations=0,
                   refine_motion="free")


#: Named matchings (`shapeatlas correspond --matching NAME`).
MATCH_PRESETS = {"default": MatchConfig, "paper": MatchConfig.paper}


def load_match_config(spec: str | Path | None) -> MatchConfig | None:
    """The `--matching` option: None (the run's own), a preset name (`MATCH_PRESETS`), or a
    JSON file holding a `matching` object (a saved config.json works) or the matching fields
    themselves; every field checked, an error names the file. -> MatchConfig or None"""
    if spec is None:
        return None
    if str(spec) in MATCH_PRESETS:
        return MATCH_PRESETS[str(spec)]()
    path = Path(spec)
    if not path.is_file():
        raise ShapeAtlasError(f"{path}: neither a matching preset ({', '.join(MATCH_PRESETS)}) "
                              "nor a JSON file")
    d = read_json(path, max_bytes=1 << 20)
    if isinstance(d, dict) and "matching" in d:
        d = d["matching"]
    return MatchConfig.from_dict(d, source=str(path))


@dataclass(frozen=True)
class GeneratorConfig(_Section):
    """The generator of new shapes: a β-VAE on the normalised shapes (R-ASM), or the number of
    PCA modes kept (cpd-pca)."""

    NAME: ClassVar[str] = "generator"
    SPECS: ClassVar[dict[str, Any]] = {
        "latent_dim": Int(1, 4096, optional=True),
        "beta": Float(0.0, 1e6, lo_open=True),
        "hidden": IntList(1, 65_536, 0, 16),
        "noise_mm": Float(0.0, 1e4, lo_open=True),
        "epochs": Int(1, 100_000),
        "lr": _RATE,
        "prior": Choice(("aggregate", "standard")),
        "mode": Choice(("after", "joint")),
        "weight": _WEIGHT,
        "relax": Int(0, 1000, optional=True),
    }

    latent_dim: int | None = None
    """D: latent size of the β-VAE, or PCA modes kept by cpd-pca (None: min(16, shapes - 1)).
    Must be below the number of training shapes."""
    beta: float = 1.0
    """β: weight of the β-VAE's KL term."""
    hidden: tuple[int, ...] = (256,)
    """Hidden layer widths of the β-VAE's MLP encoder (the decoder mirrors them)."""
    noise_mm: float = 1.0
    """Standard deviation (mm) of the β-VAE's Gaussian likelihood."""
    epochs: int = 3000
    """Full-batch Adam steps of the β-VAE."""
    lr: float = 1e-3
    """Learning rate of the β-VAE."""
    prior: Literal["aggregate", "standard"] = "aggregate"
    """Sample the β-VAE from a Gaussian fitted to the training codes, or from N(0, I)."""
    mode: Literal["after", "joint"] = "after"
    """"after": the β-VAE learns from the final normalised shapes once R-ASM is trained (two
    stages). "joint": it is also trained in every R-ASM step on the batch's normalised shapes,
    its loss back-propagated into the correspondence network (end-to-end), then continued for
    `epochs` steps on the final shapes (docs/method.md, Generation). R-ASM only."""
    weight: float = 1e-3
    """Joint training only: weight of the β-VAE loss (per coordinate) in the R-ASM objective."""
    relax: int | None = None
    """Tangential relaxation steps applied to generated shapes (vertices slide along the decoded
    surface, removing most folds; 0 keeps the raw output). None: the method's default, 5 for
    rasm (self-intersection-free samples 30% -> 97% on LVs) and 0 for cpd-pca (where relaxing
    flips a few thin atlas triangles in every sample)."""


@dataclass(frozen=True)
class ClusterConfig(_Section):
    """Several atlases (mAtlas-R-ASMG): how many, and how shapes are shared out among them."""

    NAME: ClassVar[str] = "clustering"
    SPECS: ClassVar[dict[str, Any]] = {
        "atlases": Atlases(),
        "max_atlases": Int(1, MAX_ATLASES),
        "temperature": Float(0.0, 1e6, lo_open=True),
        "restarts": Int(1, 1000),
        "rounds": Int(0, 100),
    }

    atlases: int | str = 1
    """M: atlases of mAtlas-R-ASMG (1: Atlas-R-ASMG), or "auto" to choose M in 1..max_atlases
    by splitting the cohort in two, and each part again, while a split is more bimodal than
    any unimodal group of that size shows (p < 0.05; see models/clustering.py). R-ASM only."""
    max_atlases: int = 6
    """Largest M that "auto" considers."""
    temperature: float = 0.25
    """tau: memberships r(k, m) ∝ pi_m exp(-E(k, m) / (tau s^2)), E the mean squared distance
    (mm^2) of shape k's normalised shape to atlas m and s^2 the mean within-cluster E. Above
    about 1 the atlases merge."""
    restarts: int = 10
    """n_init: k-means++ initialisations of the clustering; the lowest distortion is kept."""
    rounds: int = 1
    """Rounds in which every shape is matched to every atlas by the shared network and the
    memberships and atlases re-estimated (0: cluster on the shared atlas's correspondences)."""


@dataclass(frozen=True)
class GroomConfig(_Section):
    """How `fit` grooms a folder of raw meshes (`shapeatlas groom` takes the same settings as
    options)."""

    NAME: ClassVar[str] = "grooming"
    SPECS: ClassVar[dict[str, Any]] = {
        "target_vertices": Int(100, 1_000_000),
        "consensus_rounds": Int(0, 100),
        "cap_twist": Bool(),
        "keep_outliers": Bool(),
    }

    target_vertices: int = 2000
    """Vertex count raw meshes are groomed to."""
    consensus_rounds: int = 0
    """Rounds of re-alignment onto the cohort's consensus (`GroomOptions.consensus_rounds`)."""
    cap_twist: bool = True
    """Turn capped shapes about their flat cap's normal to line the cap outlines up
    (`GroomOptions.cap_twist`)."""
    keep_outliers: bool = False
    """Keep training shapes whose size is far from the cohort's (at least 3x larger or smaller
    than the median RMS radius: most likely saved in another unit; `mesh.units`). Off: `fit`
    leaves them out when it grooms a raw folder and refuses a groomed folder that holds them."""


@dataclass(frozen=True)
class CPDConfig(_Section):
    """The cpd-pca baseline: non-rigid Coherent Point Drift of the atlas onto each shape."""

    NAME: ClassVar[str] = "cpd"
    SPECS: ClassVar[dict[str, Any]] = {
        "beta": Float(0.0, 1e3, lo_open=True),
        "lam": Float(0.0, 1e6, lo_open=True),
        "rank": Int(1, MAX_STEPS),
        "iterations": Int(1, MAX_STEPS),
    }

    beta: float = 1.0
    """Width of CPD's Gaussian motion kernel, in atlas RMS radii."""
    lam: float = 2.0
    """lambda: weight of CPD's motion-coherence prior."""
    rank: int = 150
    """Rank of the low-rank kernel (fast CPD; also the matching's CPD refinement)."""
    iterations: int = 100
    """Maximum EM iterations per registration."""


#: The sections of a `FitConfig`, by field name.
SECTIONS: dict[str, type[_Section]] = {
    "model": ModelConfig, "training": TrainingConfig, "matching": MatchConfig,
    "generator": GeneratorConfig, "clustering": ClusterConfig, "grooming": GroomConfig,
    "cpd": CPDConfig,
}


@dataclass(frozen=True)
class FitConfig:
    """Everything that defines a fit: the method, the seed, the device and one section per
    concern."""

    TOP_SPECS: ClassVar[dict[str, Any]] = {
        "method": Choice(("rasm", "cpd-pca")),
        "seed": Int(0, 2**32 - 1),
        "device": Choice(("auto", "cpu", "cuda")),
    }

    method: Literal["rasm", "cpd-pca"] = "rasm"
    """Correspondence + generator: Atlas-R-ASMG (R-ASM network + β-VAE) or the classical baseline
    (non-rigid CPD of the atlas onto each shape + PCA)."""
    seed: int = 0
    """One seed for everything (initialisation, shuffling, VAE sampling)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: "auto" picks CUDA when available."""
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    matching: MatchConfig = field(default_factory=MatchConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    clustering: ClusterConfig = field(default_factory=ClusterConfig)
    grooming: GroomConfig = field(default_factory=GroomConfig)
    cpd: CPDConfig = field(default_factory=CPDConfig)

    def __post_init__(self) -> None:
        problems = []
        for name, spec in self.TOP_SPECS.items():
            try:
                object.__setattr__(self, name, spec.check(getattr(self, name)))
            except Invalid as exc:
                problems.append(f"field '{name}' {exc.problem}")
        for name, cls in SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
                if unknown:
                    problems.append(f"section '{name}' has unknown fields {unknown}")
                    continue
                try:
                    value = cls(**value)
                except ConfigError as exc:
                    problems.extend(exc.problems)
                    continue
                object.__setattr__(self, name, value)
            elif not isinstance(value, cls):
                problems.append(f"section '{name}' must be a {cls.__name__}, got {shown(value)}")
        if problems:
            raise ConfigError(problems)
        problems = self.method_problems(self.matching)
        if self.generator.mode == "joint" and self.method != "rasm":
            problems.append("generator.mode 'joint' needs method 'rasm' (PCA has no gradient to "
                            "share)")
        if self.clustering.atlases != 1 and self.method != "rasm":
            problems.append("several atlases need method 'rasm'")
        if self.model.ssm_modes and not self.single_atlas_rasm:
            problems.append("model.ssm_modes needs a single-atlas R-ASM fit (method 'rasm', "
                            "clustering.atlases 1)")
        if problems:
            raise ConfigError(problems)

    @property
    def single_atlas_rasm(self) -> bool:
        return self.method == "rasm" and self.clustering.atlases == 1

    def method_problems(self, match: MatchConfig) -> list[str]:
        """What in `match` this fit's method cannot do (empty: nothing)."""
        if match.pose_iterations and not self.single_atlas_rasm:
            return ["matching.pose_iterations needs a single-atlas R-ASM fit (method 'rasm', "
                    "clustering.atlases 1)"]
        return []

    @property
    def relax_steps(self) -> int:
        """`generator.relax`, with the method's default filled in."""
        if self.generator.relax is not None:
            return self.generator.relax
        return 5 if self.method == "rasm" else 0

    def to_dict(self) -> dict[str, Any]:
        return {"format": CONFIG_FORMAT, "version": CONFIG_VERSION,
                **{name: getattr(self, name) for name in self.TOP_SPECS},
                **{name: getattr(self, name).to_dict() for name in SECTIONS}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "config") -> "FitConfig":
        """A config from its `to_dict` form (or any subset of its sections and fields), every
        field checked: a wrong type, a value out of its range or an unknown field raises
        `ShapeAtlasError` naming `source` and the field."""
        if not isinstance(d, dict):
            raise ShapeAtlasError(f"{source}: a fit configuration must be a JSON object, got "
                                  f"{type(d).__name__} {shown(d)}")
        d = dict(d)
        fmt = d.pop("format", CONFIG_FORMAT)
        if fmt == "shapeatlas-fit-config":
            raise ShapeAtlasError(f"{source}: written by a development version of shapeatlas "
                                  "before 0.1.0 (flat configuration); fit the run again")
        if fmt != CONFIG_FORMAT:
            raise ShapeAtlasError(f"{source}: not a shapeatlas configuration")
        try:
            version = Int(0, 10**6).check(d.pop("version", CONFIG_VERSION))
        except Invalid as exc:
            raise ShapeAtlasError(f"{source}: field 'version' {exc.problem}") from None
        if version > CONFIG_VERSION:
            raise ShapeAtlasError(f"{source}: written by a newer shapeatlas (configuration "
                                  f"version {version}); upgrade")
        known = set(cls.TOP_SPECS) | set(SECTIONS)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ShapeAtlasError(f"{source}: unknown configuration fields {unknown}")
        sections = {name: SECTIONS[name].from_dict(d.pop(name), source=source)
                    for name in list(d) if name in SECTIONS}
        try:
            return cls(**d, **sections)
        except ConfigError as exc:
            raise ConfigError(exc.problems, source) from None

    @classmethod
    def from_json(cls, path: str | Path) -> "FitConfig":
        path = Path(path)
        if not path.exists():
            raise ShapeAtlasError(f"{path}: no such configuration file")
        return cls.from_dict(read_json(path, max_bytes=1 << 20), source=str(path))

    def replace(self, **changes: Any) -> "FitConfig":
        """A copy with some fields changed; None values are ignored (handy for CLI flags).
        A section is given as a section object or as a dict of its fields to change, e.g.
        ``cfg.replace(seed=1, training={"epochs": 5})``."""
        out = {}
        for name, value in changes.items():
            if value is None:
                continue
            if name in SECTIONS and isinstance(value, dict):
                value = getattr(self, name).replace(**value)
            out[name] = value
        return dataclasses.replace(self, **out)


# ------------------------------------------------------------------- reference documentation
def field_docs(cls: type) -> dict[str, str]:
    """The docstring of each field of a config dataclass (the string literal under it), with
    its lines joined."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    return {a.target.id: " ".join(b.value.value.split())
            for a, b in zip(body, body[1:])
            if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name)
            and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)
            and isinstance(b.value.value, str)}


def _default(cls: type, f: dataclasses.Field) -> str:
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if isinstance(value, EncoderConfig):
        return ", ".join(f"{k} {_jsonable(v)}" for k, v in dataclasses.asdict(value).items())
    return json.dumps(_jsonable(value))


def configuration_markdown() -> str:
    """docs/configuration.md: every section and field, with its default, range and meaning."""
    lines = [
        "# Configuration",
        "",
        "Every run folder holds the `config.json` it was fitted with; `shapeatlas fit --config "
        "FILE` accepts such a file, or any subset of its sections and fields, and the command "
        "line's options override it. `shapeatlas correspond`, `reconstruct` and `evaluate` "
        "accept `--matching FILE`: a JSON object of `matching` fields (or a name: `default`, "
        "`paper`). In Python: `FitConfig`, its sections and `MatchConfig` in "
        "`shapeatlas.training.config` (also exported at the top level).",
        "",
        "```json",
        '{"method": "rasm", "training": {"epochs": 40}, "matching": {"surface_cpd_iterations": 0}}',
        "```",
        "",
        "This page is generated from the fields' docstrings "
        "(`python -m shapeatlas.training.config > docs/configuration.md`).",
        "",
    ]

    def table(cls: type, specs: dict, prefix: str) -> None:
        docs = field_docs(cls)
        lines.extend(["| field | default | range | meaning |", "|---|---|---|---|"])
        for f in dataclasses.fields(cls):
            if f.name not in specs:
                continue
            doc = docs.get(f.name, "").replace("|", "\\|")
            lines.append(f"| `{prefix}{f.name}` | `{_default(cls, f)}` | "
                         f"{specs[f.name].describe()} | {doc} |")
        lines.append("")

    lines.extend(["## Top level", ""])
    table(FitConfig, FitConfig.TOP_SPECS, "")
    for name, cls in SECTIONS.items():
        lines.extend([f"## `{name}`", "", " ".join(cls.__doc__.split()), ""])
        table(cls, cls.SPECS, f"{name}.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(configuration_markdown())
