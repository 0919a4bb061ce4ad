"""Clicks -> Gaussian prompt adapter, so a Gaussian-prompted predictor can run the RITM click protocol.

The reference has no click interface; this is our design, after option A of ``../shared/reference/benchmarks.md``
section 2.5 ("clicks -> Gaussian fit with mask-moment refinement"). A click gives a location, FLIP needs a full
Gaussian, so the adapter keeps a *target region* ``R`` and prompts with the moments of ``R`` (``mask_moments``: the
same first and second moments FLIP was trained on).

Click 1 (always positive under the RITM simulator):
    The prompt is an isotropic Gaussian at the click with sigma ``initial_sigma_frac * min(H, W)`` pixels. The
    predictor runs, then (while its prediction is not empty) ``refine_iters`` times: ``R = region(prediction, clicks)`` and the predictor runs again on
    the moments of ``R`` (a fixed point of "prompt -> mask -> moments of the mask").
Click k > 1:
    ``R = region(previous prediction, clicks)``; one prediction on the moments of ``R``. If the previous prediction
    was empty, the prompt is the click-1 prior centred at the mean of the positive clicks instead.
``region(M, clicks)``:
    1. drop every 8-connected component of ``M`` that contains a negative click and no positive click;
    2. of the rest, drop the pixels strictly nearer (Euclidean) to some negative click than to every positive click
       (a Voronoi split between the two click sets);
    3. add a disk of radius ``click_radius_px`` around every positive click.
    If ``R`` is empty (no positive clicks) the prediction is all background.
Sigma floor:
    The prompt covariance is clipped from below to ``min_sigma_px`` (pixel frame, eigenvalue clip), as 2.5 advises.
Click consistency (``force_clicks``):
    After each prediction the disks of radius ``click_radius_px`` around positive clicks are set to foreground and
    those around negative clicks to background (negatives last), as click-conditioned models effectively do.

All steps are deterministic given the predictor's ``rng``. Coordinates: clicks are ``(y, x)`` pixels (frame P);
prompts are moments in frame N.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from flip_core.eval.clicker import Click
from flip_core.eval.predictors import Prediction, Predictor
from flip_core.gaussian import mask_moments, p_to_n

__all__ = ["ClickAdapterConfig", "ClickPromptAdapter", "click_region", "clip_moments"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ClickAdapterConfig:
    """Settings of the click -> Gaussian adapter (module docstring)."""

    initial_sigma_frac: float = 0.1
    """Sigma of the first-click isotropic Gaussian, as a fraction of the image's short side."""
    min_sigma_px: float = 2.0
    """Lower bound on the prompt's standard deviations, in pixels."""
    click_radius_px: float = 5.0
    """Radius of the click disks added to / removed from the region and forced in the output, pixels."""
    refine_iters: int = 2
    """Moment-refinement iterations after the first click."""
    force_clicks: bool = True
    """Force the click disks in the output mask."""

    def __post_init__(self):
        if not 0 < self.initial_sigma_frac <= 1:
            raise ValueError(f"initial_sigma_frac must be in (0, 1], got {self.initial_sigma_frac}")
        if self.min_sigma_px <= 0 or self.click_radius_px < 0 or self.refine_iters < 0:
            raise ValueError(
                "min_sigma_px must be > 0, click_radius_px and refine_iters >= 0; got "
                f"{self.min_sigma_px}, {self.click_radius_px}, {self.refine_iters}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def clip_moments(moments_n: np.ndarray, height: int, width: int, min_sigma_px: float) -> np.ndarray:
    """Clip the covariance of frame-N moments so both pixel-frame standard deviations are >= ``min_sigma_px``.

    Returns:
        (5,) float32 moments in frame N.
    """
    m = np.asarray(moments_n, dtype=np.float64)
    d = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    cov = np.array([[m[2], m[4]], [m[4], m[3]]]) * d[:, None] * d[None, :]
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, min_sigma_px**2)
    cov = (vecs * vals) @ vecs.T / (d[:, None] * d[None, :])
    return np.array([m[0], m[1], cov[0, 0], cov[1, 1], cov[0, 1]], dtype=np.float32)


