"""Fovea-like patch sampling and mask-target sampling (spec sections 2 and 3), in Cython with NumPy twins.

Public API::

    from cython_ops import (sample_patches, place_patches, crop_patches, sample_mask_targets, augment_position,
                            sample_num_tokens, PatchSample, PatchPlacement, DEFAULT_SAMPLES_PER_GROUP)

``sample_patches`` is ``place_patches`` (every random draw; needs only the image size) followed by ``crop_patches``
(no draw; reads pixels). The training loader places the patches of all prompts of an image first and then decodes
only the pixel box their crops read (``flip_core.data.dataset``).

Backends (explicit, never a silent fallback):

- ``"cython"`` (default): the compiled kernels in ``cython_ops/_kernels.pyx`` (built by ``pip install -e .``).
  If the extension is not built, calling with this backend raises ``ImportError`` saying how to build it.
- ``"numpy"``: :mod:`cython_ops.reference`, the slow, obviously-correct versions with the same draw order.

Pick one per call with ``backend="cython" | "numpy"``, or for the process with the environment variable
``FLIP_OPS_BACKEND``; the keyword wins. :func:`augment_position` and :func:`sample_num_tokens` are a few scalar draws
and have one (NumPy) implementation.
"""

from __future__ import annotations

import os

import numpy as np

from . import reference
from ._common import DEFAULT_SAMPLES_PER_GROUP, PatchPlacement, PatchSample, patch_quota, union_box
from ._position import augment_position, sample_num_tokens

__all__ = [
    "sample_patches",
    "place_patches",
    "crop_patches",
    "union_box",
    "sample_mask_targets",
    "augment_position",
    "sample_num_tokens",
    "patch_quota",
    "PatchSample",
    "PatchPlacement",
    "DEFAULT_SAMPLES_PER_GROUP",
    "BACKENDS",
    "resolve_backend",
]

BACKENDS = ("cython", "numpy")
_DEFAULT_BACKEND = "cython"


def resolve_backend(backend: str | None = None) -> str:
    """The backend a call uses: ``backend`` if given, else ``$FLIP_OPS_BACKEND``, else ``"cython"``.

    Raises:
        ValueError: the name is not one of :data:`BACKENDS`.
    """
    name = backend if backend is not None else os.environ.get("FLIP_OPS_BACKEND", _DEFAULT_BACKEND)
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} (argument or FLIP_OPS_BACKEND), got {name!r}")
    return name


def _cython():
    """The compiled backend, or ImportError with build instructions."""
    try:
        from . import _cython_backend
    except ImportError as exc:
        raise ImportError(
            "cython_ops: the compiled extension cython_ops._kernels is not built "
            f"({exc}). Build it with `pip install -e .` (or `python setup.py build_ext --inplace`) in the "
            "repository root, or select the slow NumPy reference explicitly with backend='numpy' or "
            "FLIP_OPS_BACKEND=numpy."
        ) from exc
    return _cython_backend


