"""Evaluation: FLIP protocol, RITM click protocol, prompt-ellipse baseline, Ray fan-out and report.

``evaluate(EvalConfig(...)) -> EvalResult`` is the entry point (``flip evaluate`` and the flows call it).
"""

from flip_core.eval.adapter import ClickAdapterConfig
from flip_core.eval.config import EvalConfig, EvalResult, TaskOutcome
from flip_core.eval.run import evaluate

__all__ = ["ClickAdapterConfig", "EvalConfig", "EvalResult", "TaskOutcome", "evaluate"]
