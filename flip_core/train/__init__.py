"""FLIP training: data pipeline glue, Ranger, DeepSpeed engine and the Ray Train launcher.

``train(config) -> TrainResult`` is the plain function the CLI and Prefect flows call.
"""

from __future__ import annotations

from flip_core.train.config import DataConfig, TrainConfig, TrainResult

__all__ = ["DataConfig", "TrainConfig", "TrainResult", "train"]


def train(config: TrainConfig) -> TrainResult:
    """Train FLIP with DeepSpeed on Ray Train; see :func:`flip_core.train.launch.train`."""
    from flip_core.train.launch import train as _train

    return _train(config)
