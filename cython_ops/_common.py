"""Input validation and parameter preparation shared by the Cython and NumPy backends.

Everything that is not a hot loop lives here, so both backends see exactly the same validated parameters and draw
the same random numbers before their kernels start (the random ``overlap_threshold``/``coverage`` of spec 3.1 step 5).

Limits (to keep every input memory-safe; each violation raises ``ValueError`` naming the argument):

- position: finite; ``|mu| <= 1e6`` and ``0 < sigma <= 1e6`` in frame N; ``(rot_a, rot_b)`` not the zero vector.
- num_tokens: ``1 <= num_tokens <= MAX_TOKENS``; patch sizes: powers of two ``1 <= p <= MAX_PATCH_SIZE``, strictly
  increasing; samples_per_group: 7 non-negative ints summing to ``1 .. MAX_MASK_SAMPLES``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from flip_core.gaussian import position_n_to_p

MAX_TOKENS = 1 << 20
MAX_PATCH_SIZE = 256
MAX_MASK_SAMPLES = 1 << 24
NUM_GROUPS = 7
#: Inclusive upper L1 distance of the cumulative groups 0..5; group 6 is every pixel (spec 3.6 step 3).
GROUP_RANGE_ENDS = (2, 4, 8, 16, 32, 64)
#: Spec 3.6 step 6: ``[2048 // 7 + 2048 % 7] + [2048 // 7] * 6``.
DEFAULT_SAMPLES_PER_GROUP = (296, 292, 292, 292, 292, 292, 292)
CONVENTIONS = ("exact", "reference")
_POS_LIMIT = 1e6


class PatchSample(NamedTuple):
    """Output of ``sample_patches``; one entry per patch size, in the order of ``patch_sizes``.

    Attributes:
        patches: per resolution r, (n_r, 3, p_r, p_r) uint8 RGB crops.
        coords: per resolution r, (n_r, 2) float32 patch centres ``(x, y)`` in frame M.
        indices: per resolution r, (n_r,) int32 token indices ``sum_{r' < r} n_r' + j`` (spec 3.3).
    """

    patches: list[np.ndarray]
    coords: list[np.ndarray]
    indices: list[np.ndarray]


@dataclass(frozen=True, kw_only=True, slots=True)
class PatchParams:
    """Validated ``sample_patches`` parameters in frame P (the kernels' input)."""

    width: int
    """Image width W in px."""
    height: int
    """Image height H in px."""
    centre: tuple[float, float]
    """Gaussian centre (x, y), frame P."""
    sigma: tuple[float, float]
    """(minor, major) std of the patch-centre distribution in px, already multiplied by sqrt(2) (spec 3.1 step 2)."""
    rot: tuple[float, float]
    """Unit (rot_a, rot_b): minor axis along (a, -b), major axis along (b, a) (spec 0, 2.4)."""
    patch_sizes: tuple[int, ...]
    """Strictly increasing powers of two."""
    quota: tuple[int, ...]
    """Patches requested per resolution (spec 3.2)."""
    overlap_threshold: float
    """Reject a box when its summed overlap area exceeds ``overlap_threshold * p**2``."""
    coverage: float
    """Area factor of the quota rule."""


class PatchPlacement(NamedTuple):
    """Output of ``place_patches``: where the patches of one prompt go, before any pixel is read.

    Arrays hold one quota-sized slot per resolution (slot r starts at ``sum(params.quota[:r])``); the first
    ``counts[r]`` rows of slot r are the placed patches, in placement order.

    Attributes:
        params: the validated parameters (frame P), including the drawn ``overlap_threshold``/``coverage``.
        counts: patches placed per resolution.
        centres: (sum(quota), 2) float64 patch centres ``(x, y)`` in image pixels (frame P): what the crops use.
        coords: (sum(quota), 2) float32 the same centres in frame M (``x / 128 - W / 256``).
        box: half-open ``(x0, y0, x1, y1)`` box of the image pixels the bilinear crops read, None without patches:
            a patch of size p centred on (cx, cy) reads columns ``floor(cx - p/2 + 0.5) .. floor(cx - p/2 + 0.5) + p``
            and the same rows (spec 3.3 step 5); placement keeps them inside the image.
    """

    params: PatchParams
    counts: tuple[int, ...]
    centres: np.ndarray
    coords: np.ndarray
    box: tuple[int, int, int, int] | None


def union_box(boxes) -> tuple[int, int, int, int] | None:
    """Smallest half-open box holding every non-None ``(x0, y0, x1, y1)`` of ``boxes``; None when there is none."""
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


@dataclass(frozen=True, kw_only=True, slots=True)
class MaskParams:
    """Validated ``sample_mask_targets`` parameters: the crop box in frame P (inclusive) and the group sizes."""

    width: int
    """Mask width W in px."""
    height: int
    """Mask height H in px."""
    crop: tuple[int, int, int, int] | None
    """Inclusive ``(x0, y0, x1, y1)``, or None when the crop lies outside the mask."""
    samples_per_group: tuple[int, ...]
    """Seven non-negative group sizes."""


def check_rng(rng) -> np.random.Generator:
    """Raise ``TypeError`` unless ``rng`` is a ``numpy.random.Generator``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    return rng


def check_convention(convention) -> str:
    """Raise ``ValueError`` unless ``convention`` is ``"exact"`` or ``"reference"``."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    return convention


def check_image(image, *, strided_rows: bool = False) -> tuple[int, int]:
    """Validate an (H, W, 3) uint8 C-contiguous image; return (H, W). With ``strided_rows`` the rows may be strided
    (e.g. a column slice of a C-contiguous image) as long as each row's pixels are contiguous: strides (>0, 3, 1)."""
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"image must be a numpy.ndarray of shape (H, W, 3) and dtype uint8, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must have dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3) (RGB, channels last), got {image.shape}")
    rows_ok = strided_rows and image.strides[1:] == (3, 1) and image.strides[0] > 0
    if not (image.flags.c_contiguous or rows_ok):
        raise ValueError("image must be C-contiguous; pass np.ascontiguousarray(image)")
    return int(image.shape[0]), int(image.shape[1])


def check_image_size(image_size) -> tuple[int, int]:
    """Validate ``(H, W)``: two integers in ``[1, 2**31)``; return them as ints."""
    try:
        height, width = image_size
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (H, W), got {repr(image_size)[:80]}") from None
    return _check_int("image height", height, 1, 2**31 - 1), _check_int("image width", width, 1, 2**31 - 1)


def check_region(image, placement: PatchPlacement, origin) -> tuple[int, int]:
    """Validate an image region for ``crop_patches``: (h, w, 3) uint8 with contiguous rows (C-contiguous, or a
    column slice of such an array), its pixel (0, 0) at image pixel ``origin = (x, y)``, covering
    ``placement.box``; return the origin as ints."""
    if not isinstance(placement, PatchPlacement):
        raise TypeError(f"placement must come from cython_ops.place_patches, got {type(placement).__name__}")
    height, width = check_image(image, strided_rows=True)  # the crop kernel indexes row by row
    try:
        ox, oy = origin
        ox, oy = _check_int("origin x", ox, 0, 2**31 - 1), _check_int("origin y", oy, 0, 2**31 - 1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"origin must be two non-negative integers (x, y), got {origin!r}: {exc}") from None
    box = placement.box
    if box is not None and not (ox <= box[0] and oy <= box[1] and ox + width >= box[2] and oy + height >= box[3]):
        raise ValueError(
            f"image region [{oy}, {oy + height}) x [{ox}, {ox + width}) (rows x columns) does not cover the pixels the "
            f"crops read: [{box[1]}, {box[3]}) x [{box[0]}, {box[2]})")
    return ox, oy


def check_mask(mask) -> np.ndarray:
    """Validate an (H, W) uint8/bool C-contiguous mask; return a uint8 view (area: :func:`check_mask_area`)."""
    if not isinstance(mask, np.ndarray):
        raise ValueError(
            f"mask must be a numpy.ndarray of shape (H, W) and dtype uint8 or bool, got {type(mask).__name__}")
    if mask.dtype not in (np.uint8, np.bool_):
        raise ValueError(f"mask must have dtype uint8 or bool, got {mask.dtype}")
    if mask.ndim != 2 or mask.shape[0] < 2 or mask.shape[1] < 2:
        raise ValueError(f"mask must have shape (H, W) with H, W >= 2, got {mask.shape}")
    if not mask.flags.c_contiguous:
        raise ValueError("mask must be C-contiguous; pass np.ascontiguousarray(mask)")
    if mask.size >= 2**31:
        raise ValueError(
            f"mask must have fewer than 2**31 pixels (the kernel indexes them with int32), got {mask.shape}")
    return mask.view(np.uint8)


def check_mask_area(mask: np.ndarray) -> None:
    """Raise ``ValueError`` for a mask without a non-zero pixel. The backends call it only after finding no inside
    pixel in the crop (no random draw happened then), which keeps the whole-mask scan off the common path."""
    if not mask.any():
        raise ValueError(f"mask of shape {mask.shape} has zero area (no non-zero pixel); accepted: at least one")


def check_position(position) -> np.ndarray:
    """Validate a (6,) frame-N position; return it as float64."""
    try:
        pos = np.asarray(position, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"position must be 6 real numbers [mu_x, mu_y, sigma_x, sigma_y, rot_a, rot_b]: {exc}") from None
    if pos.shape != (6,):
        raise ValueError(f"position must have shape (6,) [mu_x, mu_y, sigma_x, sigma_y, rot_a, rot_b], got {pos.shape}")
    mu_x, mu_y, s_x, s_y, a, b = pos.tolist()
    if not all(map(math.isfinite, (mu_x, mu_y, s_x, s_y, a, b))):
        raise ValueError(f"position must be finite (no NaN/inf), got {pos.tolist()}")
    if abs(mu_x) > _POS_LIMIT or abs(mu_y) > _POS_LIMIT:
        raise ValueError(f"position mu must satisfy |mu| <= {_POS_LIMIT:g} (frame N), got {[mu_x, mu_y]}")
    if not (0 < s_x <= _POS_LIMIT and 0 < s_y <= _POS_LIMIT):
        raise ValueError(f"position sigmas must be in (0, {_POS_LIMIT:g}] (frame N), got {[s_x, s_y]}")
    if math.hypot(a, b) < 1e-6:
        raise ValueError(f"position (rot_a, rot_b) must be a non-zero direction vector, got {[a, b]}")
    return pos


def _check_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value}")
    return int(value)


