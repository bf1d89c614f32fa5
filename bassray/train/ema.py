"""Exponential moving average of weights, kept in float32 whatever the training precision."""
from __future__ import annotations

import torch
from torch import nn


class EMA:
    """``update`` after every optimiser step; ``copy_to`` a model of the same architecture to use the
    averaged weights. The decay warms up as (1 + n) / (10 + n) so short runs are not stuck near init."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {name: value.detach().float().clone()
                       for name, value in model.state_dict().items() if value.is_floating_point()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        state = model.state_dict()
        # One fused lerp over all tensors (shadow += (1 - decay)(value - shadow)): tiny's U-Net,
        # 1.7 ms a step as a Python loop, which is 3 % of its training step on 2 CPU cores.
        torch._foreach_lerp_(list(self.shadow.values()), [state[name].detach().float() for name in self.shadow],
                             1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        state = model.state_dict()
        for name, value in self.shadow.items():
            state[name].copy_(value.to(state[name].dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        self.shadow = {k: v.float().clone() for k, v in state["shadow"].items()}
