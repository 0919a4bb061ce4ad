"""Training data pipeline on shards converted from ../shared/data/coco: index filters, prompts, collate, loader."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from flip_core.data.collate import collate_images, mask_point_index, to_flip_batch
from flip_core.data.dataset import DROPPED, REJECT_TOKENS, FlipTrainDataset, ImageSample, mask_pool_layout
from flip_core.data.sampler import SampleKey
from flip_core.train.config import DataConfig
from flip_core.train.data_setup import build_loader, check_training_data, open_training_data
from tests.flip_train_data import converted_coco

PATCH_SIZES = (1, 2, 4, 8, 16)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return converted_coco(tmp_path_factory)


def _data(coco, **kw) -> DataConfig:
    return DataConfig(manifests=(str(coco),), **{"loader_workers": 0, **kw})


def test_index_applies_reference_filters(coco):
    (index,) = open_training_data(_data(coco))
    assert index.num_images == 19  # every val2017 sample image has a usable instance
    assert len(index.inst_row) + index.rejects["instance: gt sigma <= 0.005 (frame M)"] \
        + index.rejects["instance: bbox half extent outside (0.005, 25) (frame M)"] == 290
    assert np.all(np.diff(index.inst_start) >= 1)
    assert index.inst_position.shape == (len(index.inst_row), 6)


def test_region_decoded_samples_equal_whole_image_sampling(coco):
    """The loader places every prompt's patches first and decodes only the pixel box their crops read. Its samples
    must equal, byte for byte, the straightforward order: decode the whole image, then sample_patches per prompt."""
    import cython_ops
    from flip_core.data.dataset import REJECT_MASK, PromptSample
    from flip_core.data.sampler import sample_generator
    from flip_core.gaussian import position_n_to_m

    data = _data(coco, dynamic_sampling=False)
    (index,) = open_training_data(data)
    ds = FlipTrainDataset([index], data, PATCH_SIZES, seed=11)

    def whole_image_sample(key):  # the pre-region-decoding loader, written out
        rng = sample_generator(ds.seed, key.epoch, key.position)
        reader = ds.reader(0, int(index.image_shard[key.image]))
        image = reader.image(int(index.image_row[key.image]))
        span = index.instances(key.image)
        candidates = np.arange(span.start, span.stop)
        chosen = rng.choice(candidates, size=4, replace=len(candidates) < 4)
        prompts = []
        for inst in chosen:
            inst = int(inst)
            for attempt in range(data.max_redraws + 1):
                if attempt:
                    inst = int(rng.choice(candidates))
                mask = reader.mask(int(index.inst_row[inst]))
                position = cython_ops.augment_position(index.inst_position[inst], rng)
                tokens = cython_ops.sample_num_tokens(data.min_tokens, data.max_tokens, data.mean_tokens, rng)
                patches = cython_ops.sample_patches(image, position, tokens, PATCH_SIZES, None, None, rng)
                if sum(len(c) for c in patches.coords) < data.min_tokens:
                    continue
                targets = cython_ops.sample_mask_targets(mask, position, ds.pool_layout, rng)
                if targets is None:
                    continue
                pos_m = position_n_to_m(position, image.shape[1], image.shape[0]).astype(np.float32)
                prompts.append(PromptSample(list(patches.patches), list(patches.coords), pos_m, *targets))
                break
        return prompts

    assert REJECT_MASK  # (both paths redraw on the same two reasons)
    for image in range(index.num_images):
        key = SampleKey(0, image, 0, image)
        got, expected = ds[key].prompts, whole_image_sample(key)
        assert len(got) == len(expected) > 0
        for a, b in zip(got, expected):
            assert all(np.array_equal(x, y) for x, y in zip(a.patches, b.patches)), image
            assert all(np.array_equal(x, y) for x, y in zip(a.coords, b.coords))
            assert np.array_equal(a.position, b.position) and np.array_equal(a.mask_coords, b.mask_coords)
            assert np.array_equal(a.mask_labels, b.mask_labels)


def test_prompts_are_valid_and_deterministic(coco):
    data = _data(coco)
    (index,) = open_training_data(data)
    ds = FlipTrainDataset([index], data, PATCH_SIZES, seed=7)
    key = SampleKey(0, 3, 0, 5)
    a, b = ds[key], ds[key]
    assert len(a.prompts) == data.num_masks_per_image
    for pa, pb in zip(a.prompts, b.prompts):
        assert all(np.array_equal(x, y) for x, y in zip(pa.patches, pb.patches))
        assert np.array_equal(pa.mask_coords, pb.mask_coords) and np.array_equal(pa.position, pb.position)
        assert sum(len(c) for c in pa.coords) >= data.min_tokens
        assert pa.mask_coords.shape == (7 * 2024, 2) and set(np.unique(pa.mask_labels)) <= {0, 1}
        assert pa.position.dtype == np.float32 and pa.position[2] > 0 and pa.position[3] > 0
        h, w = index.image_size[5]
        assert abs(pa.position[0]) <= w / 256 + 1 and abs(pa.position[1]) <= h / 256 + 1  # frame M
    other = ds[SampleKey(0, 4, 0, 5)]
    assert not np.array_equal(other.prompts[0].mask_coords, a.prompts[0].mask_coords)


def test_redraws_are_bounded_and_counted(coco):
    data = _data(coco, min_tokens=2000, mean_tokens=2000, max_tokens=2048, max_redraws=2)
    (index,) = open_training_data(data)
    item = FlipTrainDataset([index], data, PATCH_SIZES, seed=0)[SampleKey(0, 0, 0, 0)]
    dropped = item.counts.get(DROPPED, 0)
    assert dropped == data.num_masks_per_image - len(item.prompts) and dropped > 0
    assert item.counts[REJECT_TOKENS] >= 3 * dropped  # 1 + max_redraws attempts per dropped prompt
    empty = ImageSample(item.key, [], item.counts)
    with pytest.raises(ValueError, match="no usable prompt in a micro-batch of 1 images"):
        collate_images([empty])


def test_mask_point_selection_keeps_group_layout():
    pool = (10, 10, 10, 10, 10, 10, 10)
    idx = mask_point_index(pool, (4, 2, 0, 2, 2, 2, 2)).tolist()
    assert idx[:4] == [0, 1, 5, 6] and idx[4:6] == [10, 15] and idx[6:8] == [30, 35]
    with pytest.raises(ValueError, match="group 0: 12 points requested"):
        mask_point_index(pool, (12, 0, 0, 0, 0, 0, 0))


def test_loader_batches_match_flip_batch_contract_for_any_worker_count(coco):
    data = _data(coco, images_per_batch=2)
    indexes = open_training_data(data)
    inline = build_loader(indexes, data, patch_sizes=PATCH_SIZES, seed=3, rank=1, world_size=2, start_position=4)
    first = [next(inline) for _ in range(2)]
    workers = build_loader(indexes, _data(coco, images_per_batch=2, loader_workers=2), patch_sizes=PATCH_SIZES,
                           seed=3, rank=1, world_size=2, start_position=4)
    second = [next(workers) for _ in range(2)]
    del workers
    for x, y in zip(first, second):
        assert x.keys == y.keys and torch.equal(x.pool_coords, y.pool_coords)
        assert all(torch.equal(a, b) for a, b in zip(x.patches, y.patches))
    batch = to_flip_batch(first[0], mask_pool_layout(data), data.default_samples_per_group)
    batch.validate(PATCH_SIZES)
    assert batch.num_samples == 8 and batch.targets.shape == (8 * 2048,)
    assert int(batch.targets.sum()) == 8 * 1024  # half inside, half outside (spec 3.6)
    assert torch.equal(batch.patch_counts.sum(0), torch.tensor([len(p) for p in batch.patches]))


def test_missing_or_corrupt_shard_named_before_training(coco, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(coco, broken)
    shard = sorted(broken.glob("shard-*.h5"))[1]
    with shard.open("r+b") as fh:
        fh.seek(4000)
        fh.write(b"\x00garbage\x00")
    with pytest.raises(ValueError, match=f"{shard.name}: sha256 differs"):
        check_training_data(_data(broken))
    shard.unlink()
    with pytest.raises(ValueError, match=f"{shard.name}: missing"):
        check_training_data(_data(broken))
    with pytest.raises(FileNotFoundError, match="index.json"):
        check_training_data(_data(tmp_path / "nowhere"))
