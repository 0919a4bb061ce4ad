"""Dynamic mask-point sampling (spec 5.4), group IoU slicing, CLI parsing and config validation."""

from __future__ import annotations

import math

import pytest
import torch

from flip_core.cli import main as flip_main
from flip_core.train.cli import config_from_args, parse_data_arg
from flip_core.train.config import DataConfig, TrainConfig
from flip_core.train.dynamic import MaskGroupSampling, group_ious


def _data(**kw) -> DataConfig:
    return DataConfig(manifests=("x",), **kw)


def test_counts_follow_difficulty_with_floor_and_sum():
    dyn = MaskGroupSampling(_data())
    assert dyn.counts == (296, 292, 292, 292, 292, 292, 292)
    dyn.update([0.2, 0.5, 0.9, 1.0, 1.0, 1.0, 1.0])  # first step: EMA = IoU
    d = [0.8, 0.5, 0.1, 0, 0, 0, 0]
    want = [4 + int(2020 * x / 1.4) for x in d]
    want[0] += 2048 - sum(want)
    assert dyn.counts == tuple(want) and sum(dyn.counts) == 2048 and min(dyn.counts) == 4
    ema0 = dyn.ema[0]
    dyn.update([1.0] * 7)
    decay = math.exp(-1 / 1000)
    assert dyn.ema[0] == pytest.approx(decay * ema0 + (1 - decay))
    state = dyn.state_dict()
    other = MaskGroupSampling(_data())
    other.load_state_dict(state)
    assert other.counts == dyn.counts and other.ema == dyn.ema


def test_disabled_keeps_default_counts_and_all_perfect_keeps_counts():
    dyn = MaskGroupSampling(_data(dynamic_sampling=False))
    dyn.update([0.1] * 7)
    assert dyn.counts == (296, 292, 292, 292, 292, 292, 292)
    dyn = MaskGroupSampling(_data())
    dyn.update([1.0] * 7)
    assert dyn.counts == (296, 292, 292, 292, 292, 292, 292)


def test_group_ious_slice_each_sample():
    counts = (2, 2, 0, 2, 2, 2, 2)
    targets = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0] * 2, dtype=torch.uint8)
    logits = torch.where(targets.bool(), 1.0, -1.0)
    logits[0] = -1.0  # sample 0, group 0: prediction misses its only inside point
    ious = group_ious(logits, targets, counts)
    assert ious[0] == pytest.approx(0.5) and ious[1] == 1.0 and ious[2] == 1.0


def test_cli_parsing_and_bad_values(tmp_path, capsys):
    assert parse_data_arg("out/coco:2.5") == ("out/coco", 2.5)
    assert parse_data_arg("out/coco") == ("out/coco", None)
    assert parse_data_arg("C:data") == ("C:data", None)
    from flip_core.cli import build_parser

    argv = ["train", "--model", "tiny", "--data", "a:3", "b", "--out", str(tmp_path / "r"), "--zero", "2"]
    cfg = config_from_args(build_parser(argv).parse_args(argv))
    assert cfg.data.weights == (3.0, None) and cfg.deepspeed_config.endswith("zero2.json")
    with pytest.raises(SystemExit):
        flip_main(["train", "--model", "huge", "--data", "a", "--out", str(tmp_path)])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    rc = flip_main(["train", "--model", "tiny", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    assert rc == 2 and "index.json" in capsys.readouterr().out


def test_config_validation_and_round_trip():
    cfg = TrainConfig(model="tiny", data=_data(weights=(2.0,)), run_dir="r", steps=5)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="1 weights for 2 manifests"):
        DataConfig(manifests=("a", "b"), weights=(1.0,))
    with pytest.raises(ValueError, match="min_samples_per_group 400"):
        _data(min_samples_per_group=400)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TrainConfig(model="tiny", data=_data(), run_dir="r", steps=0)
