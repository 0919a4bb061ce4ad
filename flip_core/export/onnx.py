"""ONNX export of a FLIP model as two graphs with a key/value cache between them (spec 7), plus a parity check.

**Encoder** (``flip-encoder.onnx``), one sample:

- inputs ``patches_p{p}`` (n_p, 3, p, p) float32 in [0, 1] (uint8 / 255) and ``coords_p{p}`` (n_p, 2) float32
  frame M for every patch size p, and ``position`` (1, 6) float32 frame M; axis 0 of patches/coords is dynamic
  (a resolution may have 0 patches);
- outputs ``k_cached`` (1, H, N, D) and ``v_cached`` (1, H, N, Dv), ``N = R + sum n_p`` (axis 2 dynamic).

**Predictor** (``flip-predictor.onnx``): inputs ``position`` (1, 6), ``mask_coordinates`` (n, 2) frame M (axis 0
dynamic), ``k_cached``, ``v_cached``; output ``mask_logits`` (n,).

Both wrap the model's own sub-modules (no weight copies); attention is the plain single-sample softmax path
(``varlen_attention(..., layout=None)``), registers come first (token order does not matter, spec 4.7). Export uses
the TorchScript-based exporter (``dynamo=False``): torch 2.13's default dynamo exporter fails on these graphs
with a data-dependent-shape error (spec 7, 9.12). Patch sampling, query grids and thresholding stay outside.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flip_core.model import Flip, FlipBatch
from flip_core.model.embedding import relative_embedding
from flip_core.model.synthetic import synthetic_batch

__all__ = ["EncoderGraph", "PredictorGraph", "ExportResult", "export_onnx", "onnx_parity",
           "ENCODER_FILE", "PREDICTOR_FILE"]

logger = logging.getLogger(__name__)

ENCODER_FILE = "flip-encoder.onnx"
PREDICTOR_FILE = "flip-predictor.onnx"


class EncoderGraph(nn.Module):
    """Patches of one sample -> mask-head key/value cache. Inputs: R patch tensors, R coord tensors, position."""

    def __init__(self, model: Flip):
        super().__init__()
        self.model = model
        self.num_res = len(model.config.patch_sizes)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.model.encoder
        sp = enc.sparsify
        patches, coords, position = inputs[:self.num_res], inputs[self.num_res:2 * self.num_res], inputs[-1]
        x = torch.cat([sp.registers] + [emb(p) for emb, p in zip(sp.patch_embeddings, patches)])
        e = torch.cat([sp.register_embeddings] + [relative_embedding(position, c) for c in coords])
        for layer in enc.layers:
            x = layer(x, e, None)
        head = enc.mask_extractor
        x = x + head.preprocess(x)
        k, v = head.attention.keys_values(x, e)
        return k.unsqueeze(0), v.unsqueeze(0)


class PredictorGraph(nn.Module):
    """(position, query points, cached k/v) -> mask logits of one sample."""

    def __init__(self, model: Flip):
        super().__init__()
        self.model = model

    def forward(self, position, mask_coordinates, k_cached, v_cached) -> torch.Tensor:
        head = self.model.encoder.mask_extractor
        e = relative_embedding(position, mask_coordinates)
        y = head.attention.attend(e, k_cached[0], v_cached[0], None)
        y = y + head.postprocess(y)
        return head.to_mask(y).squeeze(-1)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """Paths written and the parity numbers (max/mean abs logit difference ONNX vs PyTorch, logit std)."""

    encoder: Path
    predictor: Path
    max_abs_diff: float
    mean_abs_diff: float
    logit_std: float
    num_tokens: int
    num_queries: int


def _check_cpu(model: Flip) -> None:
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"ONNX export and parity run on the CPU; the model is on {device} (call model.cpu())")


def _names(model: Flip) -> tuple[list[str], list[str]]:
    sizes = model.config.patch_sizes
    return [f"patches_p{p}" for p in sizes], [f"coords_p{p}" for p in sizes]


def _encoder_inputs(batch: FlipBatch) -> tuple[torch.Tensor, ...]:
    return (*[p.float() / 255 for p in batch.patches], *batch.patch_coords, batch.position)


def export_onnx(model: Flip, out_dir: str | Path, *, opset: int = 17) -> tuple[Path, Path]:
    """Write ``flip-encoder.onnx`` and ``flip-predictor.onnx`` into ``out_dir`` (created). Returns both paths.

    Raises:
        ValueError: the model is not on the CPU.
    """
    _check_cpu(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    p_names, c_names = _names(model)
    dummy = synthetic_batch(model.config.patch_sizes, [4 * len(p_names)], [16],
                            generator=torch.Generator().manual_seed(0), with_targets=False)
    for r in range(len(p_names)):  # 4 patches per resolution, like the reference's dummy input
        dummy.patch_counts[0, r] = dummy.patches[r].shape[0]
    enc_inputs = _encoder_inputs(dummy)
    dyn = {n: {0: f"num_{n}"} for n in p_names + c_names}
    dyn.update(k_cached={2: "num_tokens"}, v_cached={2: "num_tokens"})
    enc_path, pred_path = out / ENCODER_FILE, out / PREDICTOR_FILE
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation / tracer warnings
        torch.onnx.export(EncoderGraph(model), enc_inputs, str(enc_path), input_names=p_names + c_names + ["position"],
                          output_names=["k_cached", "v_cached"], dynamic_axes=dyn, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
        k, v = EncoderGraph(model)(*enc_inputs)
        pred_inputs = (dummy.position, dummy.query_coords, k, v)
        torch.onnx.export(PredictorGraph(model), pred_inputs, str(pred_path),
                          input_names=["position", "mask_coordinates", "k_cached", "v_cached"],
                          output_names=["mask_logits"],
                          dynamic_axes={"mask_coordinates": {0: "num_queries"}, "mask_logits": {0: "num_queries"},
                                        "k_cached": {2: "num_tokens"}, "v_cached": {2: "num_tokens"}},
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    logger.info("wrote %s and %s", enc_path, pred_path)
    return enc_path, pred_path


def onnx_parity(model: Flip, encoder_path: str | Path, predictor_path: str | Path, *, seed: int = 0,
                patch_counts: tuple[int, ...] = (3, 17, 150, 90, 12), num_queries: int = 4096) -> dict[str, float]:
    """Run both graphs in onnxruntime on a random sample and compare logits with ``model(batch)`` (dense attention).

    The sample's token counts differ from the export dummy's, which exercises the dynamic axes.

    Returns:
        ``{"max_abs_diff", "mean_abs_diff", "logit_std", "num_tokens", "num_queries"}``.
    """
    import onnxruntime as ort

    _check_cpu(model)
    sizes = model.config.patch_sizes
    counts = (list(patch_counts) + [8] * len(sizes))[:len(sizes)]
    gen = torch.Generator().manual_seed(seed)
    batch = synthetic_batch(sizes, [sum(counts)], [num_queries], generator=gen, with_targets=False)
    batch.patches = [torch.randint(0, 256, (n, 3, p, p), generator=gen, dtype=torch.uint8)
                     for n, p in zip(counts, sizes)]
    mu, sig = batch.position[:, :2], batch.position[:, 2:4]
    batch.patch_coords = [(mu + 2 * sig * torch.randn(n, 2, generator=gen)).float() for n in counts]
    batch.patch_counts = torch.tensor([counts], dtype=torch.int64)
    backend = model.attention
    model.attention = "dense"
    try:
        with torch.no_grad():
            ref = model.eval()(batch).numpy()
    finally:
        model.attention = backend
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    enc = ort.InferenceSession(str(encoder_path), opts, providers=["CPUExecutionProvider"])
    pred = ort.InferenceSession(str(predictor_path), opts, providers=["CPUExecutionProvider"])
    p_names, c_names = _names(model)
    feeds = {n: t.numpy() for n, t in zip(p_names + c_names + ["position"], _encoder_inputs(batch))}
    k, v = enc.run(["k_cached", "v_cached"], feeds)
    logits = pred.run(["mask_logits"], {"position": feeds["position"], "mask_coordinates": batch.query_coords.numpy(),
                                        "k_cached": k, "v_cached": v})[0]
    diff = np.abs(logits.astype(np.float64) - ref.astype(np.float64))
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()), "logit_std": float(ref.std()),
            "num_tokens": int(k.shape[2]), "num_queries": int(logits.shape[0])}
