"""FLOPs of one training step of either stage, counted by torch's FlopCounterMode over a real step
(forward and backward as executed: matmuls and convolutions; FFTs and elementwise ops are not
counted), for model FLOP utilisation. The step runs on copies of the modules, so their weights,
gradients and optimizer state are untouched. Plain PyTorch; no Ray, DeepSpeed or MLflow.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def counted_flops(fn: Callable[[], object]) -> int:
    """FLOPs torch counts while ``fn`` runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def diffusion_step_flops(unet: torch.nn.Module, target: torch.Tensor, cond: torch.Tensor,
                         self_condition: float = 0.0) -> int:
    """One v-loss forward and backward of the U-Net on ``target [B, Dy, L]`` given ``cond [B, Dx, L]``;
    with ``self_condition`` (the share of steps that run a first forward pass without gradient,
    bassray/diffusion/schedule.py), that pass's FLOPs weighted by the share: the mean step."""
    from bassray.diffusion.schedule import v_loss
    model = copy.deepcopy(unet).train()

    def step() -> None:
        loss, _ = v_loss(model, target, cond, cond_dropout=0.0, cond_noise=0.0)
        loss.backward()
    flops = counted_flops(step)
    if self_condition:
        with torch.no_grad():
            flops += round(self_condition * counted_flops(lambda: model(target, torch.rand(target.shape[0], device=target.device), cond)))
    return flops


def autoencoder_step_flops(autoencoder: torch.nn.Module, critics: torch.nn.Module, wav: torch.Tensor,
                           train_cfg, adversarial: bool = True) -> int:
    """One generator step (the autoencoder's forward and backward, through the frozen critics when
    ``adversarial``) plus one critic step on ``[real; fake]``, on ``wav [B, C, T]``."""
    from bassray.train.autoencoder_losses import critic_loss, generator_loss
    ae, critic = copy.deepcopy(autoencoder).train(), copy.deepcopy(critics).train()

    def step() -> None:
        critic.requires_grad_(False)
        loss, _, fake = generator_loss(ae, critic, wav, train_cfg, adversarial=adversarial)
        loss.backward()
        if adversarial:
            critic.requires_grad_(True)
            c_loss, _ = critic_loss(critic, wav, fake.detach())
            c_loss.backward()
    return counted_flops(step)
