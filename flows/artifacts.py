"""Markdown for the Prefect artifacts the flows publish (pure functions; :func:`publish` is the only Prefect call).

Artifact keys: ``conversion-summary`` (counts and rejects per source), ``training-summary`` (the loss / IoU curve
at evenly spaced steps and the checkpoints), ``evaluation-report`` (the report table and links to its plots).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["markdown_table", "conversion_markdown", "training_markdown", "evaluation_markdown", "publish",
           "curve_rows"]

MAX_REJECT_ROWS = 50
CURVE_POINTS = 10


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; ``|`` and newlines inside cells are escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def conversion_markdown(summaries: Mapping[str, Any], out_dirs: Mapping[str, Path],
                        rejects: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Conversion artifact: one count row per source, then up to ``MAX_REJECT_ROWS`` reject rows per source.

    Args:
        summaries: source name -> ``flip_core.convert.ConversionSummary``.
        out_dirs: source name -> its output directory.
        rejects: source name -> rows of its ``rejects.parquet`` (``source_id, stage, reason, message``).
    """
    rows = []
    for name, summary in summaries.items():
        by_reason = ", ".join(f"{k}: {v}" for k, v in sorted(summary.rejects_by_reason.items())) or "none"
        rows.append([name, summary.images, summary.instances, sum(summary.rejects_by_reason.values()), by_reason,
                     summary.shards, summary.skipped_shards, f"{summary.wall_s:.1f}", str(out_dirs[name])])
    parts = ["# Conversion", "", markdown_table(
        ["source", "images", "instances", "rejects", "rejects by reason", "shards", "shards reused", "wall s",
         "output"], rows)]
    for name, rows_ in rejects.items():
        if not rows_:
            continue
        shown = rows_[:MAX_REJECT_ROWS]
        parts += ["", f"## Rejects: {name} ({len(shown)} of {len(rows_)} shown)", "", markdown_table(
            ["source_id", "stage", "reason", "message"],
            [[r.get("source_id"), r.get("stage"), r.get("reason"), r.get("message")] for r in shown])]
    return "\n".join(parts)


def curve_rows(records: Sequence[Mapping[str, Any]], keys: Sequence[str],
               points: int = CURVE_POINTS) -> list[list[Any]]:
    """Rows ``[step, *keys]`` at up to ``points`` evenly spaced records (always the first and the last)."""
    if not records:
        return []
    n = len(records)
    picks = sorted({round(i * (n - 1) / max(points - 1, 1)) for i in range(min(points, n))})
    return [[records[i].get("step", i)] + [records[i].get(k, float("nan")) for k in keys] for i in picks]


def training_markdown(records: Sequence[Mapping[str, Any]], checkpoints: Mapping[str, Any], run_dir: Path,
                      keys: Sequence[str] = ("loss", "iou")) -> str:
    """Training artifact: the curve at evenly spaced steps, the best value of each key, and the checkpoints."""
    parts = ["# Training", "", f"run directory: `{run_dir}`", ""]
    if records:
        present = [k for k in keys if any(k in r for r in records)]
        parts.append(markdown_table(["step", *present], curve_rows(records, present)))
        best = []
        for key in present:
            values = [(r[key], r.get("step")) for r in records if isinstance(r.get(key), (int, float))]
            pick = min(values) if "loss" in key else max(values)
            best.append([key, pick[0], pick[1]])
        parts += ["", markdown_table(["metric", "best", "at step"], best)]
    else:
        parts.append("no metrics were logged")
    parts += ["", markdown_table(["checkpoint", "path"], [[k, f"`{v}`"] for k, v in checkpoints.items()])]
    return "\n".join(parts)


def evaluation_markdown(report_table: str, plots: Sequence[Path], report_dir: Path) -> str:
    """Evaluation artifact: the report's Markdown table, then a link per plot (``file://`` URIs of the PNGs)."""
    parts = ["# Evaluation", "", f"report directory: `{report_dir}`", "", report_table.strip()]
    if plots:
        parts += ["", "## Plots", ""] + [f"- [{p.name}]({Path(p).resolve().as_uri()})" for p in plots]
    return "\n".join(parts)


def publish(key: str, markdown: str, description: str) -> None:
    """Create the Markdown artifact ``key`` on the current flow run (Prefect keeps every version of a key)."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=markdown, key=key, description=description)
