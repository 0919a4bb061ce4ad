"""Evaluation settings and result types (plain frozen dataclasses; they cross Ray and Prefect boundaries)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from flip_core.eval.adapter import ClickAdapterConfig
from flip_core.eval.predictors import MODES

__all__ = ["PROTOCOLS", "EvalConfig", "EvalResult", "TaskOutcome"]

PROTOCOLS = ("flip", "clicks")
"""``flip``: ground-truth Gaussian prompt, one IoU per instance. ``clicks``: RITM click protocol via the adapter."""


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalConfig:
    """Everything ``flip evaluate`` / :func:`flip_core.eval.evaluate` needs."""

    checkpoints: tuple[str, ...]
    """FLIP checkpoints (``save_flip_checkpoint`` files). May be empty when only the baseline is wanted."""
    data: tuple[str, ...]
    """Converted datasets: ``manifest.parquet``, ``index.json`` or their directory; or a directory whose immediate
    subdirectories are converted datasets."""
    out_dir: str
    """Output directory: ``results/`` (per-instance Parquet), ``calibration/``, ``report/``."""
    protocols: tuple[str, ...] = PROTOCOLS
    """Subset of :data:`PROTOCOLS`."""
    modes: tuple[str, ...] = ("box",)
    """FLIP prediction modes (``full``, ``box`` = the reference's ``--optimized`` 5-sigma box, ``hierarchical``)."""
    baseline: bool = True
    """Evaluate the prompt-ellipse baseline beside the checkpoints."""
    ray_address: str | None = None
    """Ray cluster address; None starts a local Ray (``address="local"``)."""
    num_workers: int = 2
    """Tasks run at the same time (1 CPU each); 0 runs every task in this process without Ray."""
    seed: int = 0
    """Seeds every random draw (patch sampling per instance, instance subsets, baseline folds)."""
    max_instances: int | None = None
    """Evaluate at most this many instances per dataset (a seeded subset, kept in manifest order); None = all."""
    max_clicks: int = 20
    """Clicks per instance in the click protocol (RITM: 20)."""
    target_iou: float = 1.01
    """Early-stop IoU of the click protocol; 1.01 (the default) runs all clicks so mIoU@k is defined."""
    num_tokens: int = 512
    """FLIP input tokens (spec 6.1 ``avg_num_tokens``)."""
    overlap_threshold: float = 2.67
    """Patch-overlap threshold (spec 6.1 PyTorch default)."""
    coverage: float = 1.44
    """Patch coverage (spec 6.1 PyTorch default)."""
    convention: str = "exact"
    """Frame-conversion convention for positions (``exact`` or ``reference``)."""
    adapter: ClickAdapterConfig = field(default_factory=ClickAdapterConfig)
    """Click -> Gaussian adapter settings (a dict of its fields is accepted and converted)."""
    calibration_instances: int = 200
    """Instances per fold (seeded subsample) used to choose the baseline radius."""
    torch_threads: int = 1
    """``torch.set_num_threads`` in each task (1 = one core per worker)."""

    def __post_init__(self):
        if isinstance(self.adapter, dict):  # e.g. from a flow's JSON overrides
            object.__setattr__(self, "adapter", ClickAdapterConfig(**self.adapter))
        for name in ("checkpoints", "data", "protocols", "modes"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"EvalConfig.{name} must be a sequence of strings, got the string {value!r}")
            object.__setattr__(self, name, tuple(str(v) for v in value))
        if not self.data:
            raise ValueError("EvalConfig.data is empty: give at least one converted dataset")
        if not self.checkpoints and not self.baseline:
            raise ValueError("nothing to evaluate: no checkpoints and the baseline is disabled")
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or not self.protocols:
            raise ValueError(f"unknown protocol(s) {bad or '(none)'}; valid: {', '.join(PROTOCOLS)}")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"unknown mode(s) {bad or '(none)'}; valid: {', '.join(MODES)}")
        if self.num_workers < 0 or self.max_clicks < 1 or self.num_tokens < 1 or self.torch_threads < 1:
            raise ValueError(
                "num_workers must be >= 0 and max_clicks, num_tokens, torch_threads >= 1; got "
                f"{self.num_workers}, {self.max_clicks}, {self.num_tokens}, {self.torch_threads}"
            )
        if self.max_instances is not None and self.max_instances < 1:
            raise ValueError(f"max_instances must be >= 1 or None, got {self.max_instances}")
        if self.convention not in ("exact", "reference"):
            raise ValueError(f"convention must be 'exact' or 'reference', got {self.convention!r}")
        if self.calibration_instances < 1:
            raise ValueError(f"calibration_instances must be >= 1, got {self.calibration_instances}")

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskOutcome:
    """What one (method, shard) task did."""

    method: str
    dataset: str
    shard: str
    files: tuple[str, ...]
    """Result files written by this task."""
    instances: int
    wall_s: float


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalResult:
    """Summary of one :func:`flip_core.eval.evaluate` call."""

    tasks_planned: int
    tasks_run: tuple[TaskOutcome, ...]
    tasks_skipped: tuple[tuple[str, str, str], ...]
    """``(method, dataset, shard)`` of the tasks whose results were already complete and current."""
    report_dir: str
    summary: tuple[dict, ...]
    """The rows of ``report/summary.csv``."""
    baseline_radii: dict
    """``dataset -> [r_fold0, r_fold1, n0, n1]``: radius chosen on each fold (used on the other fold)."""
    wall_s: float

    def to_markdown(self) -> str:
        from flip_core.eval.report import summary_markdown

        head = (
            f"Evaluation: {self.tasks_planned} tasks planned, {len(self.tasks_run)} run, "
            f"{len(self.tasks_skipped)} already done; {self.wall_s:.1f} s; report in {self.report_dir}\n\n"
        )
        return head + summary_markdown(list(self.summary))
