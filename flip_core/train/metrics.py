"""Run metrics on rank 0: JSON lines (``RUN_DIR/metrics.jsonl``), TensorBoard (``RUN_DIR/tensorboard``) and a
one-line progress log. The Ray dashboard gets the same numbers through ``ray.train.report``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

__all__ = ["MetricsWriter", "read_metrics", "format_progress"]

logger = logging.getLogger(__name__)


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a metrics file, the last one per step, in step order."""
    path = Path(path)
    if not path.is_file():
        return []
    by_step = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step[rec["step"]] = rec
    return [by_step[s] for s in sorted(by_step)]


def format_progress(rec: dict, total_steps: int) -> str:
    """``step 40/100 loss 3.1e-01 iou 71.5% groups 60|...|90 pts 296|...|292 1234 samples/s 56k tok/s lr 6.0e-04``."""
    groups = "|".join(f"{100 * v:.0f}" for v in rec["group_iou"])
    counts = "|".join(str(c) for c in rec["samples_per_group"])
    return (f"step {rec['step']}/{total_steps} loss {rec['loss']:.3e} iou {100 * rec['iou']:.1f}% "
            f"groups {groups} pts {counts} {rec['samples_per_s']:.1f} samples/s {rec['tokens_per_s']:.0f} tok/s "
            f"lr {rec['lr']:.1e}")


class MetricsWriter:
    """Appends one JSON record per step and mirrors scalars to TensorBoard (rank 0 only).

    On start at ``start_step`` (a resume), records of later steps left by an interrupted attempt are removed
    first, so the file holds exactly one record per completed step.
    """

    def __init__(self, run_dir: str | Path, start_step: int) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        kept = [r for r in read_metrics(self.path) if r["step"] <= start_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._fh = self.path.open("a")
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=start_step + 1)

    def write(self, rec: dict) -> None:
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()
        step = rec["step"]
        for key in ("loss", "iou", "samples_per_s", "tokens_per_s", "lr"):
            self._tb.add_scalar(f"train/{key}", rec[key], step)
        for g, (iou, n) in enumerate(zip(rec["group_iou"], rec["samples_per_group"])):
            self._tb.add_scalar(f"group_iou/{g}", iou, step)
            self._tb.add_scalar(f"group_points/{g}", n, step)

    def close(self) -> None:
        self._fh.close()
        self._tb.close()
