"""DeepSpeed engine construction: config loading/resolution and ``deepspeed.initialize`` on CPU (gloo) or GPU.

The DeepSpeed config files live in ``cluster/deepspeed/`` (zero0/zero1/zero2). Values ``"auto"`` are filled in
here from the :class:`~flip_core.train.config.TrainConfig`: the micro-batch (images per rank per micro-step),
the gradient accumulation steps, and ``bf16.enabled`` (True only with ``use_gpu`` on a GPU that supports bf16;
fp32 otherwise, like the reference's ``precision=32``). Without an ``"optimizer"`` section the client optimizer
is :class:`~flip_core.train.ranger.Ranger` (reference §5.2); with one, DeepSpeed builds its own.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import torch

from flip_core.train.config import TrainConfig
from flip_core.train.ranger import Ranger

__all__ = ["load_deepspeed_config", "resolve_deepspeed_config", "init_distributed", "build_engine", "free_port"]

logger = logging.getLogger(__name__)


def load_deepspeed_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a DeepSpeed JSON config.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid JSON or not a JSON object (message names the file and position).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DeepSpeed config {path} does not exist")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"DeepSpeed config {path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(f"DeepSpeed config {path} must be a JSON object, got {type(config).__name__}")
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"DeepSpeed config {path}: zero_optimization.stage must be 0-3, got {stage!r}")
    return config


def resolve_deepspeed_config(config: dict[str, Any], train: TrainConfig, *, world_size: int) -> dict[str, Any]:
    """Fill the ``"auto"`` values of a DeepSpeed config from ``train`` (returns a new dict).

    ``train_batch_size`` is dropped (DeepSpeed derives it as micro x accumulation x world size). Explicit
    values that disagree with ``train`` raise ``ValueError`` naming both.
    """
    out = json.loads(json.dumps(config))
    wanted = {"train_micro_batch_size_per_gpu": train.data.images_per_batch,
              "gradient_accumulation_steps": train.gradient_accumulation_steps}
    for key, value in wanted.items():
        given = out.get(key, "auto")
        if given not in ("auto", value):
            raise ValueError(f"DeepSpeed config sets {key}={given} but the training config needs {value}")
        out[key] = value
    out.pop("train_batch_size", None)
    bf16 = out.setdefault("bf16", {})
    if bf16.get("enabled", "auto") == "auto":
        bf16["enabled"] = bool(train.use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if out.get("fp16", {}).get("enabled") == "auto":
        out["fp16"]["enabled"] = False
    out.setdefault("gradient_clipping", 0.0)
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    return out


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(use_gpu: bool = False) -> None:
    """Initialise torch.distributed for DeepSpeed (gloo on CPU, nccl on GPU) if it is not already.

    Under Ray Train the process group exists and RANK/LOCAL_RANK/WORLD_SIZE are set. A bare process (tests,
    the overfit check) becomes a world of one on 127.0.0.1 (stack notes: DeepSpeed needs LOCAL_RANK set).
    """
    import deepspeed

    if not torch.distributed.is_initialized():
        for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    os.environ.setdefault("LOCAL_RANK", "0")
    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")


def build_engine(model: torch.nn.Module, train: TrainConfig, ds_config: dict[str, Any]):
    """``deepspeed.initialize`` with Ranger as the client optimizer unless ``ds_config`` has an optimizer.

    Args:
        model: the FLIP model (fp32 parameters; DeepSpeed casts for bf16).
        train: the run's config (lr, weight decay, micro-batch, accumulation, GPU use).
        ds_config: a DeepSpeed config dict (``"auto"`` values are resolved here).

    Returns:
        The ``DeepSpeedEngine``.
    """
    import deepspeed

    init_distributed(train.use_gpu)
    resolved = resolve_deepspeed_config(ds_config, train, world_size=torch.distributed.get_world_size())
    optimizer = None
    if "optimizer" not in resolved:
        optimizer = Ranger(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=resolved,
                                      model_parameters=None if optimizer else model.parameters())
    logger.debug("DeepSpeed engine: ZeRO %s, bf16 %s, optimizer %s", engine.zero_optimization_stage(),
                 resolved["bf16"]["enabled"], type(engine.optimizer).__name__)
    return engine
