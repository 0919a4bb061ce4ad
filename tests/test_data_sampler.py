"""Distributed mixture sampler: rank parts disjoint and complete, seeded, resumable, weighted."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from flip_core.data.sampler import MixturePlan, RankStream, epoch_part, sample_generator


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("epoch", [0, 3])
def test_rank_parts_disjoint_and_complete(world_size, epoch):
    plan = MixturePlan(sizes=(13, 5, 9), weights=(None, None, None), seed=11)
    parts = [epoch_part(plan, epoch, r, world_size) for r in range(world_size)]
    positions = [k.position for part in parts for k in part]
    assert sorted(positions) == list(range(plan.epoch_length))  # disjoint + complete
    images = Counter((k.dataset, k.image) for part in parts for k in part)
    assert set(images.values()) == {1}  # proportional weights: every image exactly once per epoch
    assert len(images) == plan.epoch_length
    lengths = [len(p) for p in parts]
    assert max(lengths) - min(lengths) <= 1


def test_order_independent_of_world_size_and_seeded():
    plan = MixturePlan(sizes=(20, 6), weights=(None, None), seed=3)
    one = epoch_part(plan, 1, 0, 1)
    two = sorted(epoch_part(plan, 1, 0, 2) + epoch_part(plan, 1, 1, 2), key=lambda k: k.position)
    assert one == two
    assert epoch_part(plan, 0, 0, 1) != epoch_part(plan, 1, 0, 1)  # new permutation per epoch
    other = MixturePlan(sizes=(20, 6), weights=(None, None), seed=4)
    assert epoch_part(other, 1, 0, 1) != one


def test_resume_continues_the_same_stream_across_epochs():
    plan = MixturePlan(sizes=(7, 4), weights=(None, None), seed=5)
    full = RankStream(plan, rank=1, world_size=3).take(20)
    resumed = RankStream(plan, rank=1, world_size=3, start=9).take(11)
    assert full[9:] == resumed


def test_weighted_mixing_counts_and_cycling():
    plan = MixturePlan(sizes=(10, 40), weights=(3.0, 1.0), seed=0)
    assert plan.draws_per_epoch == (38, 12)  # 3:1 of L=50 (37.5 -> 38 by largest remainder)
    d, i = plan.epoch_order(0)
    small = Counter(i[d == 0].tolist())
    assert set(small) == set(range(10)) and max(small.values()) - min(small.values()) <= 1
    # the big dataset continues where it stopped: epochs 0..2 give 36 distinct of its 40 images
    seen = np.concatenate([plan.epoch_order(e)[1][plan.epoch_order(e)[0] == 1] for e in range(3)])
    assert len(set(seen.tolist())) == 36


def test_sample_generator_depends_on_key_only():
    a = sample_generator(1, 2, 3).random(4)
    assert np.array_equal(a, sample_generator(1, 2, 3).random(4))
    assert not np.array_equal(a, sample_generator(1, 2, 4).random(4))
    assert not np.array_equal(a, sample_generator(1, 3, 3).random(4))


def test_bad_arguments():
    with pytest.raises(ValueError, match="one weight per dataset"):
        MixturePlan(sizes=(3,), weights=(None, None), seed=0)
    with pytest.raises(ValueError, match="usable image"):
        MixturePlan(sizes=(0,), weights=(None,), seed=0)
    plan = MixturePlan(sizes=(3,), weights=(None,), seed=0)
    with pytest.raises(ValueError, match="rank"):
        RankStream(plan, rank=2, world_size=2)
    with pytest.raises(ValueError, match="4 ranks"):
        RankStream(plan, rank=0, world_size=4)