def check_num_tokens(num_tokens) -> int:
    """Validate ``1 <= num_tokens <= MAX_TOKENS``."""
    return _check_int("num_tokens", num_tokens, 1, MAX_TOKENS)


def check_patch_sizes(patch_sizes) -> tuple[int, ...]:
    """Validate strictly increasing powers of two in ``[1, MAX_PATCH_SIZE]`` (ints or integral floats)."""
    accepted = (f"a non-empty, strictly increasing sequence of powers of two in [1, {MAX_PATCH_SIZE}], "
                "e.g. (1, 2, 4, 8, 16)")
    try:
        raw = list(patch_sizes)
    except TypeError:
        raise ValueError(f"patch_sizes must be {accepted}, got {patch_sizes!r}") from None
    sizes = []
    for p in raw:
        if type(p) is int and 1 <= p <= MAX_PATCH_SIZE and not p & (p - 1):  # fast path
            sizes.append(p)
            continue
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not float(p).is_integer():
            raise ValueError(f"patch_sizes must be {accepted}, got {raw!r}")
        p = int(p)
        if not 1 <= p <= MAX_PATCH_SIZE or p & (p - 1):
            raise ValueError(f"patch_sizes must be {accepted}, got {raw!r}")
        sizes.append(p)
    if not sizes or any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"patch_sizes must be {accepted}, got {raw!r}")
    return tuple(sizes)


