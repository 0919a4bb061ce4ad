"""Things that turn (image, Gaussian prompt) into a mask: the FLIP model in one mode, or the prompt-ellipse baseline.

Both protocols (:mod:`flip_core.eval.protocols`) only see the :class:`Predictor` call signature, so every protocol
runs unchanged on the model and on the baseline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from flip_core.eval.baseline import ellipse_mask

__all__ = ["Prediction", "Predictor", "FlipPredictor", "EllipsePredictor", "MODES"]

MODES = ("full", "box", "hierarchical")
"""FLIP prediction modes (spec 6.1: full image, ``--optimized`` 5-sigma box, ``--hirachical`` coarse-to-fine)."""


class Prediction(NamedTuple):
    """One predicted mask."""

    mask: np.ndarray
    """(H, W) bool."""
    num_tokens: int
    """Realised input patches (0 for the baseline)."""
    timings_ms: dict[str, float]
    """``preprocess``, ``model``, ``postprocess`` wall times in milliseconds."""


class Predictor(Protocol):
    """``predictor(image (H, W, 3) uint8 RGB, moments_n (5,) frame N, rng) -> Prediction``."""

    def __call__(self, image: np.ndarray, moments_n: np.ndarray, rng: np.random.Generator) -> Prediction: ...


@dataclass(kw_only=True)
class FlipPredictor:
    """FLIP model prediction through ``flip_core.model.predict_mask`` (spec 6.1 defaults).

    The prompt moments are turned into the position 6-vector with ``flip_core.gaussian.moments_to_position``
    (spec 2.1 with the cov == 0 fix) and passed in frame N; ``predict_mask`` converts frames with ``convention``.
    """

    model: Any
    """A FLIP ``torch.nn.Module`` in eval mode."""
    mode: str = "box"
    """One of :data:`MODES`."""
    num_tokens: int = 512
    overlap_threshold: float = 2.67
    coverage: float = 1.44
    convention: str = "exact"
    extra: dict = field(default_factory=dict)
    """Further keyword arguments for ``predict_mask`` (e.g. ``query_batch_size``)."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown prediction mode {self.mode!r}; valid modes: {', '.join(MODES)}")

    def __call__(self, image, moments_n, rng) -> Prediction:
        from flip_core.gaussian import moments_to_position
        from flip_core.model import predict_mask

        position = moments_to_position(np.asarray(moments_n, dtype=np.float32))
        out = predict_mask(
            self.model,
            image,
            position,
            mode=self.mode,
            rng=rng,
            num_tokens=self.num_tokens,
            overlap_threshold=self.overlap_threshold,
            coverage=self.coverage,
            convention=self.convention,
            **self.extra,
        )
        return Prediction(np.asarray(out.mask, dtype=bool), int(out.num_tokens), dict(out.timings_ms))


@dataclass(frozen=True, kw_only=True, slots=True)
class EllipsePredictor:
    """The prompt-ellipse baseline (:mod:`flip_core.eval.baseline`) at a fixed Mahalanobis radius."""

    radius: float
    """Mahalanobis radius, chosen on held-out instances (baseline cross-fitting)."""

    def __call__(self, image, moments_n, rng) -> Prediction:
        t0 = time.perf_counter()
        h, w = image.shape[:2]
        mask = ellipse_mask(moments_n, h, w, self.radius)
        ms = (time.perf_counter() - t0) * 1e3
        return Prediction(mask, 0, {"preprocess": 0.0, "model": ms, "postprocess": 0.0})
