"""Typed configuration of an R-ASM fit: written into every run folder and enough to reproduce it.

`FitConfig.to_json()` / `FitConfig.from_json()` round-trip exactly; the CLI's `--config FILE`
accepts a saved `config.json` (or any subset of its fields). Every field has a type and a range
(`FIELD_SPECS`, also stated in its docstring), checked whenever a config is built: from a file,
a model folder, CLI flags or code; a wrong one raises `ShapeAtlasError` naming the field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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

#: Bumped when a saved config can no longer be read by older code.
CONFIG_VERSION = 12
#: Largest accepted `pose_relaxation` (larger steps overshoot).
MAX_POSE_RELAXATION = 5.0
#: Upper bound of every iteration, step and epoch count: far beyond real use, low enough that
#: a mistyped number fails at once instead of running for days.
MAX_STEPS = 10_000
_WEIGHT = Float(0.0, 1e6)
_RATE = Float(0.0, 10.0, lo_open=True)

#: Type and range of every field (also written into each field's docstring as "Range: ...").
FIELD_SPECS = {
    "method": Choice(("rasm", "cpd-pca")),
    "features": Choice(("spatial", "hybrid")),
    "normalisation": Choice(("cohort", "shape", "whiten")),
    "atlas_vertices": Int(100, 100_000),
    "atlas_init": Str(),
    "even_edges": Bool(),
    "atlas_rounds": Int(1, 100),
    "sharpness": Float(0.0, 1e8, lo_open=True),
    "transport_iterations": Int(0, MAX_STEPS),
    "transport_relaxation": Float(1.0, 2.0, hi_open=True),
    "transport_sharpness": Float(0.0, 1e8, lo_open=True),
    "deformation_smoothing": Int(0, MAX_STEPS),
    "surface_cpd_iterations": Int(0, MAX_STEPS),
    "surface_cpd_beta": Float(0.0, 1e3, lo_open=True),
    "attention_memory_mb": Float(0.0, 1e6, lo_open=True),
    "smooth_gamma": Float(0.0, 1e4),
    "smooth_iterations": Int(0, 1000),
    "w_chamfer": _WEIGHT, "w_recon": _WEIGHT, "w_kl": _WEIGHT, "w_normal": _WEIGHT,
    "w_laplacian": _WEIGHT, "w_edge": _WEIGHT,
    "refine_steps": Int(0, MAX_STEPS),
    "normal_refine_steps": Int(0, MAX_STEPS),
    "refine_lr": _RATE,
    "refine_motion": Choice(PULL_MOTIONS),
    "pose_iterations": Int(0, 1000),
    "pose_relaxation": Float(0.0, MAX_POSE_RELAXATION, lo_open=True),
    "ssm_modes": Int(0, 1000),
    "ssm_rounds": Int(1, MAX_STEPS),
    "ssm_iterations": Int(1, MAX_STEPS),
    "epochs": Int(1, MAX_STEPS),
    "batch_size": Int(1, 4096),
    "lr": _RATE,
    "lr_decay": Float(0.0, 1.0, lo_open=True),
    "grad_clip": Float(0.0, 1e6, lo_open=True),
    "patience": Int(0, MAX_STEPS),
    "min_delta": Float(0.0, 1.0),
    "checkpoint_every": Int(1, MAX_STEPS),
    "latent_dim": Int(1, 4096, optional=True),
    "beta": Float(0.0, 1e6, lo_open=True),
    "vae_hidden": IntList(1, 65_536, 0, 16),
    "vae_noise_mm": Float(0.0, 1e4, lo_open=True),
    "vae_epochs": Int(1, 100_000),
    "vae_lr": _RATE,
    "vae_prior": Choice(("aggregate", "standard")),
    "generator_training": Choice(("after", "joint")),
    "w_generator": _WEIGHT,
    "atlases": None,  # a whole number in [1, MAX_ATLASES] or "auto": checked on its own
    "max_atlases": Int(1, 64),
    "cluster_temperature": Float(0.0, 1e6, lo_open=True),
    "cluster_restarts": Int(1, 1000),
    "cluster_rounds": Int(0, 100),
    "sample_relax": Int(0, 1000, optional=True),
    "cpd_beta": Float(0.0, 1e3, lo_open=True),
    "cpd_lambda": Float(0.0, 1e6, lo_open=True),
    "cpd_rank": Int(1, MAX_STEPS),
    "cpd_iterations": Int(1, MAX_STEPS),
    "groom_target_vertices": Int(100, 1_000_000),
    "groom_consensus_rounds": Int(0, 100),
    "groom_cap_twist": Bool(),
    "groom_keep_outliers": Bool(),
    "seed": Int(0, 2**32 - 1),
    "device": Choice(("auto", "cpu", "cuda")),
}
#: Largest number of atlases (`atlases`, `max_atlases`).
MAX_ATLASES = 64
#: Type and range of the fields of `encoder` (an `nn.encoder.EncoderConfig`).
ENCODER_SPECS = {
    "in_channels": Int(1, 6),
    "widths": IntList(1, 4096, 1, 16),
    "heads": Int(1, 64),
    "latent_dim": Int(1, 4096),
    "norm": Choice(("graph", "layer")),
    "conv": Choice(("reordered", "pyg")),
}


class ConfigError(ShapeAtlasError):
    """An invalid configuration; `problems` lists each field's problem as one phrase."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        head = f"{source}: " if source else "invalid fit configuration: "
        super().__init__(head + "; ".join(self.problems))


