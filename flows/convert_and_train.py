"""``convert-and-train`` flow: convert -> train -> evaluate, each stage a subflow with its own artifact.

Layout under ``out_dir``::

    OUT/procedural-data/       generated scenes (only when no source is given)
    OUT/shards/<source>/       converted datasets (shards, manifest.parquet, rejects.parquet, index.json)
    OUT/train/                 the training run (metrics, TensorBoard, checkpoints/latest.ckpt, best.ckpt)
    OUT/eval/report/           the evaluation report (summary CSV / Markdown, PNG plots)

One Ray connection is shared by the three stages. Also a script: ``python flows/convert_and_train.py ARGS`` is
``flip run ARGS`` (what ``ray submit cluster/gpu-cluster.yaml flows/convert_and_train.py -- ARGS`` runs on the head).
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict

from flows.convert import convert
from flows.evaluate import evaluate
from flows.params import ConvertParams, DataSource, EvalParams, TrainParams, default_sources
from flows.runtime import ray_runtime
from flows.train import train

__all__ = ["convert_and_train", "PipelineOutputs"]


class PipelineOutputs(BaseModel):
    """Where a pipeline run left its outputs."""

    model_config = ConfigDict(frozen=True)

    shards: dict[str, str]
    """Source name -> converted dataset directory."""
    run_dir: str
    """Training run directory."""
    checkpoint: str
    """Latest FLIP checkpoint."""
    report_dir: str | None
    """Evaluation report directory (None when evaluation was skipped)."""


@flow(name="convert-and-train")
def convert_and_train(sources: list[DataSource] | None = None, out_dir: str = "flip-runs/default",
                      conversion: ConvertParams = ConvertParams(), training: TrainParams = TrainParams(),
                      evaluation: EvalParams = EvalParams(), ray_address: str | None = None,
                      skip_evaluation: bool = False) -> PipelineOutputs:
    """Convert ``sources`` (default: generated procedural scenes), train on those with ``use`` train/both, and
    evaluate the latest checkpoint on those with ``use`` eval/both.

    Raises:
        ValueError: no source to train on, or none to evaluate on (unless ``skip_evaluation``).
    """
    out = Path(out_dir)
    sources = sources or default_sources(str(out / "procedural-data"))
    train_names = [s.label for s in sources if s.use in ("train", "both")]
    eval_names = [s.label for s in sources if s.use in ("eval", "both")]
    if not train_names or not (eval_names or skip_evaluation):
        raise ValueError(f"need a source to train on and one to evaluate on; got train={train_names}, "
                         f"eval={eval_names} (set `use` on the sources)")
    logger = get_run_logger()
    with ray_runtime(ray_address) as where:
        logger.info("pipeline in %s; Ray: %s", out.resolve(), where)
        shards = convert(sources, str(out / "shards"), conversion, ray_address)
        checkpoint = train([shards[n] for n in train_names], str(out / "train"), training, ray_address)
        report_dir = None
        if not skip_evaluation:
            report_dir = evaluate([checkpoint], [shards[n] for n in eval_names], str(out / "eval"), evaluation,
                                  ray_address)
    outputs = PipelineOutputs(shards=shards, run_dir=str(out / "train"), checkpoint=checkpoint,
                              report_dir=report_dir)
    logger.info("shards: %s; checkpoint: %s; report: %s", shards, checkpoint, report_dir)
    return outputs


if __name__ == "__main__":
    from flows.cli import main

    sys.exit(main(sys.argv[1:]))
