"""DeepSpeed engine on CPU (gloo, world of one) with the Ranger client optimizer; config loading errors."""

from __future__ import annotations

import json

import pytest
import torch

from flip_core.train.config import DEEPSPEED_CONFIG_DIR, DataConfig, TrainConfig
from flip_core.train.engine import build_engine, load_deepspeed_config, resolve_deepspeed_config


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(model="tiny", data=DataConfig(manifests=("unused",), images_per_batch=2), run_dir="x", **kw)


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_engine_trains_toy_model_with_ranger(stage):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    engine = build_engine(model, _cfg(), load_deepspeed_config(DEEPSPEED_CONFIG_DIR / f"zero{stage}.json"))
    assert engine.zero_optimization_stage() == stage
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(32, 8)
    losses = []
    for _ in range(12):
        loss = engine(x).square().mean()
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
        if len(losses) == 5:  # RAdam: no update in the first 5 steps, even through ZeRO
            assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert losses[-1] < losses[0]


def test_resolve_auto_values_and_conflicts():
    config = load_deepspeed_config(DEEPSPEED_CONFIG_DIR / "zero2.json")
    out = resolve_deepspeed_config(config, _cfg(gradient_accumulation_steps=3), world_size=2)
    assert out["train_micro_batch_size_per_gpu"] == 2 and out["gradient_accumulation_steps"] == 3
    assert out["bf16"]["enabled"] is False and out["gradient_clipping"] == 0.0  # CPU: fp32, clipping off
    with pytest.raises(ValueError, match="train_micro_batch_size_per_gpu=5"):
        resolve_deepspeed_config({**config, "train_micro_batch_size_per_gpu": 5}, _cfg(), world_size=1)


def test_bad_deepspeed_config_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"zero_optimization": {"stage": 2,}')
    with pytest.raises(ValueError, match=r"bad\.json is not valid JSON"):
        load_deepspeed_config(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_deepspeed_config(tmp_path / "missing.json")
    bad.write_text(json.dumps({"zero_optimization": {"stage": 7}}))
    with pytest.raises(ValueError, match="stage must be 0-3"):
        load_deepspeed_config(bad)


def test_unknown_model_size():
    with pytest.raises(ValueError, match="unknown model size 'huge'; valid: tiny, small, middle, large"):
        TrainConfig(model="huge", data=DataConfig(manifests=("x",)), run_dir="x")


def test_deepspeed_optimizer_from_config_replaces_ranger():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    config = {**load_deepspeed_config(DEEPSPEED_CONFIG_DIR / "zero0.json"),
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}}}
    engine = build_engine(model, _cfg(), config)
    assert type(engine.optimizer).__name__ == "AdamW"
    before = model.weight.detach().clone()
    loss = engine(torch.randn(8, 4)).square().mean()
    engine.backward(loss)
    engine.step()
    assert not torch.equal(before, model.weight)  # AdamW updates from step 1 (Ranger would not)
