"""Ranger: RAdam with decoupled weight decay wrapped in Lookahead, as one ``torch.optim.Optimizer``.

Behaviour follows the reference optimizer described in flip-spec §5.2 (``utils/optimizers.py:Ranger``):

* RAdam (Liu et al. 2019) with ``betas=(0.9, 0.999)``, ``eps=1e-16`` and ``degenerated_to_sgd=False``: while the
  length of the approximated simple moving average ``rho_t < 5`` the parameters are **not** updated (with
  beta2 = 0.999 these are steps 1-5); the moment estimates still advance.
* Decoupled weight decay ``p <- p - wd * lr * p``, applied to every parameter, only on steps that update.
* Lookahead (Zhang et al. 2019) with ``k=6``, ``alpha=0.5``: after every k-th optimizer step (6, 12, ...)
  ``slow <- slow + alpha * (fast - slow)`` and ``fast <- slow``. Slow weights start at the parameter values seen
  by the first step.

Implemented as a single optimizer (state per parameter, no wrapped inner optimizer) so that DeepSpeed ZeRO 1/2 can
hand it flat fp32 partitions and checkpoint its ``state_dict`` like any torch optimizer. The update uses the
non-deprecated ``add_(tensor, alpha=...)`` overloads; the arithmetic is the reference's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

__all__ = ["Ranger", "radam_step_size"]


def radam_step_size(step: int, beta1: float, beta2: float) -> float | None:
    """RAdam's rectified step size for 1-based ``step``, or None while ``rho_t < 5`` (no update).

    Formula (RAdam paper, Alg. 2): ``rho_inf = 2/(1-b2) - 1``, ``rho_t = rho_inf - 2 t b2^t / (1 - b2^t)``,
    ``r_t = sqrt((1-b2^t) (rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t)) / (1 - b1^t)``.
    """
    beta2_t = beta2**step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2_t / (1.0 - beta2_t)
    if rho_t < 5.0:
        return None
    ratio = (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)
    return math.sqrt((1.0 - beta2_t) * ratio) / (1.0 - beta1**step)


class Ranger(torch.optim.Optimizer):
    """RAdam + decoupled weight decay + Lookahead (flip-spec §5.2). Defaults are the reference's.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (reference: 6e-4 for every model size).
        weight_decay: decoupled weight decay coefficient (reference: 6e-4).
        betas: Adam moment decays.
        eps: denominator epsilon (reference: 1e-16).
        k: Lookahead synchronisation period in optimizer steps.
        alpha: Lookahead interpolation factor.

    Raises:
        ValueError: for a negative lr/weight decay/eps, betas outside [0, 1), k < 1 or alpha outside (0, 1].
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 6e-4,
        weight_decay: float = 6e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-16,
        k: int = 6,
        alpha: float = 0.5,
    ) -> None:
        if lr < 0 or weight_decay < 0 or eps < 0:
            raise ValueError(f"lr, weight_decay and eps must be >= 0, got {lr}, {weight_decay}, {eps}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if k < 1 or not 0.0 < alpha <= 1.0:
            raise ValueError(f"Lookahead needs k >= 1 and 0 < alpha <= 1, got k={k}, alpha={alpha}")
        defaults = dict(lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, k=k, alpha=alpha)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One RAdam step on every parameter with a gradient, then Lookahead every ``k`` steps."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update_param(p, group)
        return loss

    def _update_param(self, p: torch.Tensor, group: dict) -> None:
        if p.grad.is_sparse:
            raise ValueError("Ranger does not support sparse gradients")
        dtype = torch.promote_types(p.dtype, torch.float32)  # bf16/fp16 params: fp32 math and state
        grad = p.grad.to(dtype)
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, dtype=dtype)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=dtype)
            state["slow"] = p.detach().to(dtype).clone()
        beta1, beta2 = group["betas"]
        state["step"] += 1
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
        step_size = radam_step_size(state["step"], beta1, beta2)
        if step_size is not None:
            p32 = p.to(dtype)
            if group["weight_decay"] != 0:
                p32.add_(p32, alpha=-group["weight_decay"] * group["lr"])
            denom = exp_avg_sq.sqrt().add_(group["eps"])
            p32.addcdiv_(exp_avg, denom, value=-step_size * group["lr"])
            if p32.data_ptr() != p.data_ptr():
                p.copy_(p32)
        if state["step"] % group["k"] == 0:
            slow = state["slow"]
            slow.add_(p.to(dtype) - slow, alpha=group["alpha"])
            p.copy_(slow)