def _field_problems(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Each field checked against `FIELD_SPECS` -> (the values converted, the problems)."""
    out, problems = dict(values), []
    for name, spec in FIELD_SPECS.items():
        if name not in values:
            continue
        v = values[name]
        if spec is None:  # atlases
            ok = v == "auto" or (isinstance(v, int) and not isinstance(v, bool)
                                 and 1 <= v <= MAX_ATLASES)
            if not ok:
                problems.append(f"field 'atlases' must be 'auto' or an integer in "
                                f"[1, {MAX_ATLASES}], got {shown(v)}")
            continue
        try:
            out[name] = spec.check(v)
        except Invalid as exc:
            problems.append(f"field '{name}' {exc.problem}")
    enc = values.get("encoder")
    if isinstance(enc, EncoderConfig):
        enc = dataclasses.asdict(enc)
    if not isinstance(enc, dict):
        problems.append(f"field 'encoder' must be a JSON object, got {shown(enc)}")
        return out, problems
    unknown = sorted(set(enc) - set(ENCODER_SPECS))
    if unknown:
        problems.append(f"field 'encoder' has unknown fields {unknown}")
    checked = {}
    for name, spec in ENCODER_SPECS.items():
        if name in enc:
            try:
                checked[name] = spec.check(enc[name])
            except Invalid as exc:
                problems.append(f"field 'encoder.{name}' {exc.problem}")
    if not problems:
        out["encoder"] = EncoderConfig(**checked)
    return out, problems


@dataclass(frozen=True)
class FitConfig:
    """Everything that defines a fit (method, model, atlas, losses, generator, optimisation)."""

    method: Literal["rasm", "cpd-pca"] = "rasm"
    """Correspondence + generator: Atlas-R-ASMG (R-ASM network + β-VAE) or the classical baseline
    (non-rigid CPD of the atlas onto each shape + PCA). Range: one of 'rasm', 'cpd-pca'."""
    features: Literal["spatial", "hybrid"] = "hybrid"
    """Node features: coordinates (sGCN) or coordinates + vertex normals (hGCN).
    Range: one of 'spatial', 'hybrid'."""
    normalisation: Literal["cohort", "shape", "whiten"] = "shape"
    """Coordinates the network sees: "shape", each shape's own centroid and RMS radius
    (size-invariant matching, points mapped back to mm); "whiten", each shape's own centroid and
    covariance (also invariant to stretching along any axis, so shapes of different proportions
    are matched proportionally); "cohort", one centre and scale for the whole cohort.
    Range: one of 'cohort', 'shape', 'whiten'."""
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(
        in_channels=6, widths=(32, 32, 64, 64), heads=4, latent_dim=64))
    """Graph VAE architecture (in_channels follows `features`). CPU-sized by default.
    Range: each field as `ENCODER_SPECS` says."""
    atlas_vertices: int = 1500
    """K: vertices of the atlas (the canonical shape is remeshed to this many).
    Range: an integer in [100, 100,000]."""
    atlas_init: str = "medoid"
    """"medoid" (the training shape with the least summed Chamfer distance to the others),
    "random" (a training shape drawn with `seed`) or a path to a mesh file in the groomed frame.
    Range: a string of at most 4,096 characters."""
    even_edges: bool = True
    """R-ASM: give flat parts vertices. The training meshes' edges longer than
    `mesh.remesh.EVEN_EDGE_RATIO` times their median are split (the surface does not move; a
    QSlim-groomed LV's basal cap otherwise has no vertex inside its rim), and the atlas is
    `mesh.remesh.decimate_even` of the canonical shape (QSlim, split, K vertices) instead of a
    shortest-edge collapse to K. Configs before version 7: off; `--method cpd-pca` keeps its
    atlas as before. Range: true or false."""
    atlas_rounds: int = 2
    """Training rounds; after each but the last the atlas is re-estimated as the vertex-wise mean
    of the refined normalised shapes. Range: an integer in [1, 100]."""
    sharpness: float = 1e4
    """lambda: inverse temperature of the attention softmax over the shape's vertices.
    Range: a finite number in (0, 100,000,000]."""
    transport_iterations: int = 30
    """Matching of the results (`correspond`, pose refinement, the shapes the generator learns
    from): Sinkhorn iterations that balance the attention into a transport plan, so every part of
    the shape receives atlas vertices in proportion to its area (`nn.attention`); 0 gives the
    paper's plain softmax. Training and the single-atlas re-estimation always use the plain softmax,
    so this setting does not change a single-atlas run's network or atlas, and it can be set on a
    trained model (`AtlasModel.set_transport`, or `shapeatlas correspond --transport-iterations`).
    Measured in docs/results.md: with `refine_motion="normal"` (and no
    `deformation_smoothing`), 30 over-relaxed iterations (`transport_relaxation`) at
    `transport_sharpness` 300 gave a ground-truth error of 1.80 / 1.57 mm on the two synthetic LV
    cohorts (1.96 / 1.73% of the long axis) against 2.54 / 2.22 mm with 0 iterations and the free
    pull, and 1.44 against 1.99 mm on synthetic kidneys. Configs before version 8: 0; version 8: 100
    (plain). Range: an integer in [0, 10,000]."""
    transport_relaxation: float = 1.5
    """omega of the over-relaxed Sinkhorn steps, in [1, 2) (1: plain; `nn.attention`): closer to
    the converged plan in fewer iterations. 30 iterations at 1.5 came closest to the 100 plain
    ones of version 8 (matched points 0.05 mm apart, mean, on the seed-0 synthetic LVs) and
    gave the same ground-truth errors to within 0.01 mm (1.80 / 1.57 / 1.44 mm on the two LV
    cohorts and the kidneys) with 30% of the iterations. Configs before version 9: 1 (and 100
    iterations where a config does not name them). Range: a finite number in [1, 2)."""
    transport_sharpness: float = 300.0
    """lambda of the attention when `transport_iterations` > 0 (transport spreads each atlas
    vertex's weight less than a softmax does, so it needs, and converges at, a lower one).
    Range: a finite number in (0, 100,000,000]."""
    deformation_smoothing: int = 8
    """Matching of the results (as `transport_iterations`: training and the atlas re-estimation
    never use it, so it can be set on a trained model, `AtlasModel.set_deformation_smoothing`
    or `shapeatlas correspond --deformation-smoothing`): iterations of the graph smoothing
    (`smooth_gamma`) applied, after the attention's own smoothing, to the displacement of the
    matched shape from the atlas (scaled to the shape) rather than to its positions, each move
    kept along the shape's surface (`nn.refine.smooth_deformation`): it smooths out the noise
    of where the points lie on the surface, which the normal-only pull cannot move; 0: off.
    Chosen on the seed-0 synthetic LVs (every file aligned from scratch: ground-truth error
    1.800 / 1.780 / 1.770 / 1.761 / 1.763 / 1.793 mm with 0 / 2 / 4 / 8 / 16 / 32), checked on
    held-out cohorts, and it costs the real livers a little Hausdorff distance (docs/results.md). Configs before version 10: 0. Range: an integer in [0, 10,000]."""
    surface_cpd_iterations: int = 15
    """Matching of the results (as `deformation_smoothing`; `shapeatlas correspond
    --surface-cpd N`): EM iterations of non-rigid Coherent Point Drift of the atlas onto the
    shape, started from the network's match (its first posterior comes from the matched points,
    at a 1 mm spread), then every point moved to the closest point of the surface; 0: off. A
    smooth deformation of the whole atlas keeps neighbouring points where the attention may
    scatter them on a real organ. On real livers deformed by known smooth warps
    (`bench/real_warps.py`) it took the ground-truth error from 3.84 to 2.74 mm (rigid
    baseline 5.24 mm); on 12 synthetic LVs from 1.38 to 1.28 mm (docs/results.md). Configs
    before version 12: 0. Range: an integer in [0, 10,000]."""
    surface_cpd_beta: float = 3.0
    """Width of that CPD's Gaussian motion kernel, in atlas RMS radii: wide, so that the
    refinement moves the matched points as a whole rather than one by one (on an earlier fit
    of the real-warp livers, 1 and 2 kept more of the attention's scatter: 3.35 and 2.67 mm
    against 2.35 at 3; on synthetic LVs 1 and 2 were worse than no refinement).
    Range: a finite number in (0, 1,000]."""
    attention_memory_mb: float = 256.0
    """Upper bound on the similarity buffers the attention holds at once.
    Range: a finite number in (0, 1,000,000]."""
    smooth_gamma: float = 1.0
    """gamma of the graph smoothing h <- (I + gamma D)^-1 (h + gamma A h).
    Range: a finite number in [0, 10,000]."""
    smooth_iterations: int = 2
    """Iterations of that smoothing. Range: an integer in [0, 1,000]."""
    w_chamfer: float = 1.0
    """Weight of Chamfer(input, refined normalised shape) (squared, normalised units).
    Range: a finite number in [0, 1,000,000]."""
    w_recon: float = 0.1
    """Weight of the L1 reconstruction of the node features by the VAE decoder.
    Range: a finite number in [0, 1,000,000]."""
    w_kl: float = 1e-4
    """Weight of the per-vertex KL divergence of the VAE posterior.
    Range: a finite number in [0, 1,000,000]."""
    w_normal: float = 0.01
    """Weight of the normal consistency of the refined shape on the atlas faces.
    Range: a finite number in [0, 1,000,000]."""
    w_laplacian: float = 0.1
    """Weight of the Laplacian smoothness of the refined shape (L_Ref).
    Range: a finite number in [0, 1,000,000]."""
    w_edge: float = 0.1
    """Weight of the edge-length regulariser of the refined shape (L_Ref).
    Range: a finite number in [0, 1,000,000]."""
    refine_steps: int = 60
    """Test-time refinement: Adam steps of the free pull of the smoothed shape onto the input
    surface (`refine_motion="free"`, and the atlas re-estimation during `fit`).
    Range: an integer in [0, 10,000]."""
    normal_refine_steps: int = 20
    """Adam steps of the normal-only pull (`refine_motion="normal"`; one offset per point, so it
    settles sooner): on the seed-0 synthetic LVs, 20 steps gave the ground-truth error, Chamfer
    and Hausdorff distances of 60 to within 0.02 mm (1.787 / 1.198 / 3.559 against 1.783 /
    1.196 / 3.577 mm) in a third of the time. Configs before version 8: `refine_steps`.
    Range: an integer in [0, 10,000]."""
    refine_lr: float = 0.005
    """Learning rate of the test-time refinement (normalised units).
    Range: a finite number in (0, 10]."""
    refine_motion: str = "normal"
    """How the test-time refinement of the results moves the points: "normal" (each point only
    along its normal on the smoothed shape, so it reaches the surface without sliding along it)
    or "free" (every coordinate; the paper's). On the synthetic LVs and kidneys "normal" has the
    smaller ground-truth error and "free" the smaller Chamfer distance; on the held-out real
    livers Chamfer 3.14 ("normal") against 1.80 mm ("free") vertex to vertex, 0.79 against
    0.63 mm vertex to triangle; measured in docs/results.md.
    The atlas re-estimation during `fit` always uses the free pull (the population mean of
    surface-fitting shapes), so this setting does not change a single-atlas run's network or
    atlas, and it can be set on a trained model (`shapeatlas correspond --refine-motion`); the
    shapes the generator learns from, and a multi-atlas run's clusters, are matched with it.
    Configs before version 8: "free". Range: one of 'free', 'normal'."""
    pose_iterations: int = 0
    """Pose refinement when corresponding (0: off): up to this many rounds of matching the shape
    (attention + smoothing) and moving it rigidly so that its correspondences fit the atlas
    (Procrustes); a refinement that turns a shape by more than 30 degrees is dropped. Also
    applies to the training shapes the generator learns from (`AtlasModel._refine_pose`).
    Range: an integer in [0, 1,000]."""
    pose_relaxation: float = 1.0
    """Over-relaxation of each pose-refinement step (its rotation angle times this; 1 = plain
    Procrustes). Larger factors converge faster where the correspondences mostly follow the
    shape as it turns, but overshoot where they stick to features: on the 50 synthetic LVs, 3
    gained less than 1 and drifted after 12 rounds; a 2-epoch test model diverged at 3.
    Range: a finite number in (0, 5]."""
    ssm_modes: int = 0
    """Groupwise refinement of the correspondences by a point-distribution model (0: off; see
    `models.point_model`). After training, the training shapes' correspondences (attention +
    smoothing) slide along their surfaces, together, towards the mean plus this many principal
    modes, and the model is kept; `correspond` then slides each shape's points towards it before
    the test-time pull, and the generator learns from the shapes refined that way (matched on
    the original files when `groom.json` names them). A model that raises the training shapes'
    mean Chamfer distance by more than 5% is not kept (`AtlasModel.fit_point_model`). Fewer than
    the training shapes minus one. Measured in docs/results.md: 0.16-0.24 mm less
    ground-truth error on the synthetic LVs and kidneys with 4 modes, but worse matching of
    held-out real livers, hence off by default. Range: an integer in [0, 1,000]."""
    ssm_rounds: int = 20
    """Rounds of that groupwise refinement at `fit` (fewer once the points stop moving).
    Range: an integer in [1, 10,000]."""
    ssm_iterations: int = 10
    """Steps towards the point-distribution model per shape in `correspond` (about 0.03 s each
    for K = 1,500). Range: an integer in [1, 10,000]."""
    epochs: int = 25
    """Epochs per atlas round (an upper bound: early stopping may end a round sooner). On both
    50-LV cohorts 25 gave ground-truth errors within 0.03 mm of 30's (CHANGELOG.md)
    in 5/6 of the training time. Range: an integer in [1, 10,000]."""
    batch_size: int = 4
    """Shapes packed into one training step. Range: an integer in [1, 4,096]."""
    lr: float = 1e-3
    """Adam (amsgrad) learning rate. Range: a finite number in (0, 10]."""
    lr_decay: float = 0.97
    """Multiplicative learning-rate decay per epoch. Range: a finite number in (0, 1]."""
    grad_clip: float = 1.0
    """Gradient-norm clip applied before every optimiser step.
    Range: a finite number in (0, 1,000,000]."""
    patience: int = 8
    """Epochs without a relative improvement of `min_delta` before a round stops early.
    Range: an integer in [0, 10,000]."""
    min_delta: float = 1e-3
    """Relative loss improvement that counts for early stopping.
    Range: a finite number in [0, 1]."""
    checkpoint_every: int = 1
    """Epochs between checkpoints (and `--resume` points). Range: an integer in [1, 10,000]."""
    latent_dim: int | None = None
    """D: latent size of the β-VAE, or PCA modes kept by cpd-pca (None: min(16, shapes - 1)).
    Must be below the number of training shapes. Range: an integer in [1, 4,096] or null."""
    beta: float = 1.0
    """β: weight of the β-VAE's KL term. Range: a finite number in (0, 1,000,000]."""
    vae_hidden: tuple[int, ...] = (256,)
    """Hidden layer widths of the β-VAE's MLP encoder (the decoder mirrors them).
    Range: a list of 0 to 16 integers in [1, 65,536]."""
    vae_noise_mm: float = 1.0
    """Standard deviation (mm) of the β-VAE's Gaussian likelihood.
    Range: a finite number in (0, 10,000]."""
    vae_epochs: int = 3000
    """Full-batch Adam steps of the β-VAE. Range: an integer in [1, 100,000]."""
    vae_lr: float = 1e-3
    """Learning rate of the β-VAE. Range: a finite number in (0, 10]."""
    vae_prior: Literal["aggregate", "standard"] = "aggregate"
    """Sample the β-VAE from a Gaussian fitted to the training codes, or from N(0, I).
    Range: one of 'aggregate', 'standard'."""
    generator_training: Literal["after", "joint"] = "after"
    """"after": the β-VAE learns from the final normalised shapes once R-ASM is trained (two
    stages). "joint": it is also trained in every R-ASM step on the batch's normalised shapes,
    its loss back-propagated into the correspondence network (end-to-end), then continued for
    `vae_epochs` steps on the final shapes (docs/method.md, Generation).
    Range: one of 'after', 'joint'."""
    w_generator: float = 1e-3
    """Joint training only: weight of the β-VAE loss (per coordinate) in the R-ASM objective.
    Range: a finite number in [0, 1,000,000]."""
    atlases: int | str = 1
    """M: atlases of mAtlas-R-ASMG (1: Atlas-R-ASMG), or "auto" to choose M in 1..max_atlases
    by prediction strength, how reproducible the clusters are across halves of the cohort
    (see models/multi_atlas.py). Range: "auto" or an integer in [1, 64]."""
    max_atlases: int = 6
    """Largest M that "auto" considers. Range: an integer in [1, 64]."""
    cluster_temperature: float = 0.25
    """tau: memberships r(k, m) ∝ pi_m exp(-E(k, m) / (tau s^2)), E the mean squared distance
    (mm^2) of shape k's normalised shape to atlas m and s^2 the mean within-cluster E. Above
    about 1 the atlases merge. Range: a finite number in (0, 1,000,000]."""
    cluster_restarts: int = 10
    """n_init: k-means++ initialisations of the clustering; the lowest distortion is kept.
    Range: an integer in [1, 1,000]."""
    cluster_rounds: int = 1
    """Rounds in which every shape is matched to every atlas by the shared network and the
    memberships and atlases re-estimated (0: cluster on the shared atlas's correspondences).
    Range: an integer in [0, 100]."""
    sample_relax: int | None = None
    """Tangential relaxation steps applied to generated shapes (vertices slide along the decoded
    surface, removing most folds; 0 keeps the raw output). None: the method's default, 5 for
    rasm (self-intersection-free samples 30% -> 97% on LVs) and 0 for cpd-pca (where relaxing
    flips a few thin atlas triangles in every sample).
    Range: an integer in [0, 1,000] or null."""
    cpd_beta: float = 1.0
    """cpd-pca: width of CPD's Gaussian motion kernel, in atlas RMS radii.
    Range: a finite number in (0, 1,000]."""
    cpd_lambda: float = 2.0
    """cpd-pca: weight of CPD's motion-coherence prior.
    Range: a finite number in (0, 1,000,000]."""
    cpd_rank: int = 150
    """cpd-pca: rank of the low-rank kernel (fast CPD). Range: an integer in [1, 10,000]."""
    cpd_iterations: int = 100
    """cpd-pca: maximum EM iterations per registration. Range: an integer in [1, 10,000]."""
    groom_target_vertices: int = 2000
    """Vertex count raw meshes are groomed to when `fit` is given a raw folder.
    Range: an integer in [100, 1,000,000]."""
    groom_consensus_rounds: int = 0
    """Rounds of re-alignment onto the cohort's consensus when `fit` grooms a raw folder
    (`GroomOptions.consensus_rounds`). Range: an integer in [0, 100]."""
    groom_cap_twist: bool = True
    """Turn capped shapes about their flat cap's normal to line the cap outlines up when `fit`
    grooms a raw folder (`GroomOptions.cap_twist`; configs before version 6: off).
    Range: true or false."""
    groom_keep_outliers: bool = False
    """Keep training shapes whose size is far from the cohort's (at least 3x larger or smaller
    than the median RMS radius: most likely saved in another unit; `mesh.units`). Off: `fit`
    leaves them out when it grooms a raw folder and refuses a groomed folder that holds them.
    Range: true or false."""
    seed: int = 0
    """One seed for everything (initialisation, shuffling, VAE sampling).
    Range: an integer in [0, 4,294,967,295]."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: "auto" picks CUDA when available. Range: one of 'auto', 'cpu', 'cuda'."""

    def __post_init__(self) -> None:
        values, problems = _field_problems(
            {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        if problems:  # types and ranges first: the checks below compare values
            raise ConfigError(problems)
        for name, v in values.items():
            object.__setattr__(self, name, v)
        want = 6 if self.features == "hybrid" else 3
        if self.encoder.in_channels != want:
            object.__setattr__(self, "encoder",
                               dataclasses.replace(self.encoder, in_channels=want))
        if self.generator_training == "joint" and self.method != "rasm":
            problems.append("generator_training 'joint' needs method 'rasm' (PCA has no "
                            "gradient to share)")
        if self.atlases != 1 and self.method != "rasm":
            problems.append("several atlases need method 'rasm'")
        if self.pose_iterations and (self.method != "rasm" or self.atlases != 1):
            problems.append("pose_iterations needs a single-atlas R-ASM fit (method 'rasm', "
                            "atlases 1)")
        if self.ssm_modes and (self.method != "rasm" or self.atlases != 1):
            problems.append("ssm_modes needs a single-atlas R-ASM fit (method 'rasm', atlases 1)")
        if problems:
            raise ConfigError(problems)

    @property
    def relax_steps(self) -> int:
        """`sample_relax`, with the method's default filled in."""
        if self.sample_relax is not None:
            return self.sample_relax
        return 5 if self.method == "rasm" else 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["encoder"]["widths"] = list(d["encoder"]["widths"])
        d["vae_hidden"] = list(d["vae_hidden"])
        return {"format": "shapeatlas-fit-config", "version": CONFIG_VERSION, **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> "FitConfig":
        """A config from its `to_dict` form (or any subset of its fields), every field checked:
        a wrong type, a value out of its range or an unknown field raises `ShapeAtlasError`
        naming `source` and the field."""
        if not isinstance(d, dict):
            raise ShapeAtlasError(f"{source}: a fit configuration must be a JSON object, got "
                                  f"{type(d).__name__} {shown(d)}")
        d = dict(d)
        if d.pop("format", "shapeatlas-fit-config") != "shapeatlas-fit-config":
            raise ShapeAtlasError(f"{source}: not a shapeatlas fit configuration")
        version = d.pop("version", CONFIG_VERSION)
        try:
            version = Int(0, 10**6).check(version)
        except Invalid as exc:
            raise ShapeAtlasError(f"{source}: field 'version' {exc.problem}") from None
        if version > CONFIG_VERSION:
            raise ShapeAtlasError(
                f"{source}: written by a newer shapeatlas (config version {version}); upgrade"
            )
        if version < 6:  # grooming had no cap twist then; keep such a config's meaning
            d.setdefault("groom_cap_twist", False)
        if version < 7:  # the training meshes and the atlas were not evened out then
            d.setdefault("even_edges", False)
        if version < 8:  # results were matched with the plain softmax and the free pull then
            d.setdefault("transport_iterations", 0)
            d.setdefault("refine_motion", "free")
            d.setdefault("normal_refine_steps", d.get("refine_steps", 60))
        if version < 9:  # the Sinkhorn steps were not over-relaxed then
            d.setdefault("transport_iterations", 100)
            d.setdefault("transport_relaxation", 1.0)
        if version < 10:  # the matched shape's displacement from the atlas was not smoothed then
            d.setdefault("deformation_smoothing", 0)
        if version < 12:  # no CPD refinement of the matched shape then
            d.setdefault("surface_cpd_iterations", 0)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ShapeAtlasError(f"{source}: unknown configuration fields {unknown}")
        try:
            return cls(**d)
        except ConfigError as exc:
            raise ConfigError(exc.problems, source) from None

    @classmethod
    def from_json(cls, path: str | Path) -> "FitConfig":

        path = Path(path)
        if not path.exists():
            raise ShapeAtlasError(f"{path}: no such configuration file")
        return cls.from_dict(read_json(path, max_bytes=1 << 20), source=str(path))

    def replace(self, **changes: Any) -> "FitConfig":
        """A copy with some fields changed (None values are ignored, handy for CLI flags)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
