"""Seeded, resumable, rank-disjoint sampling of images from several datasets with weighted mixing.

Design (replaces the reference's ``DistributedObjectSampler``, flip-spec §5.3, whose rank shards overlap and drop
the tail):

* An **epoch** of the mixture has ``L = sum(n_d)`` draws. Dataset ``d`` contributes ``m_d`` of them, its weight
  share of ``L`` (largest-remainder rounding). With the default weights (proportional to size) ``m_d = n_d`` and every
  image appears exactly once per epoch, like the reference's negative weights.
* Dataset ``d`` has an endless stream of permutations ``perm_{d,k}`` (k = 0, 1, ...), each drawn from
  ``SeedSequence([seed, 1, d, k])``; epoch ``e`` takes stream positions ``[e m_d, (e+1) m_d)``, so a dataset with a
  weight share above its size share is cycled through, one with less continues where it stopped.
* The ``L`` draws are interleaved by a permutation from ``SeedSequence([seed, 2, e])``: this is the **global epoch
  order**, the same for every world size.
* Rank ``r`` of ``W`` takes positions ``j = r, r + W, r + 2W, ...`` of each epoch's order: the rank parts are
  disjoint and their union is the whole epoch (nothing is dropped; parts differ in length by at most one). Training
  is step-based, so each rank simply continues into the next epoch; no padding or duplication is needed.
* Each draw is identified by ``SampleKey(epoch, position, dataset, image)``; the loader derives that draw's random
  generator from ``(seed, epoch, position)`` (:func:`sample_generator`), so the data of a draw does not depend on the
  rank, the number of loader workers or which worker made it. Resuming at rank-local position ``p`` (= steps done x
  images per step per rank) reproduces the uninterrupted stream exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["MixturePlan", "SampleKey", "RankStream", "sample_generator", "derive_seed_sequence"]

_TAG_DATASET_PERM = 1
_TAG_MIX = 2
_TAG_SAMPLE = 3


def derive_seed_sequence(seed: int, *keys: int) -> np.random.SeedSequence:
    """``SeedSequence([seed, *keys])``; every random stream in the pipeline is derived this way."""
    if seed < 0 or any(k < 0 for k in keys):
        raise ValueError(f"seed and keys must be >= 0, got seed={seed}, keys={keys}")
    return np.random.SeedSequence([int(seed), *map(int, keys)])


def sample_generator(seed: int, epoch: int, position: int) -> np.random.Generator:
    """Generator for the draw at ``position`` of the global order of ``epoch`` (PCG64, independent streams)."""
    return np.random.Generator(np.random.PCG64(derive_seed_sequence(seed, _TAG_SAMPLE, epoch, position)))


class SampleKey(NamedTuple):
    """One draw: its epoch, its position in the epoch's global order, its dataset and image index."""

    epoch: int
    position: int
    dataset: int
    image: int


