"""Every packed attention back-end equals the dense per-sample reference to 1e-5 (fp32), forward and gradients."""

from __future__ import annotations

import warnings

import pytest
import torch

from flip_core.model import SeqLayout, mask_loss, varlen_attention
from flip_core.model.synthetic import synthetic_batch
from tests.common.models import sharpened_tiny

FAST = ["split", "block_mask", "padded"]
TOL = dict(rtol=0, atol=1e-5)


def _qkv(q_lens, kv_lens, heads=4, dim=16, dv=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(heads, sum(q_lens), dim, generator=g, requires_grad=True)
    k = torch.randn(heads, sum(kv_lens), dim, generator=g, requires_grad=True)
    v = torch.randn(heads, sum(kv_lens), dv, generator=g, requires_grad=True)
    return q, k, v


def _run(backend, q_lens, kv_lens, tensors):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in tensors)
    out = varlen_attention(q, k, v, SeqLayout(q_lens, kv_lens, torch.device("cpu"), backend))
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    (out * weights).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


CASES = [
    ([37, 5, 120, 64], [37, 5, 120, 64]),      # self-attention, uneven lengths
    ([300, 0, 17], [40, 9, 200]),              # cross-attention, a sample without queries
    ([50], [80]),                              # single sample
]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("q_lens,kv_lens", CASES)
def test_backend_matches_dense(backend, q_lens, kv_lens):
    tensors = _qkv(q_lens, kv_lens)
    ref = _run("dense", q_lens, kv_lens, tensors)
    got = _run(backend, q_lens, kv_lens, tensors)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("q_lens,kv_lens", CASES)
def test_flex_forward_matches_dense(q_lens, kv_lens):
    # torch 2.13 has no FlexAttention backward on CPU; forward only here.
    q, k, v = (t.detach() for t in _qkv(q_lens, kv_lens))
    layout = SeqLayout(q_lens, kv_lens, torch.device("cpu"), "dense")
    ref = varlen_attention(q, k, v, layout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "flex_attention called without torch.compile()"
        got = varlen_attention(q, k, v, SeqLayout(q_lens, kv_lens, torch.device("cpu"), "flex"))
    torch.testing.assert_close(got, ref, **TOL)


def test_samples_do_not_see_each_other():
    q_lens = kv_lens = [10, 12]
    q, k, v = (t.detach() for t in _qkv(q_lens, kv_lens))
    out = varlen_attention(q, k, v, SeqLayout(q_lens, kv_lens, torch.device("cpu"), "split"))
    v2 = v.clone()
    v2[:, 10:] += 100.0  # change only sample 1's values
    out2 = varlen_attention(q, k, v2, SeqLayout(q_lens, kv_lens, torch.device("cpu"), "split"))
    torch.testing.assert_close(out[:, :10], out2[:, :10], rtol=0, atol=0)


def test_layout_errors():
    with pytest.raises(ValueError, match="unknown attention backend"):
        SeqLayout([1], [1], torch.device("cpu"), "xformers")
    with pytest.raises(ValueError, match="kv_lens must be >= 1"):
        SeqLayout([1], [0], torch.device("cpu"))
    q, k, v = (t.detach() for t in _qkv([4], [4]))
    with pytest.raises(ValueError, match="do not match layout"):
        varlen_attention(q, k, v, SeqLayout([5], [4], torch.device("cpu")))


@pytest.mark.parametrize("backend", FAST)
def test_full_model_backends_match_dense(backend):
    model = sharpened_tiny(seed=4)
    batch = synthetic_batch(model.config.patch_sizes, [40, 7, 90], [33, 64, 20],
                            generator=torch.Generator().manual_seed(5))
    results = {}
    for name in ("dense", backend):
        model.attention = name
        model.zero_grad()
        logits = model(batch)
        mask_loss(logits, batch.targets).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[name] = (logits.detach(), grads)
    ref_logits, ref_grads = results["dense"]
    logits, grads = results[backend]
    assert ref_logits.std() > 0.1
    torch.testing.assert_close(logits, ref_logits, **TOL)
    assert grads.keys() == ref_grads.keys()
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], **TOL, msg=n)
