"""Typed training configuration (everything a Ray Train worker needs travels in one ``TrainConfig``).

Defaults follow the reference training setup (flip-spec §5): 4 prompts per image, token budget
Beta-distributed on [32, 2048] with mean 512, 2048 mask points in 7 boundary-distance groups with dynamic
re-weighting (floor 4 per group), Ranger with lr = weight decay = 6e-4, fp32, no gradient clipping.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DataConfig", "TrainConfig", "TrainResult", "DEEPSPEED_CONFIG_DIR", "MODEL_SIZES", "NUM_MASK_GROUPS"]

MODEL_SIZES = ("tiny", "small", "middle", "large")
NUM_MASK_GROUPS = 7
DEEPSPEED_CONFIG_DIR = Path(__file__).resolve().parents[2] / "cluster" / "deepspeed"


@dataclass(frozen=True, kw_only=True, slots=True)
class DataConfig:
    """How training samples are drawn and built (flip-spec §5.3, §1.5, §2.2-2.3, §3.6)."""

    manifests: tuple[str, ...]
    """Converted datasets: manifest.parquet, index.json or their directory, one per dataset."""
    weights: tuple[float | None, ...] = ()
    """Mixing weight per manifest (None or <= 0: proportional to size); empty means all proportional."""
    images_per_batch: int = 2
    """Images per rank per micro-step (reference: 16 for tiny/small/middle, 8 for large, per GPU)."""
    num_masks_per_image: int = 4
    """Prompts drawn per image (without replacement when the image has enough usable instances)."""
    min_tokens: int = 32
    """Minimum requested and realised patch count; samples with fewer realised patches are redrawn."""
    max_tokens: int = 2048
    """Maximum requested patch count."""
    mean_tokens: int = 512
    """Mean of the Beta-distributed token budget."""
    num_mask_points: int = 2048
    """Mask target points per prompt."""
    min_samples_per_group: int = 4
    """Floor of the dynamic per-group point count (spec §5.4)."""
    dynamic_sampling: bool = True
    """Re-weight the per-group point counts by 1 - EMA group IoU every step (spec §5.4)."""
    ema_steps: float = 1000.0
    """EMA time constant of the group IoUs in steps (decay exp(-1/ema_steps))."""
    max_redraws: int = 8
    """Redraws of one prompt (new instance, augmentation and sampling) before it is dropped and counted."""
    loader_workers: int = 1
    """DataLoader worker processes per rank (0 = build batches in the training process)."""
    prefetch_factor: int = 2
    """Micro-batches prefetched per loader worker."""
    convention: str = "exact"
    """Frame N -> P/M convention for positions ("exact" or "reference", see flip_core.gaussian)."""
    backend: str = "cython"
    """Sampling kernels: "cython" (compiled cython_ops) or "numpy" (cython_ops.reference)."""
    verify: str = "sha256"
    """Shard check before training: "sha256" (every file against index.json) or "exists" (cheap, for huge sets)."""

    def __post_init__(self) -> None:
        if not self.manifests:
            raise ValueError("DataConfig needs at least one manifest")
        if self.weights and len(self.weights) != len(self.manifests):
            raise ValueError(f"{len(self.weights)} weights for {len(self.manifests)} manifests")
        for name in ("images_per_batch", "num_masks_per_image", "min_tokens", "num_mask_points", "max_redraws"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.min_tokens <= self.mean_tokens <= self.max_tokens:
            raise ValueError(f"need min <= mean <= max tokens, got {self.min_tokens}, {self.mean_tokens}, "
                             f"{self.max_tokens}")
        if self.min_samples_per_group * NUM_MASK_GROUPS > self.num_mask_points:
            raise ValueError(f"min_samples_per_group {self.min_samples_per_group} x {NUM_MASK_GROUPS} groups "
                             f"exceeds num_mask_points {self.num_mask_points}")
        if self.loader_workers < 0 or self.prefetch_factor < 1:
            raise ValueError("loader_workers must be >= 0 and prefetch_factor >= 1")
        if self.convention not in ("exact", "reference"):
            raise ValueError(f"convention must be 'exact' or 'reference', got {self.convention!r}")
        if self.verify not in ("sha256", "exists"):
            raise ValueError(f"verify must be 'sha256' or 'exists', got {self.verify!r}")
        if self.backend not in ("cython", "numpy"):
            raise ValueError(f"backend must be 'cython' or 'numpy', got {self.backend!r}")

    @property
    def mixing_weights(self) -> tuple[float | None, ...]:
        """One weight per manifest (None = proportional to size)."""
        return self.weights or (None,) * len(self.manifests)

    @property
    def default_samples_per_group(self) -> tuple[int, ...]:
        """``[n//7 + n%7] + [n//7]*6``, the reference's initial split (spec §3.6 item 6)."""
        base = self.num_mask_points // NUM_MASK_GROUPS
        return (base + self.num_mask_points % NUM_MASK_GROUPS,) + (base,) * (NUM_MASK_GROUPS - 1)


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """One training run: model, data, optimisation, cluster and checkpointing settings."""

    model: str
    """Model size: one of ``MODEL_SIZES``."""
    data: DataConfig
    """Sample construction and loading."""
    run_dir: str
    """Output directory (metrics, TensorBoard, checkpoints, Ray storage)."""
    steps: int = 1000
    """Total optimizer steps; with ``resume`` the run continues from its latest checkpoint up to this."""
    seed: int = 1234
    """Seed of model init, sampler permutations and every per-draw generator."""
    lr: float = 6e-4
    """Ranger learning rate (reference: 6e-4, no schedule)."""
    weight_decay: float = 6e-4
    """Ranger decoupled weight decay (reference: 6e-4)."""
    gradient_accumulation_steps: int = 1
    """Micro-steps per optimizer step (written into the DeepSpeed config where it says "auto")."""
    num_workers: int = 1
    """Ray Train workers (= data-parallel ranks)."""
    cpus_per_worker: int = 1
    """CPUs reserved per Ray Train worker."""
    use_gpu: bool = False
    """One GPU per worker; bf16 when the GPU supports it (the DeepSpeed config's "auto")."""
    ray_address: str | None = None
    """Ray cluster to join; None starts a local one on 127.0.0.1."""
    deepspeed_config: str = str(DEEPSPEED_CONFIG_DIR / "zero0.json")
    """DeepSpeed JSON config; an "optimizer" section there replaces the client Ranger."""
    checkpoint_every: int = 500
    """Save a checkpoint every K optimizer steps (and at the end)."""
    keep_checkpoints: int = 3
    """Most recent checkpoints kept (plus ``best.ckpt``)."""
    log_every: int = 10
    """One progress log line every N steps."""
    resume: bool = False
    """Continue from the latest checkpoint in ``run_dir`` (error when there is none)."""
    dashboard: bool = False
    """Start the Ray dashboard with the local Ray (127.0.0.1:8265 by default; metrics appear there)."""
    max_failures: int = 1
    """Worker-group restarts from the last checkpoint (Ray Train FailureConfig)."""
    fail_at_step: int | None = None
    """Testing hook: raise in rank 0 once after this step (exercises the FailureConfig restart)."""

    def __post_init__(self) -> None:
        if self.model not in MODEL_SIZES:
            raise ValueError(f"unknown model size {self.model!r}; valid: {', '.join(MODEL_SIZES)}")
        for name in ("steps", "gradient_accumulation_steps", "num_workers", "cpus_per_worker",
                     "checkpoint_every", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain dict (JSON-serialisable) form, stored as ``RUN_DIR/train_config.json``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`."""
        data = DataConfig(**{**d["data"], "manifests": tuple(d["data"]["manifests"]),
                             "weights": tuple(d["data"].get("weights", ()))})
        return cls(**{**d, "data": data})


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainResult:
    """What :func:`flip_core.train.train` returns."""

    run_dir: str
    """The run directory."""
    model: str
    """Model size."""
    start_step: int
    """Step the run started from (0, or the resumed checkpoint's step)."""
    final_step: int
    """Last completed optimizer step."""
    final_loss: float
    """Loss of the last step (rank mean)."""
    final_iou: float
    """Sampled-point IoU of the last step (rank mean)."""
    samples_per_s: float
    """Object samples (prompts) per second over all ranks, averaged over the run's steps."""
    wall_s: float
    """Wall time of the whole call, including Ray start-up and teardown."""
    metrics_path: str
    """JSON-lines metrics file (one record per step)."""
    latest_checkpoint: str | None
    """FLIP checkpoint of the last saved step (``checkpoints/latest.ckpt``)."""
    best_checkpoint: str | None
    """FLIP checkpoint with the lowest checkpoint-window loss (``checkpoints/best.ckpt``)."""
    rejects: dict[str, int] = field(default_factory=dict)
    """Prompts dropped or redrawn by reason, summed over ranks."""
