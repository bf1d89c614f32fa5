"""The diffusion model's training objective, in plain PyTorch: what one step of stage 2 computes,
shared by the Ray Train loop (bassray/distributed/train_ldm.py) and the train-step benchmark
(bassray/bench/train_step.py), so the benchmark times the step that training runs."""
from __future__ import annotations

import torch

from bassray.config import Config
from bassray.diffusion.schedule import v_loss
from bassray.models.latent_layout import LatentLayout
from bassray.models.pitch_classes import diffused_dim, pitch_class_parts, pitch_class_slice

# The share of batches trained with the model's own x0 estimate as input (Chen et al. 2022's 0.5):
# the rest teach the first sampling step, which has no previous estimate.
SELF_CONDITION_RATE = 0.5


def self_condition_rate(config: Config) -> float:
    """The share of training steps that self-condition: ``SELF_CONDITION_RATE`` for a U-Net built
    with ``unet.self_condition``, else 0."""
    return SELF_CONDITION_RATE if config.unet.self_condition else 0.0


def code_channel_weight(config: Config) -> torch.Tensor:
    """v-loss weights over the diffused target's channels: ``pitch_loss_weight`` on the pitch code
    (or its class channels and heights, bassray/models/pitch_classes.py), ``rhythm_loss_weight`` on
    the rhythm code (bassray/models/latent_layout.py), 1 on the learnt channels."""
    layout = LatentLayout.of(config.bass_autoencoder)
    class_parts = pitch_class_parts(config)
    weight = torch.ones(diffused_dim(layout, class_parts))
    weight[pitch_class_slice(layout, class_parts) if class_parts else layout.pitch_slice] = \
        config.diffusion_training.pitch_loss_weight
    weight[layout.rhythm_slice] = config.diffusion_training.rhythm_loss_weight
    return weight


def drop_learnt_mix_channels(mix: torch.Tensor, fraction: float, code_channels: int,
                              generator: torch.Generator | None) -> torch.Tensor:
    """Zero the learnt channels (all but the ``code_channels`` trailing ones: rhythm code and chroma)
    of a random ``fraction`` of the examples in a ``[B, Dx, L]`` batch of normalised mix latents."""
    if fraction <= 0 or code_channels <= 0:
        return mix
    drop = torch.rand(mix.shape[0], generator=generator, device=mix.device) < fraction
    keep_codes = torch.ones_like(mix[:1, :, :1])
    keep_codes[:, :-code_channels] = 0
    return torch.where(drop[:, None, None], mix * keep_codes, mix)


class DiffusionObjective:
    """The stage-2 loss of a config: learnt-mix dropout, then the v-loss with the config's
    conditioning dropout and noise, the code channels' weights and, for a self-conditioning U-Net,
    self-conditioning on half the batches."""

    def __init__(self, config: Config, device: torch.device | str = "cpu"):
        self.train_cfg = config.diffusion_training
        self.channel_weight = code_channel_weight(config).to(device)
        self.mix_code_channels = LatentLayout.of(config.mix_autoencoder).codes
        self.self_condition = self_condition_rate(config)

    def __call__(self, model, target: torch.Tensor, mix: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.train_cfg
        mix = drop_learnt_mix_channels(mix, cfg.learnt_mix_dropout, self.mix_code_channels, generator)
        return v_loss(model, target, mix, generator=generator, cond_dropout=cfg.cond_dropout,
                      cond_noise=cfg.cond_noise, channel_weight=self.channel_weight,
                      self_condition=self.self_condition)
