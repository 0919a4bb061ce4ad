"""Training samples: per image, up to ``num_masks_per_image`` prompts built like reference training.

Per drawn image (flip-spec §5.3, ``HDF5_Dataset.__getitem__``/``_load``), with the draw's own generator
(:func:`flip_core.data.sampler.sample_generator`, keyed by ``(seed, epoch, position)``):

1. read the image header (size only); choose ``num_masks_per_image`` usable instances (without replacement when
   there are enough, with replacement otherwise, like the reference);
2. per prompt: ground truth ``gt = moments_to_position(moments)`` (frame N) -> ``input = augment_position(gt)``
   (§2.2) -> ``num_tokens = sample_num_tokens(min, max, mean)`` (§2.3) -> ``place_patches`` around the **input**
   position with random thr/coverage (``None, None``: thr ~ U(0, 4), coverage ~ U(0.1, 2), §3.1) ->
   ``sample_mask_targets`` around the **input** position labelled from the ground-truth mask (§3.6);
3. random validity filters (§1.5): realised patches ``>= min_tokens`` and mask sampling succeeded. A rejected
   prompt is redrawn (fresh instance choice, augmentation and sampling) at most ``max_redraws`` times; every
   redraw and every prompt finally dropped is counted by reason (the reference recursed without bound on a random
   other image, spec §9.10). The deterministic filters were applied when the index was built
   (:mod:`flip_core.data.index`);
4. frame M: the input position goes through ``position_n_to_m(..., convention)``; patch centres and mask points
   come back from ``cython_ops`` in frame M already;
5. decode the image once, only the pixel box the crops of all accepted prompts read
   (:meth:`flip_core.images.RgbSource.decode_region`), and crop the patches (``crop_patches``). Placement draws every
   random number and crops draw none, so this is the same sample, draw for draw and byte for byte, as calling
   ``sample_patches`` on the decoded image in step 2 (tested); it saves the JPEG work below the box and the
   IDCT/colour conversion above it and beside it (about 0.4 ms of 1.7 ms per COCO image, BENCHMARKS.md).

Mask-target pool (dynamic sampling without loader lag): when ``dynamic_sampling`` is on, every prompt samples
``pool = num_mask_points - 6 * min_samples_per_group`` points in **each** of the 7 groups (the most any group can be
given by spec §5.4's re-weighting). The training loop then takes the first ``n_g // 2`` inside and
``n_g - n_g // 2`` outside points of each group block with the *current* counts (:func:`select_mask_points`). The
points of a block are i.i.d., so this is the same distribution as sampling ``n_g`` directly, and the batch always
matches the counts the loss is analysed with (the reference's prefetching loader could use stale counts, §9.5).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

import cython_ops
from flip_core.data.index import ImageIndex
from flip_core.data.sampler import SampleKey, sample_generator
from flip_core.gaussian import position_n_to_m
from flip_core.images import open_rgb, region_decoding_available
from flip_core.shards import ShardReader
from flip_core.train.config import NUM_MASK_GROUPS, DataConfig

__all__ = ["PromptSample", "ImageSample", "FlipTrainDataset", "mask_pool_layout"]

logger = logging.getLogger(__name__)

REJECT_TOKENS = "prompt redrawn: realised patches < min_tokens"
REJECT_MASK = "prompt redrawn: mask sampling found no inside or no outside pixel"
DROPPED = "prompt dropped after max_redraws"


def mask_pool_layout(data: DataConfig) -> tuple[int, ...]:
    """Points sampled per group for every prompt: the pool (dynamic) or the fixed default split."""
    if not data.dynamic_sampling:
        return data.default_samples_per_group
    return (data.num_mask_points - (NUM_MASK_GROUPS - 1) * data.min_samples_per_group,) * NUM_MASK_GROUPS


@dataclass(frozen=True, slots=True)
class PromptSample:
    """One object sample (prompt)."""

    patches: list[np.ndarray]
    """Per resolution r: (n_r, 3, p_r, p_r) uint8."""
    coords: list[np.ndarray]
    """Per resolution r: (n_r, 2) float32 patch centres, frame M."""
    position: np.ndarray
    """(6,) float32 input (augmented) position, frame M."""
    mask_coords: np.ndarray
    """(P, 2) float32 mask points, frame M, laid out as :func:`mask_pool_layout`."""
    mask_labels: np.ndarray
    """(P,) uint8 labels in {0, 1}."""


@dataclass(frozen=True, slots=True)
class ImageSample:
    """All prompts built for one drawn image, plus what happened while building them."""

    key: SampleKey
    prompts: list[PromptSample]
    counts: dict[str, int]
    """Redraws/drops by reason (see module constants)."""


class FlipTrainDataset:
    """Map-style dataset over :class:`~flip_core.data.sampler.SampleKey` (one item = one image's prompts).

    Holds no open files when pickled: each process opens the shards it needs on first use (``ShardReader`` is
    lazy and per process). Indexing with the same key always gives the same sample.

    Args:
        indexes: one :class:`ImageIndex` per dataset, in ``--data`` order.
        data: sampling settings.
        patch_sizes: patch sides of the model, e.g. ``(1, 2, 4, 8, 16)``.
        seed: run seed (per-draw generators derive from it).
    """

    def __init__(self, indexes: list[ImageIndex], data: DataConfig, patch_sizes: tuple[int, ...], seed: int):
        if not region_decoding_available():
            logger.warning("cython_ops._jpeg is not built (no libjpeg-turbo headers at install time): the loader "
                           "decodes whole JPEGs (same samples, ~0.4 ms per image slower); see README, Quick start")
        self.indexes, self.data, self.patch_sizes, self.seed = indexes, data, tuple(patch_sizes), seed
        self.pool_layout = mask_pool_layout(data)
        self._readers: dict[tuple[int, int], ShardReader] = {}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_readers"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._readers = {}

    def reader(self, dataset: int, shard: int) -> ShardReader:
        """The (lazily opened) reader of one shard in this process."""
        key = (dataset, shard)
        if key not in self._readers:
            self._readers[key] = ShardReader(self.indexes[dataset].shards[shard])
        return self._readers[key]

    def __getitem__(self, key: SampleKey) -> ImageSample:
        key = SampleKey(*key)
        rng = sample_generator(self.seed, key.epoch, key.position)
        index = self.indexes[key.dataset]
        reader = self.reader(key.dataset, int(index.image_shard[key.image]))
        source = open_rgb(reader.image_data(int(index.image_row[key.image])))
        size = (source.height, source.width)
        span = index.instances(key.image)
        candidates = np.arange(span.start, span.stop)
        k = self.data.num_masks_per_image
        chosen = rng.choice(candidates, size=k, replace=len(candidates) < k)
        counts: Counter[str] = Counter()
        masks: dict[int, np.ndarray] = {}
        placed = []
        for inst in chosen:
            prompt = self._prompt_with_redraws(int(inst), candidates, size, reader, index, masks, rng, counts)
            if prompt is not None:
                placed.append(prompt)
        prompts = []
        if placed:
            region, origin = source.decode_region(cython_ops.union_box(p[0].box for p in placed))
            for placement, position, mask_coords, mask_labels in placed:
                patches = cython_ops.crop_patches(region, placement, origin=origin, backend=self.data.backend)
                prompts.append(PromptSample(list(patches.patches), list(patches.coords), position, mask_coords,
                                            mask_labels))
        return ImageSample(key, prompts, dict(counts))

    def _prompt_with_redraws(self, inst, candidates, size, reader, index, masks, rng, counts):
        for attempt in range(self.data.max_redraws + 1):
            if attempt:
                inst = int(rng.choice(candidates))
            if inst not in masks:
                masks[inst] = reader.mask(int(index.inst_row[inst]))
            prompt, reason = self._prompt(size, masks[inst], index.inst_position[inst], rng)
            if prompt is not None:
                return prompt
            counts[reason] += 1
        counts[DROPPED] += 1
        return None

    def _prompt(self, size, mask, gt_position, rng):
        """One prompt's random part: ``(placement, position frame M, mask coords, mask labels)``, or
        ``(None, reason)``."""
        d = self.data
        position = cython_ops.augment_position(gt_position, rng)
        num_tokens = cython_ops.sample_num_tokens(d.min_tokens, d.max_tokens, d.mean_tokens, rng)
        placement = cython_ops.place_patches(size, position, num_tokens, self.patch_sizes, None, None, rng,
                                             convention=d.convention, backend=d.backend)
        if sum(placement.counts) < d.min_tokens:
            return None, REJECT_TOKENS
        targets = cython_ops.sample_mask_targets(mask, position, self.pool_layout, rng, convention=d.convention,
                                                 backend=d.backend)
        if targets is None:
            return None, REJECT_MASK
        h, w = size
        pos_m = position_n_to_m(np.asarray(position, dtype=np.float32), w, h, convention=d.convention)
        return (placement, pos_m.astype(np.float32), targets[0], targets[1]), ""