def sample_patches(image: np.ndarray, position, num_tokens: int, patch_sizes, overlap_threshold: float | None,
                   coverage: float | None, rng: np.random.Generator, *, convention: str = "exact",
                   backend: str | None = None) -> PatchSample:
    """Sample fovea-like patches of several sizes around a 2-D Gaussian prompt (spec 3.1-3.4).

    Steps:

    1. Frame change (spec 3.1): ``position`` (frame N) to frame P with
       ``flip_core.gaussian.position_n_to_p(position, W, H, convention)``; ``"exact"`` transforms the covariance,
       ``"reference"`` scales the eigen-sigmas per axis like the reference wrappers (spec 2.5). Both sigmas are then
       multiplied by sqrt(2): patch centres are drawn from ``N(mu, 2 Sigma)``.
    2. Rotation (spec 2.4): a centre is ``mu + s_minor z1 (a, -b) + s_major z2 (b, a)`` with ``z1, z2 ~ N(0, 1)``, so
       the principal direction of the centres is the mask's major axis ``(b, a)``. (The reference gets the same
       distribution by passing ``-a`` to an ``R(+theta)`` sampler.)
    3. Quotas (spec 3.2): ``A = 2 pi s_minor s_major coverage``, ``avg_r = int(A / p_r^2)``, filled largest first;
       see :func:`patch_quota`.
    4. Placement (spec 3.3), smallest patch first, at most ``10 n_r`` attempts per resolution: reject unless
       ``cx - p/2 >= 0``, ``cx + p/2 < W - 1`` (same for y); reject when the summed intersection area of the box
       ``[c - p/2, c + p/2]^2`` with all already placed boxes (every resolution) exceeds ``overlap_threshold * p^2``.
    5. Crop (spec 3.3 step 5): native-scale bilinear p x p crop with the half-pixel offset, computed separably in
       float32 and rounded half up (exact formula: ``cython_ops.reference._bilinear_patch``; within 1 grey level of
       the reference's per-pixel float formula).

    **Overlap rule vs the reference (spec 3.4).** We implement the *nominal* rule, each placed box counted exactly
    once: the Cython kernel keeps every accepted box in a uniform spatial grid (cell = twice the smallest requested
    patch size, one list entry per covered cell) and counts each candidate box once per query (a per-box visit
    stamp); the NumPy reference checks every placed box directly. The result does not depend on the cell size. The
    reference hash shares one ``next`` pointer between the lists of all cells a box covers, so it skips some boxes and
    counts others several times; it places about half as many 16 px patches (spec example: [0, 0, 234, 223, ~30]
    against our [0, 0, 234, 223, 55]). The reference's 256-point Gaussian buffer (16 of every 256 draws discarded)
    and its ziggurat RNG are not reproduced: every draw comes from ``rng`` (see :mod:`cython_ops.reference` for the
    order).

    Args:
        image: (H, W, 3) uint8 RGB, C-contiguous; ``H, W >= max(patch_sizes) + 2``.
        position: (6,) ``[mu_x, mu_y, sigma_minor, sigma_major, rot_a, rot_b]`` in frame N (the input prompt).
        num_tokens: requested number of patches, ``1 <= num_tokens <= 2**20``; fewer are returned when the quota is
            smaller (small objects) or placement fails.
        patch_sizes: strictly increasing powers of two in [1, 256] px, typically ``(1, 2, 4, 8, 16)``.
        overlap_threshold: ``>= 0``; with ``coverage``, or both None to draw ``thr ~ U(0, 4)`` then
            ``coverage ~ U(0.1, 2)`` from ``rng`` (reference training, spec 3.1 step 5).
        coverage: ``> 0`` area factor of the quota rule (evaluation uses thr 2.67, coverage 1.44).
        rng: the only source of randomness.
        convention: ``"exact"`` or ``"reference"`` frame change (see above).
        backend: ``"cython"`` or ``"numpy"``; None reads ``FLIP_OPS_BACKEND`` (default ``"cython"``).

    Returns:
        :class:`PatchSample`: per resolution, ``patches`` (n_r, 3, p, p) uint8, ``coords`` (n_r, 2) float32 centres
        in frame M (``x / 128 - W / 256``), ``indices`` (n_r,) int32 in resolution order. Arrays may be views of one
        buffer.

    Raises:
        ValueError: bad image (dtype, ndim, channels, contiguity, too small), position (shape, NaN/inf, sigma <= 0,
            zero rotation vector), num_tokens, patch_sizes, overlap_threshold/coverage, convention or backend.
        TypeError: rng is not a ``numpy.random.Generator``.
        ImportError: backend "cython" while the extension is not built.
    """
    impl = reference if resolve_backend(backend) == "numpy" else _cython()
    return impl.sample_patches(image, position, num_tokens, patch_sizes, overlap_threshold, coverage, rng,
                               convention=convention)


def place_patches(image_size, position, num_tokens: int, patch_sizes, overlap_threshold: float | None,
                  coverage: float | None, rng: np.random.Generator, *, convention: str = "exact",
                  backend: str | None = None) -> PatchPlacement:
    """Steps 1-4 of :func:`sample_patches` (frame change, quotas, placement): every random draw, no pixel read.

    Args:
        image_size: ``(H, W)`` of the image in px; ``H, W >= max(patch_sizes) + 2``.
        position, num_tokens, patch_sizes, overlap_threshold, coverage, rng, convention, backend: as
            :func:`sample_patches`.

    Returns:
        :class:`PatchPlacement`: the parameters, counts per resolution, frame-P centres (float64) and frame-M
        coordinates (float32), and ``box``, the half-open pixel box its crops read.

    Raises:
        ValueError, TypeError, ImportError: as :func:`sample_patches` (``image_size`` not two positive integers or
            too small instead of a bad image).
    """
    impl = reference if resolve_backend(backend) == "numpy" else _cython()
    return impl.place_patches(image_size, position, num_tokens, patch_sizes, overlap_threshold, coverage, rng,
                              convention=convention)