_VALID_SAMPLES_PER_GROUP: set[tuple[int, ...]] = set()
"""Tuples of plain ints already accepted by :func:`check_samples_per_group` (the loader passes the same one for
every prompt)."""


def check_samples_per_group(samples_per_group) -> tuple[int, ...]:
    """Validate 7 non-negative ints with a total in ``[1, MAX_MASK_SAMPLES]``."""
    if type(samples_per_group) is tuple and samples_per_group in _VALID_SAMPLES_PER_GROUP \
            and all(type(n) is int for n in samples_per_group):  # type check: True == 1 would hit the set
        return samples_per_group
    accepted = f"{NUM_GROUPS} non-negative integers with a sum in [1, {MAX_MASK_SAMPLES}]"
    try:
        raw = list(samples_per_group)
    except TypeError:
        raise ValueError(f"samples_per_group must be {accepted}, got {samples_per_group!r}") from None
    if len(raw) != NUM_GROUPS:
        raise ValueError(f"samples_per_group must be {accepted}, got {len(raw)} values")
    out = tuple(_check_int("samples_per_group entries", n, 0, MAX_MASK_SAMPLES) for n in raw)
    if not 1 <= sum(out) <= MAX_MASK_SAMPLES:
        raise ValueError(f"samples_per_group must be {accepted}, got sum {sum(out)}")
    if len(_VALID_SAMPLES_PER_GROUP) < 64:
        _VALID_SAMPLES_PER_GROUP.add(out)
    return out


