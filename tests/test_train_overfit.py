"""Overfit check: FLIP-tiny with Ranger memorises 8 fixed prompts from the converted COCO sample.

Bound: sampled-point IoU >= 0.85 within OVERFIT_MAX_STEPS = 300 CPU steps (one thread; it took 223 steps, ~30 s
on the shared 2-core VM). The learning rate is 2e-2 (the reference's 6e-4 needs thousands of steps); everything
else is the training recipe: Ranger (no update in steps 1-5, Lookahead every 6), BCE on 512 mask points per
prompt in the 7 boundary-distance groups, patches from the real pipeline (budget mean 128, max 256 tokens).
"""

from __future__ import annotations

import pytest
import torch

from flip_core.data.collate import to_flip_batch
from flip_core.data.dataset import mask_pool_layout
from flip_core.model import build_flip_model, mask_loss, sampled_point_iou
from flip_core.train.config import DataConfig
from flip_core.train.data_setup import build_loader, open_training_data
from flip_core.train.ranger import Ranger
from tests.flip_train_data import converted_coco

OVERFIT_MAX_STEPS = 300


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return converted_coco(tmp_path_factory)


def test_flip_tiny_overfits_eight_prompts(coco):
    data = DataConfig(manifests=(str(coco),), images_per_batch=2, loader_workers=0, mean_tokens=128,
                      max_tokens=256, dynamic_sampling=False, num_mask_points=512)
    model = build_flip_model("tiny", seed=0)
    loader = build_loader(open_training_data(data), data, patch_sizes=model.config.patch_sizes, seed=1, rank=0,
                          world_size=1, start_position=0)
    batch = to_flip_batch(next(loader), mask_pool_layout(data), data.default_samples_per_group)
    assert batch.num_samples == 8
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opt = Ranger(model.parameters(), lr=2e-2)
        ious = []
        for _ in range(OVERFIT_MAX_STEPS):
            opt.zero_grad()
            logits = model(batch)
            mask_loss(logits, batch.targets).backward()
            opt.step()
            ious.append(float(sampled_point_iou(logits.detach(), batch.targets, batch.query_counts).mean()))
            if ious[-1] >= 0.85:
                break
    finally:
        torch.set_num_threads(threads)
    assert ious[-1] >= 0.85, f"IoU {ious[-1]:.3f} after {len(ious)} steps (best {max(ious):.3f})"
