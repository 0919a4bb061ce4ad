"""FLIP-tiny through the evaluation protocols: seeded determinism in every mode, click protocol shapes."""

from __future__ import annotations

import numpy as np
import pytest

from flip_core.eval.adapter import ClickAdapterConfig, ClickPromptAdapter
from flip_core.eval.predictors import FlipPredictor
from flip_core.eval.protocols import click_protocol_instance, flip_protocol_instance
from flip_core.gaussian import mask_moments

torch = pytest.importorskip("torch")
model_mod = pytest.importorskip("flip_core.model")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return model_mod.build_flip_model("tiny").eval()


def _scene():
    rng = np.random.default_rng(3)
    h, w = 120, 160
    image = (rng.random((h, w, 3)) * 80).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    gt = ((xx - 70) / 30.0) ** 2 + ((yy - 60) / 20.0) ** 2 <= 1
    image[gt] = (200, 60, 40)
    return image, gt


@pytest.mark.parametrize("mode", ["full", "box", "hierarchical"])
def test_flip_protocol_is_seeded(tiny, mode):
    image, gt = _scene()
    pred = FlipPredictor(model=tiny, mode=mode, num_tokens=128)
    m = mask_moments(gt)
    a = flip_protocol_instance(pred, image, gt, None, m, np.random.default_rng(5))
    b = flip_protocol_instance(pred, image, gt, None, m, np.random.default_rng(5))
    assert (a["iou"], a["num_tokens"]) == (b["iou"], b["num_tokens"])
    assert 0.0 <= a["iou"] <= 1.0 and a["num_tokens"] > 0
    assert a["model_ms"] >= 0 and a["total_ms"] > 0


def test_click_protocol_with_flip(tiny):
    image, gt = _scene()
    adapter = ClickPromptAdapter(FlipPredictor(model=tiny, mode="box", num_tokens=128), ClickAdapterConfig())
    a = click_protocol_instance(adapter, image, gt, None, np.random.default_rng(1), max_clicks=3)
    b = click_protocol_instance(adapter, image, gt, None, np.random.default_rng(1), max_clicks=3)
    assert a["ious"] == b["ious"] and a["click_y"] == b["click_y"]
    assert len(a["ious"]) == 3 and a["click_positive"][0]
    assert a["num_predictions"] >= 3