def _check_float(name: str, value, lo: float, *, open_lo: bool) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite real number, got {value!r}") from None
    if not math.isfinite(v) or v < lo or (open_lo and v == lo):
        bound = f"> {lo:g}" if open_lo else f">= {lo:g}"
        raise ValueError(f"{name} must be finite and {bound} (or None with the other None too), got {value!r}")
    return v


def overlap_and_coverage(overlap_threshold, coverage, rng: np.random.Generator) -> tuple[float, float]:
    """Validate, or draw when both are None (spec 3.1 step 5: ``thr = 4 U``, then ``coverage = 0.1 + 1.9 U``)."""
    if overlap_threshold is None and coverage is None:
        thr = 4.0 * rng.random()
        return thr, 0.1 + 1.9 * rng.random()
    if overlap_threshold is None or coverage is None:
        raise ValueError(
            "overlap_threshold and coverage must both be numbers or both be None (None draws both at random, "
            f"spec 3.1), got overlap_threshold={overlap_threshold!r}, coverage={coverage!r}"
        )
    return (
        _check_float("overlap_threshold", overlap_threshold, 0.0, open_lo=False),
        _check_float("coverage", coverage, 0.0, open_lo=True),
    )


def patch_quota(sigma_minor: float, sigma_major: float, coverage: float, num_tokens: int,
                patch_sizes: Sequence[int]) -> tuple[int, ...]:
    """Patches requested per resolution (spec 3.2, ``gaussian.c:compute_num_patches_per_resolution``).

    ``A = 2 pi sigma_minor sigma_major coverage``; ``avg[r] = int(A / p_r**2)``; filled largest patch first, each
    ``n[r] = max(0, min(remaining, avg[r]))``. Computed in float64 (the reference uses float32).

    Args:
        sigma_minor, sigma_major: stds of the patch-centre distribution in px (already times sqrt(2)).
        coverage: area factor (> 0).
        num_tokens: token budget.
        patch_sizes: increasing patch sizes in px.

    Returns:
        Tuple of ints, one per patch size, summing to at most ``num_tokens``.
    """
    area = 2.0 * math.pi * sigma_minor * sigma_major * coverage
    quota = [0] * len(patch_sizes)
    remaining = num_tokens
    for r in range(len(patch_sizes) - 1, -1, -1):
        avg = area / float(patch_sizes[r] * patch_sizes[r])
        quota[r] = max(0, min(remaining, int(min(avg, float(num_tokens)))))
        remaining -= quota[r]
    return tuple(quota)


def _frame_p(position: np.ndarray, width: int, height: int, convention: str) -> list[float]:
    """Frame-P position (6 Python floats) with a unit rotation vector."""
    pos_p = position_n_to_p(position, width, height, convention).tolist()
    norm = math.hypot(pos_p[4], pos_p[5])
    return pos_p[:4] + [pos_p[4] / norm, pos_p[5] / norm]


