"""ONNX export: encoder/predictor graphs with dynamic axes, onnxruntime parity, and the ``flip export-onnx`` command."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from flip_core.cli import main
from flip_core.export import export_onnx, onnx_parity
from flip_core.model import build_flip_tiny, save_flip_checkpoint
from tests.common.models import sharpened_tiny


@pytest.fixture(scope="module")
def sharpened():
    return sharpened_tiny(seed=11).eval()


@pytest.fixture(scope="module")
def exported(sharpened, tmp_path_factory):
    return export_onnx(sharpened, tmp_path_factory.mktemp("onnx"))


def test_graph_signatures(exported):
    enc, pred = (onnx.load(str(p)) for p in exported)
    assert enc.opset_import[0].version == 17
    enc_inputs = [i.name for i in enc.graph.input]
    assert enc_inputs == [f"patches_p{p}" for p in (1, 2, 4, 8, 16)] + [f"coords_p{p}" for p in (1, 2, 4, 8, 16)] \
        + ["position"]
    assert [o.name for o in enc.graph.output] == ["k_cached", "v_cached"]
    assert enc.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic patch axis
    assert [i.name for i in pred.graph.input] == ["position", "mask_coordinates", "k_cached", "v_cached"]
    assert pred.graph.output[0].type.tensor_type.shape.dim[0].dim_param  # dynamic query axis


@pytest.mark.parametrize("counts", [(3, 17, 150, 90, 12), (0, 5, 30, 0, 4)])
def test_onnxruntime_parity(sharpened, exported, counts):
    import numpy as np
    import onnxruntime as ort

    parity = onnx_parity(sharpened, *exported, patch_counts=counts, num_queries=3000, seed=3)
    assert parity["num_tokens"] == sum(counts) + 8 and parity["num_queries"] == 3000
    assert parity["logit_std"] > 1e-3
    assert parity["max_abs_diff"] <= 1e-4
    enc = ort.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros([n] + [d for d in i.shape[1:]], np.float32)
             for i, n in zip(enc.get_inputs(), [*counts, *counts, 1])}
    k, v = enc.run(None, feeds)
    assert k.shape == (1, 4, sum(counts) + 8, 16) and v.shape == (1, 4, sum(counts) + 8, 16)


def test_cli_export_reference_layout_checkpoint(tmp_path, capsys, sharpened):
    """The command exports an authors'-layout checkpoint (no metadata, size inferred) and prints the parity."""
    ckpt = tmp_path / "ref.ckpt"
    torch.save({"state_dict": {"net." + k: v for k, v in sharpened.state_dict().items()}}, ckpt)
    rc = main(["export-onnx", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "--parity-queries", "500"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "max abs logit diff" in out and "OK" in out
    summary = json.loads((tmp_path / "out" / "export.json").read_text())
    assert summary["parity_ok"] and summary["model"]["name"] == "tiny" and summary["parity"]["max_abs_diff"] <= 1e-4
    assert (tmp_path / "out" / "flip-encoder.onnx").is_file() and (tmp_path / "out" / "flip-predictor.onnx").is_file()


def test_cli_fails_when_parity_tolerance_not_met(tmp_path, capsys):
    ckpt = save_flip_checkpoint(build_flip_tiny(seed=0), tmp_path / "t.ckpt")
    rc = main(["export-onnx", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--tolerance", "0",
               "--parity-queries", "300"])
    assert rc == 1 and "FAIL" in capsys.readouterr().out