def crop_patches(image: np.ndarray, placement: PatchPlacement, *, origin=(0, 0),
                 backend: str | None = None) -> PatchSample:
    """Step 5 of :func:`sample_patches`: the bilinear crops of a placement (no random draw).

    ``place_patches`` + ``crop_patches`` on the whole image gives exactly ``sample_patches``' output for the same
    generator state; on a region of the image that covers ``placement.box`` it gives the same bytes.

    Args:
        image: (h, w, 3) uint8 RGB with contiguous rows (C-contiguous, or a column slice of such an array): the
            whole image (``origin=(0, 0)``) or a region of it.
        placement: from :func:`place_patches` (for an image of that full size).
        origin: ``(x, y)`` image pixel of ``image[0, 0]``.
        backend: ``"cython"`` or ``"numpy"``; None reads ``FLIP_OPS_BACKEND``.

    Returns:
        :class:`PatchSample` (patches of the placement's centres; coords and indices as :func:`sample_patches`).

    Raises:
        ValueError: bad image, or a region that does not cover ``placement.box`` (both boxes named).
        TypeError: ``placement`` is not a :class:`PatchPlacement`.
        ImportError: backend "cython" while the extension is not built.
    """
    impl = reference if resolve_backend(backend) == "numpy" else _cython()
    return impl.crop_patches(image, placement, origin)


def sample_mask_targets(mask: np.ndarray, position, samples_per_group, rng: np.random.Generator, *,
                        convention: str = "exact", backend: str | None = None):
    """Sample labelled query points around the object boundary for the mask loss (spec 3.6).

    1. Crop: ``s = max(sigma_x, sigma_y)`` in frame P (``position_n_to_p(..., convention)``, **no** sqrt(2)); box
       ``[max(0, floor(mu - 5 s)), min(W - 1, ceil(mu + 5 s))]`` per axis, axis-aligned; if it is wider than 0.9 W
       and taller than 0.9 H the whole mask is used.
    2. Distance: boundary pixels have a 4-neighbour inside the crop with the other value (both sides of the edge
       count, the crop border does not). The L1 distance to the nearest boundary pixel is computed exactly with a
       two-pass raster transform (saturated at 65, which is all the groups need) instead of the reference's BFS.
    3. Groups (cumulative): g = 0..5 holds the pixels with ``d <= 2, 4, 8, 16, 32, 64``; group 6 holds all pixels.
    4. Per group g with ``n_g = samples_per_group[g]``: ``n_g // 2`` points labelled 1 from the inside pixels of g,
       then ``n_g - n_g // 2`` labelled 0 from the outside pixels, uniform with replacement, each with a
       ``U(-0.5, 0.5)`` jitter in x and y (the label is not re-checked). An empty group borrows from the nearest
       non-empty one in the order g-1, g+1, g-2, g+2, ...
    5. Output order ``[g0 inside, g0 outside, g1 inside, ...]``.

    Args:
        mask: (H, W) uint8 or bool, C-contiguous, ``H, W >= 2``, at least one non-zero (= inside) pixel.
        position: (6,) position in frame N (the ground-truth Gaussian of this mask).
        samples_per_group: 7 non-negative ints, e.g. :data:`DEFAULT_SAMPLES_PER_GROUP` (sum 2048).
        rng: the only source of randomness.
        convention: ``"exact"`` or ``"reference"`` frame change.
        backend: ``"cython"`` or ``"numpy"``; None reads ``FLIP_OPS_BACKEND`` (default ``"cython"``).

    Returns:
        ``(coords, labels)``: (N, 2) float32 points in frame M and (N,) uint8 labels in {0, 1},
        ``N = sum(samples_per_group)``; or ``None`` when the crop holds no inside or no outside pixel (the reference
        rejects such samples).

    Raises:
        ValueError: bad mask (dtype, ndim, contiguity, zero area), position, samples_per_group, convention or
            backend.
        TypeError: rng is not a ``numpy.random.Generator``.
        ImportError: backend "cython" while the extension is not built.
    """
    impl = reference if resolve_backend(backend) == "numpy" else _cython()
    return impl.sample_mask_targets(mask, position, samples_per_group, rng, convention=convention)
