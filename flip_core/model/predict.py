"""``predict_mask``: segment one object in one image from its Gaussian prompt (spec 6.1 prediction modes).

Pipeline: sample foveated patches around the prompt (``cython_ops.sample_patches``), encode once into a key/value
cache (:meth:`Flip.encode`), then decode query points in batches of ``query_batch_size`` against the cache.

Modes (all query points are pixel centres in frame P mapped with ``x/128 - W/256``, the training convention):

- ``"full"``: every pixel of the image. Deviation: the reference's full mode used ``linspace(-1, 1, W) * W/256``,
  which is stretched by up to 1 px against training coordinates (spec 9.3); we use the training mapping.
- ``"box"``: only the pixels of the 5-sigma box ``[floor(mu - 5 s), ceil(mu + 5 s)]`` (``s`` = the larger sigma in
  pixels, clipped to the image); pixels outside are background. Deviation: the reference's ``--optimized``
  truncates with ``int()``; we use floor/ceil like the reference web demo (spec 9.11).
- ``"hierarchical"``: coarse-to-fine inside the same box: a grid of at most 45 x 45 points (aspect-matched),
  refined by a factor ~3 per level; at each finer level the previous probabilities are upsampled bilinearly and
  only pixels with p in (0.01, 0.99) are evaluated again (threshold doubled while more than 10^6 are uncertain).
  Deviations: the box keeps its last row and column (the reference dropped them and stretched the grid, spec
  9.11), and upsampling uses ``align_corners=True`` because every level's grid spans the box's corner pixels
  (the reference mixed ``linspace`` grids with ``align_corners=False``).

The prompt is converted from frame N with :func:`flip_core.gaussian.position_n_to_m` (``convention`` "exact" by
default, "reference" for the released checkpoints' per-axis sigma scaling).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from flip_core.gaussian import position_n_to_m, position_n_to_p
from flip_core.model.batch import FlipBatch
from flip_core.model.flip import Flip
from flip_core.model.mask_head import KVCache

__all__ = ["PREDICTION_MODES", "MaskPrediction", "predict_mask", "prompt_box", "hierarchical_sizes",
           "single_sample_batch"]

PREDICTION_MODES = ("full", "box", "hierarchical")
BOX_SIGMAS = 5.0
HIERARCHICAL_INITIAL = int(math.sqrt(2048))  # 45, the reference's initial grid side
HIERARCHICAL_FACTOR = 3.0
UNCERTAIN_THRESHOLD = 0.01
MAX_UNCERTAIN = 1_000_000


@dataclasses.dataclass(frozen=True)
class MaskPrediction:
    """Result of :func:`predict_mask`.

    Attributes:
        mask: (H, W) bool predicted object mask.
        probabilities: (H, W) float32 sigmoid of the logits where evaluated (hierarchical: the interpolated
            coarse value where not re-evaluated); 0 outside the box in box/hierarchical modes.
        num_tokens: realised patches fed to the encoder (registers not counted), like the reference CSV.
        num_queries: query points decoded.
        box: inclusive pixel box ``(x0, y0, x1, y1)`` evaluated, the whole image for ``full``, None when the box
            misses the image.
        timings_ms: ``preprocess`` (patch sampling, tensors, device copy), ``model`` (encoder + all decodes,
            including hierarchical grid bookkeeping), ``postprocess`` (threshold, copy to host).
    """

    mask: np.ndarray
    probabilities: np.ndarray
    num_tokens: int
    num_queries: int
    box: tuple[int, int, int, int] | None
    timings_ms: dict[str, float]


def _check_inputs(image: Any, position: Any, mode: str, rng: Any, num_tokens: int, query_batch_size: int):
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"image must be an (H, W, 3) uint8 numpy array, got {type(image).__name__} "
                         f"shape={shape} dtype={getattr(image, 'dtype', None)}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image must be at least 2x2 pixels, got shape {image.shape}")
    pos = np.asarray(position, dtype=np.float64)
    if pos.shape != (6,):
        raise ValueError(f"position must have shape (6,) [mu_x, mu_y, sigma_x, sigma_y, a, b] in frame N, "
                         f"got shape {pos.shape}")
    if not np.isfinite(pos).all():
        raise ValueError(f"position has non-finite values: {pos.tolist()}")
    if (pos[2:4] <= 0).any():
        raise ValueError(f"position sigmas must be > 0, got sigma_x={pos[2]}, sigma_y={pos[3]}")
    if math.hypot(pos[4], pos[5]) == 0:
        raise ValueError(f"position rotation (a, b) must be non-zero, got {pos[4:].tolist()}")
    if mode not in PREDICTION_MODES:
        raise ValueError(f"mode must be one of {PREDICTION_MODES}, got {mode!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if num_tokens < 1 or query_batch_size < 1:
        raise ValueError(f"num_tokens ({num_tokens}) and query_batch_size ({query_batch_size}) must be >= 1")
    return pos


def single_sample_batch(sample: Any, position_m: np.ndarray, device: torch.device) -> FlipBatch:
    """FlipBatch of one sample without queries from a ``cython_ops.PatchSample`` and a frame-M position (6,)."""
    patches = [torch.from_numpy(np.ascontiguousarray(p, dtype=np.uint8)) for p in sample.patches]
    coords = [torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32)) for c in sample.coords]
    return FlipBatch(
        patches=patches, patch_coords=coords,
        patch_counts=torch.tensor([[p.shape[0] for p in patches]], dtype=torch.int64),
        position=torch.from_numpy(np.asarray(position_m, dtype=np.float32).reshape(1, 6)),
        query_coords=torch.zeros(0, 2), query_counts=torch.zeros(1, dtype=torch.int64),
    ).to(device)


def prompt_box(position_p: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Inclusive pixel box ``(x0, y0, x1, y1)`` of ``mu +- 5 * max(sigma)`` (floor/ceil, clipped), frame P.

    Returns None when the box lies entirely outside the image.
    """
    s = BOX_SIGMAS * float(max(position_p[2], position_p[3]))
    x0, x1 = max(0, math.floor(position_p[0] - s)), min(width - 1, math.ceil(position_p[0] + s))
    y0, y1 = max(0, math.floor(position_p[1] - s)), min(height - 1, math.ceil(position_p[1] + s))
    return None if x0 > x1 or y0 > y1 else (x0, y0, x1, y1)


