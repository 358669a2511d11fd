"""Typed configuration of an R-ASM fit: written into every run folder and enough to reproduce it.

`FitConfig.to_json()` / `FitConfig.from_json()` round-trip exactly; the CLI's `--config FILE`
accepts a saved `config.json` (or any subset of its fields).
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

#: Bumped when a saved config can no longer be read by older code.
CONFIG_VERSION = 10
#: Largest accepted `pose_relaxation` (larger steps overshoot).
MAX_POSE_RELAXATION = 5.0


@dataclass(frozen=True)
class FitConfig:
    """Everything that defines a fit (method, model, atlas, losses, generator, optimisation)."""

    method: Literal["rasm", "cpd-pca"] = "rasm"
    """Correspondence + generator: Atlas-R-ASMG (R-ASM network + β-VAE) or the classical baseline
    (non-rigid CPD of the atlas onto each shape + PCA)."""
    features: Literal["spatial", "hybrid"] = "hybrid"
    """Node features: coordinates (sGCN) or coordinates + vertex normals (hGCN)."""
    normalisation: Literal["cohort", "shape", "whiten"] = "shape"
    """Coordinates the network sees: "shape", each shape's own centroid and RMS radius
    (size-invariant matching, points mapped back to mm); "whiten", each shape's own centroid and
    covariance (also invariant to stretching along any axis, so shapes of different proportions
    are matched proportionally); "cohort", one centre and scale for the whole cohort."""
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(
        in_channels=6, widths=(32, 32, 64, 64), heads=4, latent_dim=64))
    """Graph VAE architecture (in_channels follows `features`). CPU-sized by default."""
    atlas_vertices: int = 1500
    """K: vertices of the atlas (the canonical shape is remeshed to this many)."""
    atlas_init: str = "medoid"
    """"medoid" (the training shape with the least summed Chamfer distance to the others),
    "random" (a training shape drawn with `seed`) or a path to a mesh file in the groomed frame."""
    even_edges: bool = True
    """R-ASM: give flat parts vertices. The training meshes' edges longer than
    `mesh.remesh.EVEN_EDGE_RATIO` times their median are split (the surface does not move; a
    QSlim-groomed LV's basal cap otherwise has no vertex inside its rim), and the atlas is
    `mesh.remesh.decimate_even` of the canonical shape (QSlim, split, K vertices) instead of a
    shortest-edge collapse to K. Configs before version 7: off; `--method cpd-pca` keeps its
    atlas as before."""
    atlas_rounds: int = 2
    """Training rounds; after each but the last the atlas is re-estimated as the vertex-wise mean
    of the refined normalised shapes."""
    sharpness: float = 1e4
    """lambda: inverse temperature of the attention softmax over the shape's vertices."""
    transport_iterations: int = 30
    """Matching of the results (`correspond`, pose refinement, the shapes the generator learns
    from): Sinkhorn iterations that balance the attention into a transport plan, so every part of
    the shape receives atlas vertices in proportion to its area (`nn.attention`); 0 gives the
    paper's plain softmax. Training and the single-atlas re-estimation always use the plain softmax,
    so this setting does not change a single-atlas run's network or atlas, and it can be set on a
    trained model (`AtlasModel.set_transport`, or `shapeatlas correspond --transport-iterations`).
    Measured in the README (Results): with `refine_motion="normal"` (and no
    `deformation_smoothing`), 30 over-relaxed iterations (`transport_relaxation`) at
    `transport_sharpness` 300 gave a ground-truth error of 1.80 / 1.57 mm on the two synthetic LV
    cohorts (1.96 / 1.73% of the long axis) against 2.54 / 2.22 mm with 0 iterations and the free
    pull, and 1.44 against 1.99 mm on synthetic kidneys. Configs before version 8: 0; version 8: 100
    (plain)."""
    transport_relaxation: float = 1.5
    """omega of the over-relaxed Sinkhorn steps, in [1, 2) (1: plain; `nn.attention`): closer to
    the converged plan in fewer iterations. 30 iterations at 1.5 came closest to the 100 plain
    ones of version 8 (matched points 0.05 mm apart, mean, on the seed-0 synthetic LVs) and
    gave the same ground-truth errors to within 0.01 mm (1.80 / 1.57 / 1.44 mm on the two LV
    cohorts and the kidneys) with 30% of the iterations. Configs before version 9: 1 (and 100
    iterations where a config does not name them)."""
    transport_sharpness: float = 300.0
    """lambda of the attention when `transport_iterations` > 0 (transport spreads each atlas
    vertex's weight less than a softmax does, so it needs, and converges at, a lower one)."""
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
    held-out cohorts, and it costs the real livers a little Hausdorff distance (README,
    Results). Configs before version 10: 0."""
    attention_memory_mb: float = 256.0
    """Upper bound on the similarity buffers the attention holds at once."""
    smooth_gamma: float = 1.0
    """gamma of the graph smoothing h <- (I + gamma D)^-1 (h + gamma A h)."""
    smooth_iterations: int = 2
    """Iterations of that smoothing."""
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
    refine_steps: int = 60
    """Test-time refinement: Adam steps of the free pull of the smoothed shape onto the input
    surface (`refine_motion="free"`, and the atlas re-estimation during `fit`)."""
    normal_refine_steps: int = 20
    """Adam steps of the normal-only pull (`refine_motion="normal"`; one offset per point, so it
    settles sooner): on the seed-0 synthetic LVs, 20 steps gave the ground-truth error, Chamfer
    and Hausdorff distances of 60 to within 0.02 mm (1.787 / 1.198 / 3.559 against 1.783 /
    1.196 / 3.577 mm) in a third of the time. Configs before version 8: `refine_steps`."""
    refine_lr: float = 0.005
    """Learning rate of the test-time refinement (normalised units)."""
    refine_motion: str = "normal"
    """How the test-time refinement of the results moves the points: "normal" (each point only
    along its normal on the smoothed shape, so it reaches the surface without sliding along it)
    or "free" (every coordinate; the paper's). On the synthetic LVs and kidneys "normal" has the
    smaller ground-truth error and "free" the smaller Chamfer distance; on the held-out real
    livers Chamfer 3.14 ("normal") against 1.80 mm ("free") vertex to vertex, 0.79 against
    0.63 mm vertex to triangle; measured in the README, Results.
    The atlas re-estimation during `fit` always uses the free pull (the population mean of
    surface-fitting shapes), so this setting does not change a single-atlas run's network or
    atlas, and it can be set on a trained model (`shapeatlas correspond --refine-motion`); the
    shapes the generator learns from, and a multi-atlas run's clusters, are matched with it.
    Configs before version 8: "free"."""
    pose_iterations: int = 0
    """Pose refinement when corresponding (0: off): up to this many rounds of matching the shape
    (attention + smoothing) and moving it rigidly so that its correspondences fit the atlas
    (Procrustes); a refinement that turns a shape by more than 30 degrees is dropped. Also
    applies to the training shapes the generator learns from (`AtlasModel._refine_pose`)."""
    pose_relaxation: float = 1.0
    """Over-relaxation of each pose-refinement step (its rotation angle times this; 1 = plain
    Procrustes). Larger factors converge faster where the correspondences mostly follow the
    shape as it turns, but overshoot where they stick to features: on the 50 synthetic LVs, 3
    gained less than 1 and drifted after 12 rounds; a 2-epoch test model diverged at 3."""
    ssm_modes: int = 0
    """Groupwise refinement of the correspondences by a point-distribution model (0: off; see
    `models.point_model`). After training, the training shapes' correspondences (attention +
    smoothing) slide along their surfaces, together, towards the mean plus this many principal
    modes, and the model is kept; `correspond` then slides each shape's points towards it before
    the test-time pull, and the generator learns from the shapes refined that way (matched on
    the original files when `groom.json` names them). A model that raises the training shapes'
    mean Chamfer distance by more than 5% is not kept (`AtlasModel.fit_point_model`). Fewer than
    the training shapes minus one. Measured in the README (Results): 0.16-0.24 mm less
    ground-truth error on the synthetic LVs and kidneys with 4 modes, but worse matching of
    held-out real livers, hence off by default."""
    ssm_rounds: int = 20
    """Rounds of that groupwise refinement at `fit` (fewer once the points stop moving)."""
    ssm_iterations: int = 10
    """Steps towards the point-distribution model per shape in `correspond` (about 0.03 s each
    for K = 1,500)."""
    epochs: int = 25
    """Epochs per atlas round (an upper bound: early stopping may end a round sooner). On both
    50-LV cohorts 25 gave ground-truth errors within 0.03 mm of 30's (README, Results, stop 24)
    in 5/6 of the training time."""
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
    latent_dim: int | None = None
    """D: latent size of the β-VAE, or PCA modes kept by cpd-pca (None: min(16, shapes - 1)).
    Must be below the number of training shapes."""
    beta: float = 1.0
    """β: weight of the β-VAE's KL term."""
    vae_hidden: tuple[int, ...] = (256,)
    """Hidden layer widths of the β-VAE's MLP encoder (the decoder mirrors them)."""
    vae_noise_mm: float = 1.0
    """Standard deviation (mm) of the β-VAE's Gaussian likelihood."""
    vae_epochs: int = 3000
    """Full-batch Adam steps of the β-VAE."""
    vae_lr: float = 1e-3
    """Learning rate of the β-VAE."""
    vae_prior: Literal["aggregate", "standard"] = "aggregate"
    """Sample the β-VAE from a Gaussian fitted to the training codes, or from N(0, I)."""
    generator_training: Literal["after", "joint"] = "after"
    """"after": the β-VAE learns from the final normalised shapes once R-ASM is trained (two
    stages). "joint": it is also trained in every R-ASM step on the batch's normalised shapes,
    its loss back-propagated into the correspondence network (end-to-end), then continued for
    `vae_epochs` steps on the final shapes. See bench/joint_training.py for the comparison."""
    w_generator: float = 1e-3
    """Joint training only: weight of the β-VAE loss (per coordinate) in the R-ASM objective."""
    atlases: int | str = 1
    """M: atlases of mAtlas-R-ASMG (1: Atlas-R-ASMG), or "auto" to choose M in 1..max_atlases
    by prediction strength, how reproducible the clusters are across halves of the cohort
    (see models/multi_atlas.py)."""
    max_atlases: int = 6
    """Largest M that "auto" considers."""
    cluster_temperature: float = 0.25
    """tau: memberships r(k, m) ∝ pi_m exp(-E(k, m) / (tau s^2)), E the mean squared distance
    (mm^2) of shape k's normalised shape to atlas m and s^2 the mean within-cluster E. Above
    about 1 the atlases merge."""
    cluster_restarts: int = 10
    """n_init: k-means++ initialisations of the clustering; the lowest distortion is kept."""
    cluster_rounds: int = 1
    """Rounds in which every shape is matched to every atlas by the shared network and the
    memberships and atlases re-estimated (0: cluster on the shared atlas's correspondences)."""
    sample_relax: int | None = None
    """Tangential relaxation steps applied to generated shapes (vertices slide along the decoded
    surface, removing most folds; 0 keeps the raw output). None: the method's default, 5 for
    rasm (self-intersection-free samples 30% -> 97% on LVs) and 0 for cpd-pca (where relaxing
    flips a few thin atlas triangles in every sample); see bench/generator_choices.py."""
    cpd_beta: float = 1.0
    """cpd-pca: width of CPD's Gaussian motion kernel, in atlas RMS radii."""
    cpd_lambda: float = 2.0
    """cpd-pca: weight of CPD's motion-coherence prior."""
    cpd_rank: int = 150
    """cpd-pca: rank of the low-rank kernel (fast CPD)."""
    cpd_iterations: int = 100
    """cpd-pca: maximum EM iterations per registration."""
    groom_target_vertices: int = 2000
    """Vertex count raw meshes are groomed to when `fit` is given a raw folder."""
    groom_consensus_rounds: int = 0
    """Rounds of re-alignment onto the cohort's consensus when `fit` grooms a raw folder
    (`GroomOptions.consensus_rounds`)."""
    groom_cap_twist: bool = True
    """Turn capped shapes about their flat cap's normal to line the cap outlines up when `fit`
    grooms a raw folder (`GroomOptions.cap_twist`; configs before version 6: off)."""
    seed: int = 0
    """One seed for everything (initialisation, shuffling, VAE sampling)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: "auto" picks CUDA when available."""

    def __post_init__(self) -> None:
        enc = self.encoder
        if isinstance(enc, dict):
            enc = EncoderConfig(**{k: tuple(v) if k == "widths" else v for k, v in enc.items()})
        want = 6 if self.features == "hybrid" else 3
        if enc.in_channels != want:
            enc = dataclasses.replace(enc, in_channels=want)
        object.__setattr__(self, "encoder", enc)
        object.__setattr__(self, "vae_hidden", tuple(int(h) for h in self.vae_hidden))
        problems = []
        if self.method not in ("rasm", "cpd-pca"):
            problems.append(f"method must be 'rasm' or 'cpd-pca', got {self.method!r}")
        if self.vae_prior not in ("aggregate", "standard"):
            problems.append(f"vae_prior must be 'aggregate' or 'standard', got {self.vae_prior!r}")
        if self.generator_training not in ("after", "joint"):
            problems.append("generator_training must be 'after' or 'joint', got "
                            f"{self.generator_training!r}")
        if self.generator_training == "joint" and self.method != "rasm":
            problems.append("generator_training 'joint' needs method 'rasm' (PCA has no "
                            "gradient to share)")
        if not (self.atlases == "auto" or (isinstance(self.atlases, int)
                                           and not isinstance(self.atlases, bool)
                                           and self.atlases >= 1)):
            problems.append(f"atlases must be 'auto' or a positive whole number, got "
                            f"{self.atlases!r}")
        elif self.atlases != 1 and self.method != "rasm":
            problems.append("several atlases need method 'rasm'")
        if self.max_atlases < 1:
            problems.append(f"max_atlases must be at least 1, got {self.max_atlases}")
        if not self.cluster_temperature > 0:
            problems.append(f"cluster_temperature must be positive, got "
                            f"{self.cluster_temperature}")
        if self.cluster_restarts < 1 or self.cluster_rounds < 0:
            problems.append("cluster_restarts must be >= 1 and cluster_rounds >= 0")
        if self.w_generator < 0:
            problems.append(f"w_generator must be >= 0, got {self.w_generator}")
        if self.latent_dim is not None and self.latent_dim < 1:
            problems.append(f"latent_dim must be at least 1, got {self.latent_dim}")
        for name in ("beta", "vae_noise_mm", "vae_lr", "cpd_beta", "cpd_lambda"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("vae_epochs", "cpd_rank", "cpd_iterations"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.features not in ("spatial", "hybrid"):
            problems.append(f"features must be 'spatial' or 'hybrid', got {self.features!r}")
        if self.normalisation not in ("cohort", "shape", "whiten"):
            problems.append("normalisation must be 'cohort', 'shape' or 'whiten', got "
                            f"{self.normalisation!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for name in ("atlas_vertices", "epochs", "batch_size", "atlas_rounds", "checkpoint_every",
                     "groom_target_vertices"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.pose_iterations < 0:
            problems.append(f"pose_iterations must be 0 or more, got {self.pose_iterations}")
        elif self.pose_iterations and (self.method != "rasm" or self.atlases != 1):
            problems.append("pose_iterations needs a single-atlas R-ASM fit (method 'rasm', "
                            "atlases 1)")
        if self.ssm_modes < 0:
            problems.append(f"ssm_modes must be 0 or more, got {self.ssm_modes}")
        elif self.ssm_modes and (self.method != "rasm" or self.atlases != 1):
            problems.append("ssm_modes needs a single-atlas R-ASM fit (method 'rasm', atlases 1)")
        for name in ("ssm_rounds", "ssm_iterations"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.pose_relaxation <= MAX_POSE_RELAXATION:
            problems.append(f"pose_relaxation must be in (0, {MAX_POSE_RELAXATION:g}], got "
                            f"{self.pose_relaxation}")
        if self.groom_consensus_rounds < 0:
            problems.append("groom_consensus_rounds must be 0 or more, got "
                            f"{self.groom_consensus_rounds}")
        if self.atlas_vertices < 100:
            problems.append(f"atlas_vertices must be at least 100, got {self.atlas_vertices}")
        for name in ("sharpness", "transport_sharpness"):
            if not 0 < getattr(self, name) < float("inf"):
                problems.append(f"{name} must be positive and finite, got {getattr(self, name)}")
        if self.transport_iterations < 0:
            problems.append(f"transport_iterations must be >= 0, got {self.transport_iterations}")
        if self.deformation_smoothing < 0:
            problems.append("deformation_smoothing must be >= 0, got "
                            f"{self.deformation_smoothing}")
        if not 1.0 <= self.transport_relaxation < 2.0:
            problems.append("transport_relaxation must be in [1, 2), got "
                            f"{self.transport_relaxation}")
        if self.sample_relax is not None and self.sample_relax < 0:
            problems.append(f"sample_relax must be >= 0, got {self.sample_relax}")
        if self.refine_motion not in PULL_MOTIONS:
            problems.append(f"refine_motion must be one of {PULL_MOTIONS}, got "
                            f"{self.refine_motion!r}")
        for name in ("smooth_iterations", "refine_steps", "normal_refine_steps", "patience"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if problems:
            raise ShapeAtlasError("invalid fit configuration: " + "; ".join(problems))

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
        d = dict(d)
        if d.pop("format", "shapeatlas-fit-config") != "shapeatlas-fit-config":
            raise ShapeAtlasError(f"{source}: not a shapeatlas fit configuration")
        version = d.pop("version", CONFIG_VERSION)
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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ShapeAtlasError(f"{source}: unknown configuration fields {unknown}")
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | Path) -> "FitConfig":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()), source=str(path))
        except FileNotFoundError:
            raise ShapeAtlasError(f"{path}: no such configuration file") from None
        except json.JSONDecodeError as exc:
            raise ShapeAtlasError(f"{path}: not valid JSON ({exc})") from None
        except TypeError as exc:
            raise ShapeAtlasError(f"{path}: {exc}") from None

    def replace(self, **changes: Any) -> "FitConfig":
        """A copy with some fields changed (None values are ignored, handy for CLI flags)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
