"""FLIP model: parameter counts, forward/backward for every size, configs and bad-input errors."""

from __future__ import annotations

import json

import pytest
import torch

from flip_core.model import (
    FLIP_MODELS,
    FlipConfig,
    build_flip_model,
    build_flip_tiny,
    load_flip_config_json,
    mask_loss,
    sampled_point_iou,
)
from flip_core.model.synthetic import synthetic_batch

EXPECTED_PARAMS = {"tiny": 513_804, "small": 2_344_690, "middle": 11_518_267, "large": 96_624_875}


def _closed_form(c: int, layers: int, r: int = 8) -> int:
    """Spec 4.1 closed form: L(12C^2+116C+3459) + 74C^2 + 415.5C + 3459 + R*C + 4R."""
    return int(layers * (12 * c * c + 116 * c + 3459) + 74 * c * c + 415.5 * c + 3459 + r * c + 4 * r)


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_parameter_counts_exact(name):
    model = FLIP_MODELS[name](seed=0)
    assert model.num_parameters() == EXPECTED_PARAMS[name]
    cfg = model.config
    assert model.num_parameters() == _closed_form(cfg.channels, cfg.layers, cfg.num_registers)


@pytest.mark.parametrize("name,samples,tokens,queries", [
    ("tiny", 3, 64, 128), ("small", 2, 48, 96), ("middle", 2, 32, 64), ("large", 1, 24, 32)])
def test_forward_backward_no_nans(name, samples, tokens, queries):
    model = build_flip_model(name, seed=1)
    gen = torch.Generator().manual_seed(2)
    batch = synthetic_batch(model.config.patch_sizes, [tokens] * samples, [queries] * samples, generator=gen)
    logits = model(batch)
    assert logits.shape == (samples * queries,) and logits.dtype == torch.float32
    loss = mask_loss(logits, batch.targets)
    loss.backward()
    assert torch.isfinite(loss)
    for pname, p in model.named_parameters():
        if pname.endswith("register_coordinates"):
            assert p.grad is None and not p.requires_grad  # dead reference parameter, frozen
            continue
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    iou = sampled_point_iou(logits, batch.targets, batch.query_counts)
    assert iou.shape == (samples,) and ((iou >= 0) & (iou <= 1)).all()


def test_seeded_builds_are_identical_and_leave_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_flip_tiny(seed=7), build_flip_tiny(seed=7)
    assert torch.rand(1) == before
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_sampled_point_iou_values():
    logits = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0])
    targets = torch.tensor([1, 1, 0, 1, 0, 0, 0, 0], dtype=torch.uint8)
    iou = sampled_point_iou(logits, targets, torch.tensor([3, 3, 2]))
    assert torch.allclose(iou, torch.tensor([1 / 3, 1.0, 0.0]))  # empty union -> 0 like the reference
    with pytest.raises(ValueError, match="sums to"):
        sampled_point_iou(logits, targets, torch.tensor([3, 2, 2]))


def test_reference_json_config(tmp_path):
    ref = {"model_path": "flip-small", "model": {
        "max_patch_size": 16, "min_patch_size": 1, "bottleneck_selection": "max",
        "encoder": {"channels": 128, "layers": 5, "alpha": 0.1, "kq_expansion": 1, "v_expansion": 1,
                    "mlp_expansion": 4, "num_registers": 8, "head_size": 32}}}
    path = tmp_path / "flip-small.json"
    path.write_text(json.dumps(ref))
    cfg = load_flip_config_json(path)
    assert cfg == FLIP_MODELS["small"]().config
    del ref["model"]["encoder"]["layers"]
    path.write_text(json.dumps(ref))
    with pytest.raises(ValueError, match="layers"):
        load_flip_config_json(path)


@pytest.mark.parametrize("kwargs,match", [
    (dict(channels=60), "divisible by 16"), (dict(layers=0), "layers"), (dict(max_patch_size=32), "patch_size"),
    (dict(alpha=float("nan")), "alpha"), (dict(head_size=10), "divisible by num_heads")])
def test_config_validation(kwargs, match):
    base = dict(name="x", channels=64, layers=2, head_size=16)
    with pytest.raises(ValueError, match=match):
        FlipConfig(**{**base, **kwargs})


def test_unknown_model_name():
    with pytest.raises(ValueError, match="valid"):
        build_flip_model("huge")


@pytest.fixture(scope="module")
def tiny():
    return build_flip_tiny(seed=0)


def _batch(model, seed=0):
    return synthetic_batch(model.config.patch_sizes, [20, 30], [10, 12], generator=torch.Generator().manual_seed(seed))


def _bad(field, fn):
    return pytest.param(fn, id=field)


@pytest.mark.parametrize("mutate,match", [
    (lambda b: b.position.__setitem__((0, 2), 0.0), "non-positive sigma"),
    (lambda b: b.position.__setitem__((1, 3), -1.0), "non-positive sigma"),
    (lambda b: b.position.__setitem__((0, 0), float("nan")), "non-finite"),
    (lambda b: b.patch_coords[2].__setitem__((0, 0), float("inf")), "non-finite"),
    (lambda b: b.query_coords.__setitem__((0, 1), float("nan")), "non-finite"),
    (lambda b: setattr(b, "patches", []), "empty"),
    (lambda b: setattr(b, "query_counts", torch.tensor([10, 13])), "mismatched"),
    (lambda b: setattr(b, "patches", [p.float() for p in b.patches]), "uint8"),
    (lambda b: setattr(b, "position", b.position.double()), "float32"),
    (lambda b: setattr(b, "patch_counts", b.patch_counts.int()), "int64"),
    (lambda b: setattr(b, "query_coords", b.query_coords[:, :1]), r"\(Q, 2\)"),
    (lambda b: setattr(b, "patches", b.patches[:4]), "resolutions"),
    (lambda b: setattr(b, "targets", b.targets[:-1]), "targets"),
])
def test_bad_batches_raise_value_error(tiny, mutate, match):
    batch = _batch(tiny)
    mutate(batch)
    with pytest.raises(ValueError, match=match):
        tiny(batch)


def test_mismatched_patch_counts(tiny):
    batch = _batch(tiny)
    counts = batch.patch_counts.clone()
    counts[0, 2] += 1
    batch.patch_counts = counts
    with pytest.raises(ValueError, match=r"mismatched sequence lengths"):
        tiny(batch)


def test_sample_without_patches(tiny):
    batch = _batch(tiny)
    counts = batch.patch_counts.clone()
    moved = counts[0].clone()
    counts[0] = 0
    counts[1] += moved
    batch.patch_counts = counts
    with pytest.raises(ValueError, match=r"samples \[0\] have no patches"):
        tiny(batch)


def test_wrong_patch_size(tiny):
    batch = _batch(tiny)
    batch.patches[3] = torch.zeros(batch.patches[3].shape[0], 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"patches\[3\] must be \(n, 3, 8, 8\)"):
        tiny(batch)


def test_gradient_checkpointing_matches(tiny):
    batch = _batch(tiny, seed=3)
    ref = tiny(batch)
    tiny.gradient_checkpointing = True
    try:
        tiny.train()
        out = tiny(batch)
        mask_loss(out, batch.targets).backward()
    finally:
        tiny.gradient_checkpointing = False
        tiny.zero_grad()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
