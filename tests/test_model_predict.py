"""predict_mask: modes agree where they must, KV-cache batching, determinism and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flip_core.gaussian import mask_moments, moments_to_position
from flip_core.model import build_flip_tiny, predict_mask
from flip_core.model.predict import hierarchical_sizes, prompt_box

H, W = 120, 160


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def position():
    mask = np.zeros((H, W), bool)
    mask[50:70, 60:90] = True
    return moments_to_position(mask_moments(mask))


@pytest.fixture(scope="module")
def model():
    """Dense attention: every query row is computed independently of how many rows share a decoder call, so
    modes can be compared exactly. (CPU flash SDPA blocks differently for different query counts; see
    test_default_backend_modes_agree for its tolerance.)"""
    model = build_flip_tiny(seed=0, attention="dense").eval()
    return model


def _predict(model, image, position, mode, **kw):
    return predict_mask(model, image, position, mode, rng=np.random.default_rng(5), num_tokens=128, **kw)


def test_box_equals_full_inside_box(model, image, position):
    full = _predict(model, image, position, "full")
    box = _predict(model, image, position, "box")
    x0, y0, x1, y1 = box.box
    assert (x1 - x0 + 1) * (y1 - y0 + 1) == box.num_queries < full.num_queries == H * W
    np.testing.assert_allclose(box.probabilities[y0:y1 + 1, x0:x1 + 1],
                               full.probabilities[y0:y1 + 1, x0:x1 + 1], rtol=0, atol=1e-6)
    assert (box.mask[y0:y1 + 1, x0:x1 + 1] == full.mask[y0:y1 + 1, x0:x1 + 1]).all()
    outside = np.ones((H, W), bool)
    outside[y0:y1 + 1, x0:x1 + 1] = False
    assert not box.mask[outside].any() and (box.probabilities[outside] == 0).all()


def test_default_backend_modes_agree(image, position):
    fast = build_flip_tiny(seed=0).eval()
    full = _predict(fast, image, position, "full")
    box = _predict(fast, image, position, "box")
    x0, y0, x1, y1 = box.box
    np.testing.assert_allclose(box.probabilities[y0:y1 + 1, x0:x1 + 1],
                               full.probabilities[y0:y1 + 1, x0:x1 + 1], rtol=0, atol=1e-3)


def _with_bias(model, bias):
    clone = build_flip_tiny(seed=0, attention="dense").eval()
    clone.load_state_dict(model.state_dict())
    with torch.no_grad():
        clone.encoder.mask_extractor.to_mask.bias.fill_(bias)
    return clone


def test_confident_background_all_modes_agree(model, image, position):
    """Everything confidently background: full, box and hierarchical give the same (empty) mask, and the
    hierarchical mode stops after its coarse level."""
    sure = _with_bias(model, -50.0)
    preds = {m: _predict(sure, image, position, m) for m in ("full", "box", "hierarchical")}
    for pred in preds.values():
        assert not pred.mask.any()
    x0, y0, x1, y1 = preds["box"].box
    assert preds["hierarchical"].num_queries == np.prod(hierarchical_sizes(y1 - y0 + 1, x1 - x0 + 1)[0])


def test_hierarchical_equals_box_when_everything_is_uncertain(model, image, position):
    """The untrained head outputs p ~ 0.46 everywhere, so every pixel is refined at the final (full) level."""
    box = _predict(model, image, position, "box")
    hier = _predict(model, image, position, "hierarchical")
    assert ((box.probabilities > 0.01) & (box.probabilities < 0.99))[box.mask | (box.probabilities > 0)].all()
    assert hier.box == box.box
    np.testing.assert_allclose(hier.probabilities, box.probabilities, rtol=0, atol=1e-6)
    assert (hier.mask == box.mask).all()


def test_hierarchical_covers_last_row_and_column(model, image, position):
    """A positive head makes every box pixel foreground: the box's last row/column must be included."""
    pos_model = _with_bias(model, 50.0)
    hier = _predict(pos_model, image, position, "hierarchical")
    x0, y0, x1, y1 = hier.box
    assert hier.mask[y0:y1 + 1, x0:x1 + 1].all()
    assert hier.mask.sum() == (x1 - x0 + 1) * (y1 - y0 + 1)


def test_query_batching_reuses_cache(model, image, position, monkeypatch):
    calls = []
    original = model.encode
    monkeypatch.setattr(model, "encode", lambda batch: calls.append(1) or original(batch))
    small = _predict(model, image, position, "full", query_batch_size=997)
    assert len(calls) == 1
    monkeypatch.undo()
    big = _predict(model, image, position, "full")
    np.testing.assert_allclose(small.probabilities, big.probabilities, rtol=0, atol=1e-6)


def test_deterministic_and_reference_convention(model, image, position):
    a = _predict(model, image, position, "box")
    b = _predict(model, image, position, "box")
    assert np.array_equal(a.probabilities, b.probabilities) and a.num_tokens == b.num_tokens > 0
    ref = _predict(model, image, position, "box", convention="reference")
    assert ref.mask.shape == (H, W)
    assert set(a.timings_ms) == {"preprocess", "model", "postprocess"}


def test_box_outside_image_gives_empty_mask(model, image):
    far = np.array([30.0, 30.0, 0.01, 0.02, 0.0, 1.0])
    pred = _predict(model, image, far, "box")
    assert pred.box is None and not pred.mask.any() and pred.num_queries == 0


def test_prompt_box_floor_ceil_and_clip():
    assert prompt_box(np.array([50.5, 40.2, 1.0, 2.0, 0, 1]), 200, 100) == (40, 30, 61, 51)
    assert prompt_box(np.array([2.0, 98.0, 1.0, 3.0, 0, 1]), 200, 100) == (0, 83, 17, 99)


def test_hierarchical_sizes():
    assert hierarchical_sizes(60, 50) == [(60, 50)]
    sizes = hierarchical_sizes(400, 1200)
    assert sizes[0] == (15, 45) and sizes[-1] == (400, 1200)
    # reference rule: n = floor(log_3(1200 / 45)) = 2 levels of refinement, constant factor (1200/45)^(1/2)
    assert len(sizes) == 3
    ratios = [b[1] / a[1] for a, b in zip(sizes, sizes[1:])]
    assert all(abs(r - (1200 / 45) ** 0.5) < 0.1 for r in ratios)
    assert hierarchical_sizes(3000, 100)[0] == (45, 2)


@pytest.mark.parametrize("bad,match", [
    (np.array([0, 0, 0.0, 0.1, 0, 1]), "sigmas must be > 0"),
    (np.array([0, 0, 0.1, -0.1, 0, 1]), "sigmas must be > 0"),
    (np.array([0, np.nan, 0.1, 0.1, 0, 1]), "non-finite"),
    (np.array([0, 0, 0.1, 0.1, 0]), r"shape \(6,\)"),
    (np.array([0, 0, 0.1, 0.1, 0, 0]), "rotation"),
])
def test_bad_position(model, image, bad, match):
    with pytest.raises(ValueError, match=match):
        _predict(model, image, bad, "full")


def test_bad_arguments(model, image, position):
    with pytest.raises(ValueError, match="uint8"):
        _predict(model, image.astype(np.float32), position, "full")
    with pytest.raises(ValueError, match="mode must be one of"):
        _predict(model, image, position, "optimized")
    with pytest.raises(ValueError, match="Generator"):
        predict_mask(model, image, position, "full", rng=np.random.RandomState(0))
