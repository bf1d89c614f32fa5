"""Cosine noise schedule and the v-objective (Salimans & Ho 2022), for continuous t in [0, 1].

z_t = alpha_t x0 + sigma_t eps,  alpha_t = cos(pi t / 2),  sigma_t = sin(pi t / 2)
v   = alpha_t eps - sigma_t x0;   x0 = alpha_t z_t - sigma_t v;   eps = sigma_t z_t + alpha_t v
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    angle = t * (math.pi / 2)
    return torch.cos(angle), torch.sin(angle)


def _bcast(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] or scalar -> broadcastable against [B, D, L]."""
    return x.reshape(-1, *([1] * (like.dim() - 1))) if x.dim() else x


def v_target(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    a, s = alpha_sigma(_bcast(t, x0))
    return a * eps - s * x0


def predict_x0_eps(z_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, s = alpha_sigma(_bcast(t, z_t))
    return a * z_t - s * v, s * z_t + a * v


def v_loss(model: Callable, target: torch.Tensor, cond: torch.Tensor,
           generator: torch.Generator | None = None, cond_dropout: float = 0.15
           ) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE between the model's v and the true v at t ~ U(0, 1). A ``cond_dropout`` fraction of
    examples get the null condition (zeros), so one model is conditional and unconditional.
    ``target`` [B, Dy, L] and ``cond`` [B, Dx, L] are normalised latents."""
    b, device = target.shape[0], target.device
    t = torch.rand(b, generator=generator, device=device)
    eps = torch.randn(target.shape, generator=generator, device=device, dtype=target.dtype)
    a, s = alpha_sigma(_bcast(t, target))
    z_t = a * target + s * eps
    if cond_dropout > 0:
        keep = torch.rand(b, generator=generator, device=device) >= cond_dropout
        cond = cond * _bcast(keep.to(cond.dtype), cond)
    v = a * eps - s * target
    pred = model(z_t, t, cond)
    loss = F.mse_loss(pred.float(), v.float())
    return loss, {"loss": float(loss.detach())}
