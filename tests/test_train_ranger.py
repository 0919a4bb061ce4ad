"""Ranger against a hand computation in plain Python floats (flip-spec §5.2)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from flip_core.train.ranger import Ranger, radam_step_size


def _hand_ranger(p0: float, grads: list[float], lr=6e-4, wd=6e-4, b1=0.9, b2=0.999, eps=1e-16, k=6, alpha=0.5):
    p, slow, m, v, out = p0, p0, 0.0, 0.0, []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho >= 5:
            r = math.sqrt((1 - b2**t) * (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            r /= 1 - b1**t
            p = p - wd * lr * p
            p = p - r * lr * m / (math.sqrt(v) + eps)
        if t % k == 0:
            slow = slow + alpha * (p - slow)
            p = slow
        out.append(p)
    return out


def test_no_update_in_first_five_steps_then_lookahead_every_six():
    grads = [0.5, -1.0, 2.0, 0.25, 1.5, -0.75, 1.0, 0.3, -0.2, 0.9, 1.1, -1.3, 0.4, 0.6]
    w = torch.nn.Parameter(torch.tensor([1.5], dtype=torch.float64))
    opt = Ranger([w])
    seen = []
    for g in grads:
        w.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        seen.append(float(w.detach()))
    assert seen[:5] == [1.5] * 5  # RAdam rho_t < 5: no update, no weight decay
    expected = _hand_ranger(1.5, grads)
    assert seen == pytest.approx(expected, rel=1e-6, abs=1e-12)
    # step 6 is the first update and the first Lookahead sync: exactly half of the fast step is kept
    fast6 = _hand_ranger(1.5, grads[:6], k=10**9)[-1]
    assert seen[5] == pytest.approx(1.5 + 0.5 * (fast6 - 1.5), rel=1e-9)


def test_step_size_and_validation():
    assert [radam_step_size(t, 0.9, 0.999) is None for t in range(1, 7)] == [True] * 5 + [False]
    with pytest.raises(ValueError, match="betas"):
        Ranger([torch.nn.Parameter(torch.zeros(1))], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Lookahead"):
        Ranger([torch.nn.Parameter(torch.zeros(1))], k=0)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    clone = torch.nn.Linear(4, 2)
    opt = Ranger(model.parameters())
    x = torch.randn(16, 4)
    for _ in range(8):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    clone.load_state_dict(model.state_dict())
    opt2 = Ranger(clone.parameters())
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as after torch.save/load
    for m, o in ((model, opt), (clone, opt2)):
        for _ in range(5):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)
