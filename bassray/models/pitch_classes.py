"""The diffusion model's view of the bass latent's pitch: twelve class channels per quarter frame
instead of a point on the circle of fifths (``unet.pitch_classes``). Plain PyTorch.

The bass latent codes a note's pitch class as (cos, sin) on the circle of fifths
(:func:`bassray.models.harmonic_phase.pitch_code`). Where the network is unsure between two
classes, its estimate of that point lies between them, and what it lands on at the end of sampling
is their average: a neighbour on the circle, often a wrong note (the harmony snap exists to mend
it). Twelve channels, one per class, keep each candidate apart, as the "analog bits" of Chen et al.
(2023) keep a discrete code's values apart: each is +1 where the part sounds that class and -1
elsewhere, and decoding takes the strongest. The height channel (octave and tuning) and every
other channel pass through unchanged.

Layouts (``P`` = pitch parts; the autoencoder's pitch code is its last ``3 P`` channels, ``P`` cos,
``P`` sin, ``P`` heights, bassray/models/latent_layout.py):

- bass latent:      ``[rest | P cos | P sin | P height]``, ``D`` channels;
- diffusion space:  ``[rest | 12 P classes (class-major) | P height]``, ``D + 10 P`` channels.

Both sides are normalised latents (``(z - mean) / std`` with the latent statistics); the class
channels are not normalised, ±1 being already near unit scale.
"""
from __future__ import annotations

import math

import torch

from bassray.models.latent_layout import PITCH_CODE_CHANNELS, LatentLayout

PITCH_CLASSES = 12


def diffused_dim(layout: LatentLayout, class_parts: int) -> int:
    """Channels the U-Net diffuses for a bass latent of ``layout``: its own, or with ``class_parts``
    > 0 the pitch code of that many parts as twelve classes each."""
    return layout.total + (PITCH_CLASSES - PITCH_CODE_CHANNELS + 1) * class_parts


def pitch_class_slice(layout: LatentLayout, class_parts: int) -> slice:
    """Where the class channels and heights (the pitch, to the v-loss) sit in diffusion space."""
    return slice(layout.total - layout.pitch, diffused_dim(layout, class_parts))


def _code_stats(mean: torch.Tensor, std: torch.Tensor, parts: int, like: torch.Tensor):
    shape = (3 * parts, 1)
    return (mean[-3 * parts:].to(like).reshape(shape), std[-3 * parts:].to(like).reshape(shape))


def to_pitch_classes(z: torch.Tensor, parts: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalised bass latents ``[B, D, L]`` -> diffusion space ``[B, D + 10 P, L]``. A part is
    pitched where its code's radius is over 0.5 (1 in a true code, 0 unpitched)."""
    B, L = z.shape[0], z.shape[-1]
    code_mean, code_std = _code_stats(mean, std, parts, z)
    code = (z[:, -3 * parts:] * code_std + code_mean).reshape(B, 3, parts, L)
    pitched = code[:, 0] ** 2 + code[:, 1] ** 2 > 0.25                                        # [B, P, L]
    fifths = torch.remainder(torch.round(torch.atan2(code[:, 1], code[:, 0]) * PITCH_CLASSES / (2 * math.pi)),
                             PITCH_CLASSES).long()
    one_hot = torch.nn.functional.one_hot(fifths, PITCH_CLASSES).to(z.dtype) * pitched[..., None]  # [B, P, L, 12]
    classes = (2 * one_hot - 1).permute(0, 3, 1, 2).reshape(B, PITCH_CLASSES * parts, L)
    return torch.cat([z[:, :-3 * parts], classes, z[:, -parts:]], dim=1)


def from_pitch_classes(zd: torch.Tensor, parts: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_pitch_classes` for any point of diffusion space: each part takes its
    strongest class, with a code radius of that channel's value mapped from [-1, 1] to [0, 1] (so a
    part all of whose classes sit near -1 decodes unpitched, as a rest)."""
    B, L = zd.shape[0], zd.shape[-1]
    rest = zd.shape[1] - (PITCH_CLASSES + 1) * parts
    classes = zd[:, rest:rest + PITCH_CLASSES * parts].reshape(B, PITCH_CLASSES, parts, L)
    strongest, fifths = classes.max(dim=1)                                                     # [B, P, L]
    radius = ((strongest + 1) / 2).clamp(0.0, 1.0)
    angle = fifths.to(zd.dtype) * (2 * math.pi / PITCH_CLASSES)
    code_mean, code_std = _code_stats(mean, std, parts, zd)
    circle = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)          # [B, 2P, L]
    circle = (circle - code_mean[:2 * parts]) / code_std[:2 * parts]
    return torch.cat([zd[:, :rest], circle, zd[:, -parts:]], dim=1)


def pitch_class_parts(config) -> int:
    """How many parts' pitch a config's U-Net diffuses as classes: the bass autoencoder's
    ``pitch_parts`` with ``unet.pitch_classes``, else 0."""
    if not config.unet.pitch_classes:
        return 0
    if not LatentLayout.of(config.bass_autoencoder).pitch:
        raise ValueError("unet.pitch_classes needs a bass latent with a pitch code "
                         "(bass_autoencoder.phase: harmonic); turn it off for this autoencoder")
    return config.bass_autoencoder.pitch_parts


def diffused_target_dim(config) -> int:
    """Channels of the target a config's U-Net diffuses (and predicts)."""
    return diffused_dim(LatentLayout.of(config.bass_autoencoder), pitch_class_parts(config))