def _disks(shape: tuple[int, int], clicks: list[Click], radius: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    out = np.zeros(shape, dtype=bool)
    for c in clicks:
        out |= (yy - c.y) ** 2 + (xx - c.x) ** 2 <= radius * radius
    return out


def click_region(mask: np.ndarray, clicks: list[Click], click_radius_px: float) -> np.ndarray:
    """Target region ``R`` from a predicted mask and the clicks (module docstring, steps 1-3).

    Args:
        mask: (H, W) bool previous prediction.
        clicks: all clicks so far.
        click_radius_px: disk radius in pixels.

    Returns:
        (H, W) bool.
    """
    pos = [c for c in clicks if c.is_positive]
    neg = [c for c in clicks if not c.is_positive]
    region = np.array(mask, dtype=bool, copy=True)
    if neg and region.any():
        labels, _ = ndimage.label(region, structure=np.ones((3, 3), dtype=bool))
        pos_labels = {labels[c.y, c.x] for c in pos}
        for c in neg:
            lab = labels[c.y, c.x]
            if lab and lab not in pos_labels:
                region[labels == lab] = False
        ys, xs = np.nonzero(region)
        if ys.size:
            d_neg = np.min([(ys - c.y) ** 2 + (xs - c.x) ** 2 for c in neg], axis=0)
            d_pos = np.min([(ys - c.y) ** 2 + (xs - c.x) ** 2 for c in pos], axis=0) if pos else np.inf
            drop = d_neg < d_pos
            region[ys[drop], xs[drop]] = False
    if pos:
        region |= _disks(region.shape, pos, click_radius_px)
    return region


class ClickPromptAdapter:
    """Runs a :class:`~flip_core.eval.predictors.Predictor` from clicks (module docstring).

    Args:
        predictor: the Gaussian-prompted predictor.
        config: adapter settings.
    """

    def __init__(self, predictor: Predictor, config: ClickAdapterConfig):
        self.predictor = predictor
        self.config = config

    def _predict(self, image, region_or_moments, rng, timings, counter) -> np.ndarray:
        h, w = image.shape[:2]
        moments = region_or_moments
        if moments.ndim == 2:
            moments = mask_moments(region_or_moments)
        moments = clip_moments(moments, h, w, self.config.min_sigma_px)
        pred: Prediction = self.predictor(image, moments, rng)
        for k, v in pred.timings_ms.items():
            timings[k] = timings.get(k, 0.0) + float(v)
        counter.append(pred.num_tokens)
        return np.asarray(pred.mask, dtype=bool)

    def _prior_moments(self, clicks: list[Click], h: int, w: int) -> np.ndarray:
        """Isotropic prior Gaussian (sigma ``initial_sigma_frac * min(H, W)`` px) at the mean positive click."""
        pos = np.array([[c.x, c.y] for c in clicks if c.is_positive], dtype=np.float64)
        s = self.config.initial_sigma_frac * min(h, w)
        mu = p_to_n(pos.mean(axis=0), w, h)
        var = (s / ((w - 1) / 2.0)) ** 2, (s / ((h - 1) / 2.0)) ** 2
        return np.array([mu[0], mu[1], var[0], var[1], 0.0], dtype=np.float32)

    def predict(
        self, image: np.ndarray, clicks: list[Click], prev_mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, float], list[int]]:
        """Mask after the latest click.

        Args:
            image: (H, W, 3) uint8 RGB.
            clicks: all clicks so far (at least one).
            prev_mask: (H, W) bool prediction before the latest click (all False before the first).
            rng: generator passed to the predictor.

        Returns:
            ``(mask (H, W) bool, timings_ms summed over predictor calls, num_tokens per predictor call)``.
        """
        cfg = self.config
        h, w = image.shape[:2]
        timings: dict[str, float] = {}
        tokens: list[int] = []
        if not any(c.is_positive for c in clicks):
            return np.zeros((h, w), dtype=bool), timings, tokens
        if len(clicks) == 1 or not prev_mask.any():
            mask = self._predict(image, self._prior_moments(clicks, h, w), rng, timings, tokens)
            for _ in range(cfg.refine_iters if len(clicks) == 1 else 0):
                if not mask.any():
                    break
                mask = self._predict(image, click_region(mask, clicks, cfg.click_radius_px), rng, timings, tokens)
        else:
            region = click_region(prev_mask, clicks, cfg.click_radius_px)
            mask = self._predict(image, region, rng, timings, tokens)
        if cfg.force_clicks:
            mask = mask.copy()
            mask |= _disks(mask.shape, [c for c in clicks if c.is_positive], cfg.click_radius_px)
            mask &= ~_disks(mask.shape, [c for c in clicks if not c.is_positive], cfg.click_radius_px)
        return mask, timings, tokens