@dataclass(frozen=True, kw_only=True, slots=True)
class MixturePlan:
    """How many images each dataset contributes per epoch, and the seeded global order of every epoch."""

    sizes: tuple[int, ...]
    """Number of (usable) images per dataset, in ``--data`` order."""
    weights: tuple[float | None, ...]
    """Relative mixing weight per dataset; None or <= 0 means proportional to its size (reference: negative)."""
    seed: int
    """Base seed of every permutation."""

    def __post_init__(self) -> None:
        if not self.sizes or len(self.sizes) != len(self.weights):
            raise ValueError(f"need one weight per dataset, got sizes={self.sizes}, weights={self.weights}")
        if any(n <= 0 for n in self.sizes):
            raise ValueError(f"every dataset needs at least one usable image, got sizes {self.sizes}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    @property
    def epoch_length(self) -> int:
        """``L = sum(n_d)`` draws per epoch."""
        return int(sum(self.sizes))

    @property
    def draws_per_epoch(self) -> tuple[int, ...]:
        """``m_d``: draws of dataset d per epoch, the weight shares of ``L`` by largest remainder (sum == L)."""
        total = self.epoch_length
        raw = np.array([w if w is not None and w > 0 else n / total for n, w in zip(self.sizes, self.weights)])
        exact = raw / raw.sum() * total
        counts = np.floor(exact).astype(np.int64)
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[: total - int(counts.sum())]] += 1
        return tuple(int(c) for c in counts)

    def _dataset_draws(self, d: int, start: int, count: int) -> np.ndarray:
        """Positions ``[start, start+count)`` of dataset d's endless stream of seeded permutations."""
        n = self.sizes[d]
        out = np.empty(count, dtype=np.int64)
        done = 0
        while done < count:
            k, offset = divmod(start + done, n)
            perm = np.random.default_rng(derive_seed_sequence(self.seed, _TAG_DATASET_PERM, d, k)).permutation(n)
            take = min(n - offset, count - done)
            out[done : done + take] = perm[offset : offset + take]
            done += take
        return out

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Global order of ``epoch``: ``(dataset (L,) int64, image (L,) int64)``; identical for every world size."""
        m = self.draws_per_epoch
        datasets = np.concatenate([np.full(c, d, dtype=np.int64) for d, c in enumerate(m)])
        images = np.concatenate([self._dataset_draws(d, epoch * c, c) for d, c in enumerate(m)])
        mix = np.random.default_rng(derive_seed_sequence(self.seed, _TAG_MIX, epoch)).permutation(len(datasets))
        return datasets[mix], images[mix]


class RankStream:
    """Endless stream of :class:`SampleKey` for one rank, starting at rank-local position ``start``.

    Rank r takes global positions ``r, r+W, ...`` of each epoch (see module docstring); rank-local position
    ``p`` is epoch ``p // len_r``, item ``p % len_r``, with ``len_r = ceil((L - r) / W)``.

    Raises:
        ValueError: for ``rank`` outside ``[0, world_size)``, ``start < 0`` or ``world_size > L`` (a rank with
            no data).
    """

    def __init__(self, plan: MixturePlan, *, rank: int, world_size: int, start: int = 0) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if world_size > plan.epoch_length:
            raise ValueError(f"{world_size} ranks but only {plan.epoch_length} images per epoch")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.plan, self.rank, self.world_size, self.start = plan, rank, world_size, start
        self.rank_epoch_length = len(range(rank, plan.epoch_length, world_size))
        self._cached: tuple[int, np.ndarray, np.ndarray] | None = None

    def _order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cached is None or self._cached[0] != epoch:
            datasets, images = self.plan.epoch_order(epoch)
            self._cached = (epoch, datasets, images)
        return self._cached[1], self._cached[2]

    def __iter__(self) -> Iterator[SampleKey]:
        position = self.start
        while True:
            epoch, item = divmod(position, self.rank_epoch_length)
            datasets, images = self._order(epoch)
            j = self.rank + item * self.world_size
            yield SampleKey(epoch, j, int(datasets[j]), int(images[j]))
            position += 1

    def batches(self, batch_size: int) -> Iterator[list[SampleKey]]:
        """Consecutive groups of ``batch_size`` keys (one micro-batch each)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        it = iter(self)
        while True:
            yield [next(it) for _ in range(batch_size)]

    def take(self, count: int) -> list[SampleKey]:
        """The next ``count`` keys from ``start`` (for tests and inspection)."""
        it = iter(self)
        return [next(it) for _ in range(count)]


def epoch_part(plan: MixturePlan, epoch: int, rank: int, world_size: int) -> Sequence[SampleKey]:
    """All keys of ``rank`` in ``epoch`` (test helper; equals the stream between epoch boundaries)."""
    stream = RankStream(plan, rank=rank, world_size=world_size)
    stream.start = epoch * stream.rank_epoch_length
    return stream.take(stream.rank_epoch_length)
