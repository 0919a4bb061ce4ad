"""Opening and checking the training data, and building each rank's loader."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch

from flip_core.data.collate import CollatedBatch, collate_images
from flip_core.data.dataset import FlipTrainDataset
from flip_core.data.index import ImageIndex, build_image_index
from flip_core.data.sampler import MixturePlan, RankStream
from flip_core.train.config import DataConfig

__all__ = ["open_training_data", "build_loader", "check_training_data"]

logger = logging.getLogger(__name__)


def check_training_data(data: DataConfig) -> list:
    """Open every manifest and check its shards before training starts (``data.verify``: sha256 against
    ``index.json``, or only that every shard file exists).

    Returns:
        The opened ``ConvertedDataset`` objects, in ``data.manifests`` order.

    Raises:
        FileNotFoundError: a manifest path is not a finished conversion.
        ValueError: a shard or table is missing or corrupt; the message names every problem file.
    """
    from flip_core.manifest import open_dataset

    datasets, problems = [], []
    for path in data.manifests:
        dataset = open_dataset(path)
        if data.verify == "sha256":
            problems += dataset.verify()
        else:
            problems += [f"{p}: missing" for p in dataset.shards if not p.is_file()]
        datasets.append(dataset)
    if problems:
        raise ValueError("training data failed verification:\n  " + "\n  ".join(problems))
    return datasets


def open_training_data(data: DataConfig, *, verify: bool = True) -> list[ImageIndex]:
    """Image indexes of every manifest (deterministic instance filters applied, spec §1.5)."""
    if verify:
        datasets = check_training_data(data)
    else:
        from flip_core.manifest import open_dataset

        datasets = [open_dataset(p) for p in data.manifests]
    return [build_image_index(d, convention=data.convention) for d in datasets]


class _BatchKeys:
    """Re-iterable batch sampler over a rank's stream (DataLoader needs ``__iter__``)."""

    def __init__(self, stream: RankStream, batch_size: int) -> None:
        self.stream, self.batch_size = stream, batch_size

    def __iter__(self):
        return self.stream.batches(self.batch_size)


def build_loader(indexes: list[ImageIndex], data: DataConfig, *, patch_sizes: tuple[int, ...], seed: int,
                 rank: int, world_size: int, start_position: int) -> Iterator[CollatedBatch]:
    """Endless iterator of collated micro-batches for one rank, starting at rank-local image ``start_position``.

    Batches come in stream order whatever the number of loader workers (DataLoader keeps order), and each
    image's sample depends only on its key, so the batches are identical for any ``loader_workers``.
    """
    plan = MixturePlan(sizes=tuple(ix.num_images for ix in indexes), weights=data.mixing_weights, seed=seed)
    stream = RankStream(plan, rank=rank, world_size=world_size, start=start_position)
    dataset = FlipTrainDataset(indexes, data, patch_sizes, seed)
    extra = {"prefetch_factor": data.prefetch_factor, "persistent_workers": True} if data.loader_workers else {}
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=_BatchKeys(stream, data.images_per_batch),
                                         num_workers=data.loader_workers, collate_fn=collate_images, **extra)
    return iter(loader)
