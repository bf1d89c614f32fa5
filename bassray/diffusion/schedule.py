"""Cosine noise schedule and the v-objective (Salimans & Ho 2022), for continuous t in [0, 1].

z_t = alpha_t x0 + sigma_t eps,  alpha_t = cos(pi t / 2),  sigma_t = sin(pi t / 2)
v   = alpha_t eps - sigma_t x0;   x0 = alpha_t z_t - sigma_t v;   eps = sigma_t z_t + alpha_t v
"""
from __future__ import annotations

import math
from typing import Callable

import torch


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    angle = t * (math.pi / 2)
    # cos(pi/2) is -4e-8 in float32: clamp so t = 1 is exactly pure noise.
    return torch.cos(angle).clamp(min=0.0), torch.sin(angle)


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
           generator: torch.Generator | None = None, cond_dropout: float = 0.15,
           condition: str | torch.Tensor | None = None,
           cond_noise: float = 0.0, channel_weight: torch.Tensor | None = None,
           self_condition: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE between the model's v and the true v at t ~ U(0, 1) (``channel_weight`` [Dy]: a weight
    per target channel, e.g. to stress the channels that carry the bass's pitch).

    ``target`` [B, Dy, L] and ``cond`` [B, Dx, L] are normalised latents. In training
    (``condition=None``) a ``cond_dropout`` fraction of examples get the null condition (zeros), so
    one model is conditional and unconditional. For evaluation, ``condition`` forces the condition
    for every example: ``"true"`` (``cond`` as given), ``"null"`` (zeros) or a tensor shaped like
    ``cond`` (e.g. a mismatched mix); t and noise are drawn the same way in every mode, so with the
    same generator seed the modes see identical noise and are comparable.

    ``cond_noise`` (training only) adds Gaussian noise of that std to the kept conditions
    (conditioning augmentation, Ho et al. 2021): on a small collection it stops the network from
    recognising a training song by the fine detail of its mix and reciting that song's bass.

    ``self_condition`` (training a model built with ``unet.self_condition``): the fraction of batches
    in which the model first estimates x0 without gradient and then sees that estimate as an input,
    as it will see its previous step's estimate when sampling (Chen et al. 2022 use 0.5).
    """
    per_example, null_fraction = v_loss_per_example(model, target, cond, generator, cond_dropout,
                                                    condition, cond_noise, channel_weight=channel_weight,
                                                    self_condition=self_condition)
    loss = per_example.mean()
    return loss, {"loss": float(loss.detach()), "null_fraction": null_fraction}


def v_loss_per_example(model: Callable, target: torch.Tensor, cond: torch.Tensor,
                       generator: torch.Generator | None = None, cond_dropout: float = 0.15,
                       condition: str | torch.Tensor | None = None,
                       cond_noise: float = 0.0, t: float | None = None,
                       channel_weight: torch.Tensor | None = None,
                       self_condition: float = 0.0) -> tuple[torch.Tensor, float]:
    """:func:`v_loss` before the batch mean: ([B] squared errors, null-condition fraction).
    ``t`` fixes the noise level for every example (evaluation by noise level) instead of U(0, 1)."""
    b, device = target.shape[0], target.device
    if t is None:
        t = torch.rand(b, generator=generator, device=device)
    elif not 0.0 <= t <= 1.0:
        raise ValueError(f"t is a time in [0, 1], got {t}")
    else:
        t = torch.full((b,), float(t), device=device)
    eps = torch.randn(target.shape, generator=generator, device=device, dtype=target.dtype)
    a, s = alpha_sigma(_bcast(t, target))
    z_t = a * target + s * eps
    cond, null_fraction = _apply_condition(cond, condition, cond_dropout, generator, cond_noise)
    v = a * eps - s * target
    if not 0.0 <= self_condition <= 1.0:
        raise ValueError(f"self_condition is a fraction of batches in [0, 1], got {self_condition}")
    if self_condition and float(torch.rand(1, generator=generator, device=device)) < self_condition:
        with torch.no_grad():
            x0_self = a * z_t - s * model(z_t, t, cond).float()
        pred = model(z_t, t, cond, x0_self.to(z_t.dtype))
    else:
        pred = model(z_t, t, cond)
    error = (pred.float() - v.float()).square()
    if channel_weight is not None:
        error = error * channel_weight.to(error.device, error.dtype)[:, None]
    return error.flatten(1).mean(1), null_fraction


def _apply_condition(cond: torch.Tensor, condition: str | torch.Tensor | None, cond_dropout: float,
                     generator: torch.Generator | None, cond_noise: float = 0.0) -> tuple[torch.Tensor, float]:
    """The condition the model sees, and the fraction of examples that got the null condition."""
    if isinstance(condition, torch.Tensor):
        if condition.shape != cond.shape:
            raise ValueError(f"a forced condition must be shaped like the mix latent {tuple(cond.shape)}, "
                             f"got {tuple(condition.shape)}")
        return condition.to(cond.device, cond.dtype), 0.0
    if condition == "true":
        return cond, 0.0
    if condition == "null":
        return torch.zeros_like(cond), 1.0
    if condition is not None:
        raise ValueError(f"condition must be None (training), 'true', 'null' or a tensor, not {condition!r}")
    if not 0.0 <= cond_dropout <= 1.0:
        raise ValueError(f"cond_dropout is a fraction in [0, 1], got {cond_dropout}")
    if cond_noise < 0.0:
        raise ValueError(f"cond_noise is a standard deviation >= 0, got {cond_noise}")
    keep = torch.rand(cond.shape[0], generator=generator, device=cond.device) >= cond_dropout
    if cond_noise:
        cond = cond + cond_noise * torch.randn(cond.shape, generator=generator, device=cond.device,
                                               dtype=cond.dtype)
    return cond * _bcast(keep.to(cond.dtype), cond), float((~keep).float().mean())
