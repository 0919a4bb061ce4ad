"""Aggregated report: one row per (method, mode, dataset) as CSV and Markdown, plus PNG plots.

Files written to ``OUT/report/``:

- ``summary.csv`` / ``summary.md``: columns :data:`SUMMARY_COLUMNS` (documented in :data:`COLUMN_DOCS`). Rows with
  ``dataset == "(macro mean)"`` average the per-dataset rows of a method (each dataset weighs the same).
- ``iou_by_size.png``: FLIP-protocol mean IoU per object-size bucket, one panel per dataset, one bar per method.
- ``miou_vs_clicks.png``: click-protocol mIoU@k for k = 1..max_clicks, one panel per dataset, one line per method.

Averages are over instances (as the reference's ``np.mean(iou_scores)``, spec 6.1); instances skipped for an empty
ground-truth mask are counted in ``skipped`` and left out of every mean. When the click loop stopped early
(``target_iou <= 1``), the last IoU is carried forward for mIoU@k (RITM instead truncates to the shortest run).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flip_core.eval.metrics import SIZE_BUCKETS, noc_nof

logger = logging.getLogger(__name__)

__all__ = ["SUMMARY_COLUMNS", "COLUMN_DOCS", "summarize", "write_report", "summary_markdown", "load_results"]

MACRO = "(macro mean)"
COLUMN_DOCS: dict[str, str] = {
    "method": "checkpoint tag <file stem>-<sha256[:8]>, or 'ellipse' (prompt-ellipse baseline)",
    "mode": "FLIP prediction mode (full / box / hierarchical), 'ellipse' for the baseline",
    "dataset": "converted dataset name; '(macro mean)' averages the method's dataset rows",
    "instances": "instances evaluated (FLIP protocol, or click protocol when only that ran)",
    "skipped": "instances skipped because the ground-truth mask is empty",
    "mean_iou": "FLIP protocol: mean IoU over instances (ignore regions excluded)",
    **{f"iou_{b[0]}": f"FLIP protocol: mean IoU of objects covering {b[0]} of the image" for b in SIZE_BUCKETS},
    **{f"n_{b[0]}": f"instances in size bucket {b[0]}" for b in SIZE_BUCKETS},
    "ms_per_instance": "FLIP protocol: mean wall time of one prediction (preprocess + model + postprocess), ms",
    "mean_tokens": "FLIP protocol: mean realised input patches",
    "noc85": "click protocol: mean number of clicks to IoU >= 0.85 (20 if never)",
    "noc90": "click protocol: mean number of clicks to IoU >= 0.90 (20 if never)",
    "noc95": "click protocol: mean number of clicks to IoU >= 0.95 (20 if never)",
    "nof85": "click protocol: count of instances with NoC@85 == max clicks",
    "nof90": "click protocol: count of instances with NoC@90 == max clicks",
    "nof95": "click protocol: count of instances with NoC@95 == max clicks",
    "miou@1": "click protocol: mean IoU after 1 click",
    "5-miou": "click protocol: mean IoU after 5 clicks (SegNext 5-mIoU)",
    "ms_per_click": "click protocol: wall time per click, ms (RITM SPC x 1000)",
}
SUMMARY_COLUMNS: tuple[str, ...] = tuple(COLUMN_DOCS)


def load_results(paths: list[str]) -> dict[str, pa.Table]:
    """Concatenate result files by protocol: ``{"flip": table, "clicks": table}`` (absent protocols omitted)."""
    by_protocol: dict[str, list[pa.Table]] = {}
    for p in paths:
        t = pq.read_table(p)
        if t.num_rows:
            by_protocol.setdefault(t.column("protocol")[0].as_py(), []).append(t)
    return {k: pa.concat_tables(v, promote_options="permissive") for k, v in by_protocol.items()}


def _mean(values) -> float:
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else float("nan")


def _group(table: pa.Table) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for r in table.to_pylist():
        groups.setdefault((r["method"], r["mode"], r["dataset"]), []).append(r)
    return groups


def _flip_metrics(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    out = {"instances": len(ok), "skipped": len(rows) - len(ok), "mean_iou": _mean(r["iou"] for r in ok)}
    for label, _, _ in SIZE_BUCKETS:
        sel = [r for r in ok if r["size_bucket"] == label]
        out[f"iou_{label}"] = _mean(r["iou"] for r in sel)
        out[f"n_{label}"] = len(sel)
    out["ms_per_instance"] = _mean(r["total_ms"] for r in ok)
    out["mean_tokens"] = _mean(r["num_tokens"] for r in ok)
    return out


def click_curve(rows: list[dict], max_clicks: int | None = None) -> np.ndarray:
    """mIoU@k, k = 1..K, over the ``ok`` rows (last IoU carried forward after an early stop)."""
    ious = [r["ious"] for r in rows if r["status"] == "ok" and r.get("ious")]
    if not ious:
        return np.zeros(0)
    k = max_clicks or max(len(x) for x in ious)
    padded = np.array([list(x) + [x[-1]] * (k - len(x)) for x in ious], dtype=np.float64)
    return padded.mean(axis=0)


def _click_metrics(rows: list[dict], max_clicks: int) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    out = {"instances": len(ok), "skipped": len(rows) - len(ok)}
    noc, nof = noc_nof([r["ious"] for r in ok], (0.85, 0.90, 0.95), max_clicks)
    for t, name in zip((0.85, 0.90, 0.95), ("85", "90", "95")):
        out[f"noc{name}"] = noc[t]
        out[f"nof{name}"] = nof[t]
    curve = click_curve(ok, max_clicks)
    out["miou@1"] = float(curve[0]) if curve.size else float("nan")
    out["5-miou"] = float(curve[4]) if curve.size >= 5 else float("nan")
    clicks = sum(len(r["ious"]) for r in ok)
    out["ms_per_click"] = sum(r["total_ms"] for r in ok) / clicks if clicks else float("nan")
    return out


def summarize(tables: dict[str, pa.Table], max_clicks: int = 20) -> list[dict]:
    """Summary rows (:data:`SUMMARY_COLUMNS`), sorted by method, mode, dataset, then one macro row per method."""
    merged: dict[tuple, dict] = {}
    if "flip" in tables:
        for key, rows in _group(tables["flip"]).items():
            merged.setdefault(key, {}).update(_flip_metrics(rows))
    if "clicks" in tables:
        for key, rows in _group(tables["clicks"]).items():
            m = _click_metrics(rows, max_clicks)
            target = merged.setdefault(key, {})
            for k, v in m.items():
                if k not in target:
                    target[k] = v
    out = []
    for (method, mode, dataset), metrics in sorted(merged.items()):
        row = {c: float("nan") for c in SUMMARY_COLUMNS}
        row.update(method=method, mode=mode, dataset=dataset, **metrics)
        out.append(row)
    for method, mode in sorted({(r["method"], r["mode"]) for r in out}):
        rows = [r for r in out if r["method"] == method and r["mode"] == mode]
        if len(rows) < 2:
            continue
        macro = {c: _mean(r[c] for r in rows) for c in SUMMARY_COLUMNS[3:]}
        for c in ("instances", "skipped") + tuple(f"n_{b[0]}" for b in SIZE_BUCKETS) + ("nof85", "nof90", "nof95"):
            macro[c] = sum(r[c] for r in rows if not (isinstance(r[c], float) and math.isnan(r[c])))
        out.append({"method": method, "mode": mode, "dataset": MACRO, **macro})
    return out


def _fmt(value, column: str) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column.startswith(("n_", "nof")) or column in ("instances", "skipped"):
        return str(int(value))
    if column.startswith(("iou", "mean_iou", "miou", "5-miou")):
        return f"{100 * value:.2f}"
    return f"{value:.2f}"


def summary_markdown(rows: list[dict]) -> str:
    """Markdown table of the summary (IoU columns in %, NoC in clicks, times in ms)."""
    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c), c) for c in SUMMARY_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _write_csv(rows: list[dict], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(SUMMARY_COLUMNS)
        for r in rows:
            w.writerow(["" if (isinstance(r.get(c), float) and math.isnan(r[c])) else r.get(c)
                        for c in SUMMARY_COLUMNS])
    tmp.replace(path)


def _plots(tables: dict[str, pa.Table], rows: list[dict], report: Path, max_clicks: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    data_rows = [r for r in rows if r["dataset"] != MACRO]
    datasets = sorted({r["dataset"] for r in data_rows})
    methods = sorted({(r["method"], r["mode"]) for r in data_rows})
    labels = [b[0] for b in SIZE_BUCKETS]
    fig, axes = _panel_grid(plt, len(datasets))
    width = 0.8 / max(1, len(methods))
    for ax, ds in zip(axes.flat, datasets):
        for m, (method, mode) in enumerate(methods):
            r = next((x for x in data_rows if (x["method"], x["mode"], x["dataset"]) == (method, mode, ds)), None)
            vals = [np.nan if r is None else r[f"iou_{b}"] for b in labels]
            ax.bar(np.arange(4) + m * width, np.nan_to_num(np.array(vals, float)) * 100, width,
                   label=method if mode in ("ellipse", method) else f"{method} [{mode}]")
        ax.set_xticks(np.arange(4) + 0.4 - width / 2, labels)
        ax.set_title(ds)
        ax.set_ylabel("mean IoU (%)")
        ax.set_ylim(0, 100)
    if methods:
        axes.flat[0].legend(fontsize=7)
    written.append(_save_panels(plt, fig, axes, len(datasets),
                                "FLIP protocol: IoU by object size (fraction of image area)",
                                report / "iou_by_size.png"))
    if "clicks" in tables:
        groups = _group(tables["clicks"])
        cds = sorted({k[2] for k in groups})
        fig, axes = _panel_grid(plt, len(cds))
        for ax, ds in zip(axes.flat, cds):
            for (method, mode, d), rs in sorted(groups.items()):
                if d != ds:
                    continue
                curve = click_curve(rs, max_clicks)
                if curve.size:
                    ax.plot(np.arange(1, curve.size + 1), curve * 100, marker=".",
                            label=method if mode == "ellipse" else f"{method} [{mode}]")
            ax.set_title(ds)
            ax.set_xlabel("clicks")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("mIoU (%)")
            ax.set_ylim(0, 100)
            ax.legend(fontsize=7)
        written.append(_save_panels(plt, fig, axes, len(cds), "Click protocol: mIoU vs number of clicks",
                                    report / "miou_vs_clicks.png"))
    return written


def _panel_grid(plt, n: int):
    """Figure with one 5 x 3.6 inch panel per dataset, at most 3 per row (at least one panel)."""
    ncol = min(3, max(1, n))
    nrow = math.ceil(n / ncol) if n else 1
    return plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.6 * nrow), squeeze=False)


def _save_panels(plt, fig, axes, used: int, title: str, path: Path) -> Path:
    """Hide the unused panels, title, write ``path`` (PNG, 100 dpi) and close the figure."""
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(result_paths: list[str], out_dir: str | Path, max_clicks: int = 20) -> tuple[list[dict], list[Path]]:
    """Aggregate result files into ``out_dir/report/``.

    Returns:
        ``(summary rows, written files)``.

    Raises:
        ValueError: if there are no result rows at all.
    """
    tables = load_results(result_paths)
    if not tables:
        raise ValueError(f"no evaluation results to report ({len(result_paths)} result files, all empty)")
    rows = summarize(tables, max_clicks)
    report = Path(out_dir) / "report"
    report.mkdir(parents=True, exist_ok=True)
    _write_csv(rows, report / "summary.csv")
    md = report / "summary.md"
    legend = "\n".join(f"- `{c}`: {d}" for c, d in COLUMN_DOCS.items())
    md.write_text("# Evaluation summary\n\nIoU columns in %, times in ms.\n\n" + summary_markdown(rows)
                  + "\n## Columns\n\n" + legend + "\n")
    files = [report / "summary.csv", md] + _plots(tables, rows, report, max_clicks)
    return rows, files