def hierarchical_sizes(box_h: int, box_w: int) -> list[tuple[int, int]]:
    """Grid sizes (rows, cols) per level, coarse to fine, ending at the full box (box_h, box_w).

    Initial grid: 45 points along the longer box side, the other side scaled to the aspect ratio (>= 2). When
    the box is less than sqrt(3) times the initial grid, a single full-resolution level is used. Otherwise
    ``n = floor(log_3(long side / 45))`` levels with a constant factor ``(long / 45)^(1/n)`` (about 3).
    """
    long_side = max(box_h, box_w)
    init = (max(2, round(HIERARCHICAL_INITIAL * box_h / long_side)),
            max(2, round(HIERARCHICAL_INITIAL * box_w / long_side)))
    init = (min(init[0], box_h), min(init[1], box_w))
    if max(init) * math.sqrt(HIERARCHICAL_FACTOR) > long_side:
        return [(box_h, box_w)]
    n = max(1, math.floor(math.log(long_side / max(init), HIERARCHICAL_FACTOR)))
    sf = (long_side / max(init)) ** (1.0 / n)
    mids = [(min(box_h, round(init[0] * sf**i)), min(box_w, round(init[1] * sf**i))) for i in range(1, n)]
    return [init, *mids, (box_h, box_w)]


def _to_m(xs: torch.Tensor, ys: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pixel-centre grid (len(ys) * len(xs), 2) in frame M, row-major (y outer)."""
    gy, gx = torch.meshgrid(ys / 128.0 - height / 256.0, xs / 128.0 - width / 256.0, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1).float()


def _decode(model: Flip, cache: KVCache, coords: torch.Tensor, batch: int) -> torch.Tensor:
    """Logits (Q,) for frame-M coords (Q, 2) of the single cached sample, in chunks of ``batch``."""
    if coords.shape[0] == 0:
        return coords.new_zeros(0)
    return torch.cat([model.decode(cache, chunk, [chunk.shape[0]]) for chunk in torch.split(coords, batch)])


def _dense_box(model, cache, box, width, height, batch, device):
    x0, y0, x1, y1 = box
    xs = torch.arange(x0, x1 + 1, device=device, dtype=torch.float64)
    ys = torch.arange(y0, y1 + 1, device=device, dtype=torch.float64)
    probs = torch.sigmoid(_decode(model, cache, _to_m(xs, ys, width, height), batch))
    return probs.view(len(ys), len(xs)), probs.numel()


def _hierarchical_box(model, cache, box, width, height, batch, device):
    x0, y0, x1, y1 = box
    probs, total = None, 0
    for h, w in hierarchical_sizes(y1 - y0 + 1, x1 - x0 + 1):
        ys = torch.linspace(y0, y1, h, device=device, dtype=torch.float64)
        xs = torch.linspace(x0, x1, w, device=device, dtype=torch.float64)
        coords = _to_m(xs, ys, width, height)
        if probs is None:
            probs = torch.sigmoid(_decode(model, cache, coords, batch))
        else:
            probs = F.interpolate(probs.view(1, 1, *prev), size=(h, w), mode="bilinear", align_corners=True)
            probs = probs.reshape(-1)
            thr = UNCERTAIN_THRESHOLD
            uncertain = (probs > thr) & (probs < 1 - thr)
            while int(uncertain.sum()) > MAX_UNCERTAIN:
                thr *= 2
                uncertain = (probs > thr) & (probs < 1 - thr)
            idx = torch.nonzero(uncertain).flatten()
            probs[idx] = torch.sigmoid(_decode(model, cache, coords[idx], batch))
            coords = coords[idx]
        total += coords.shape[0]
        prev = (h, w)
    return probs.view(*prev), total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def predict_mask(model: Flip, image: np.ndarray, position: np.ndarray, mode: str = "full", *,
                 rng: np.random.Generator, num_tokens: int = 512, overlap_threshold: float = 2.67,
                 coverage: float = 1.44, convention: str = "exact", query_batch_size: int = 65536,
                 sampler: Callable[..., Any] | None = None) -> MaskPrediction:
    """Predict the mask of the object under ``position`` in ``image``.

    Args:
        model: a :class:`Flip` (put in eval mode by the caller; run under ``torch.inference_mode`` here).
        image: (H, W, 3) uint8 RGB.
        position: (6,) ``[mu_x, mu_y, sigma_x, sigma_y, a, b]`` prompt in frame N (sigma_x minor, sigma_y major).
        mode: ``"full"``, ``"box"`` or ``"hierarchical"`` (module docstring).
        rng: seeded generator for patch sampling.
        num_tokens: patch budget (512 in the paper's evaluation).
        overlap_threshold, coverage: patch sampling parameters (reference evaluation 2.67 / 1.44).
        convention: frame N -> P/M position conversion, ``"exact"`` or ``"reference"``.
        query_batch_size: query points per decoder call (memory bound; results do not depend on it).
        sampler: patch sampler with ``cython_ops.sample_patches``'s signature; default ``cython_ops.sample_patches``.

    Returns:
        :class:`MaskPrediction`.

    Raises:
        ValueError: bad image, position (non-finite, non-positive sigma, zero rotation), mode, rng or sizes.
    """
    pos = _check_inputs(image, position, mode, rng, num_tokens, query_batch_size)
    if sampler is None:
        from cython_ops import sample_patches as sampler
    height, width = image.shape[:2]
    device = next(model.parameters()).device
    _sync(device)
    t0 = time.perf_counter()
    sample = sampler(np.ascontiguousarray(image), pos.astype(np.float32), num_tokens,
                     list(model.config.patch_sizes), overlap_threshold, coverage, rng, convention=convention)
    batch = single_sample_batch(sample, position_n_to_m(pos, width, height, convention), device)
    if mode == "full":
        box = (0, 0, width - 1, height - 1)
    else:
        box = prompt_box(position_n_to_p(pos, width, height, convention), width, height)
    _sync(device)
    t1 = time.perf_counter()
    with torch.inference_mode():
        box_probs, total = None, 0
        if box is not None:
            cache = model.encode(batch)
            run = _hierarchical_box if mode == "hierarchical" else _dense_box
            box_probs, total = run(model, cache, box, width, height, query_batch_size, device)
    _sync(device)
    t2 = time.perf_counter()
    probs = np.zeros((height, width), dtype=np.float32)
    if box_probs is not None:
        x0, y0, x1, y1 = box
        probs[y0:y1 + 1, x0:x1 + 1] = box_probs.float().cpu().numpy()
    mask = probs > 0.5
    t3 = time.perf_counter()
    return MaskPrediction(
        mask=mask, probabilities=probs, num_tokens=int(batch.patch_counts.sum()), num_queries=total, box=box,
        timings_ms={"preprocess": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3})