def prepare_patches(image_size, position, num_tokens, patch_sizes, overlap_threshold, coverage, rng,
                    convention) -> PatchParams:
    """Validate ``place_patches`` arguments (``image_size`` = (H, W)), draw thr/coverage if requested, and convert to
    frame P."""
    height, width = check_image_size(image_size)
    pos = check_position(position)
    num_tokens = check_num_tokens(num_tokens)
    sizes = check_patch_sizes(patch_sizes)
    check_rng(rng)
    check_convention(convention)
    if width < sizes[-1] + 2 or height < sizes[-1] + 2:
        raise ValueError(
            f"image of {height}x{width} px is too small for the largest patch size {sizes[-1]} px "
            f"(patch_sizes {sizes}); accepted: H, W >= {sizes[-1] + 2}"
        )
    thr, cov = overlap_and_coverage(overlap_threshold, coverage, rng)
    pos_p = _frame_p(pos, width, height, convention)
    s_minor = pos_p[2] * math.sqrt(2.0)
    s_major = pos_p[3] * math.sqrt(2.0)
    return PatchParams(
        width=width,
        height=height,
        centre=(pos_p[0], pos_p[1]),
        sigma=(s_minor, s_major),
        rot=(pos_p[4], pos_p[5]),
        patch_sizes=sizes,
        quota=patch_quota(s_minor, s_major, cov, num_tokens, sizes),
        overlap_threshold=thr,
        coverage=cov,
    )


def mask_crop(centre: tuple[float, float], sigma_max: float, width: int, height: int):
    """Inclusive 5-sigma crop box (spec 3.6 step 1), or None when it misses the mask.

    ``[max(0, floor(mu - 5 s)), min(W - 1, ceil(mu + 5 s))]`` per axis with ``s = max(sigma_x, sigma_y)``; when the box
    is wider than ``0.9 W`` and taller than ``0.9 H`` the whole mask is used.
    """
    box = []
    for mu, size in ((centre[0], width), (centre[1], height)):
        lo = max(0.0, math.floor(mu - 5.0 * sigma_max))
        hi = min(float(size - 1), math.ceil(mu + 5.0 * sigma_max))
        if lo > hi:
            return None
        box.append((int(lo), int(hi)))
    (x0, x1), (y0, y1) = box
    if x1 - x0 + 1 > 0.9 * width and y1 - y0 + 1 > 0.9 * height:
        x0, y0, x1, y1 = 0, 0, width - 1, height - 1
    return x0, y0, x1, y1


def prepare_mask(mask, position, samples_per_group, rng, convention) -> tuple[np.ndarray, MaskParams]:
    """Validate ``sample_mask_targets`` arguments; return the uint8 mask view and the crop parameters."""
    mask = check_mask(mask)
    pos = check_position(position)
    spg = check_samples_per_group(samples_per_group)
    check_rng(rng)
    check_convention(convention)
    height, width = mask.shape
    pos_p = _frame_p(pos, width, height, convention)
    crop = mask_crop((pos_p[0], pos_p[1]), max(pos_p[2], pos_p[3]), width, height)
    return mask, MaskParams(width=width, height=height, crop=crop, samples_per_group=spg)


def split_patches(params: PatchParams, counts, patches_flat: np.ndarray, coords_flat: np.ndarray) -> PatchSample:
    """Cut the kernels' flat buffers into per-resolution arrays (views) and build the token indices."""
    patches, coords, indices = [], [], []
    counts = [int(n) for n in counts]
    all_indices = np.arange(sum(counts), dtype=np.int32)
    p_off = c_off = start = 0
    for p, q, n in zip(params.patch_sizes, params.quota, counts):
        patches.append(patches_flat[p_off:p_off + n * 3 * p * p].reshape(n, 3, p, p))
        coords.append(coords_flat[c_off:c_off + n])
        indices.append(all_indices[start:start + n])
        p_off += q * 3 * p * p
        c_off += q
        start += n
    return PatchSample(patches, coords, indices)
