"""Harmony snap: resolve a generated note's pitch class with the mix's chroma.

The bass latent carries each quarter frame's pitch class as a point on the circle of fifths
(:func:`bassray.models.harmonic_phase.pitch_code`). Where the diffusion model is unsure, its point
lands between neighbours of the circle, and rounding picks the nearer one, often one step the wrong
way: 13 % of the longer recipe's generated frames sat a fourth above the chord's root. The mix's own
chroma (12 channels of the mix latent) says which of those neighbours sound in the mix. The snap
scores the nearest class and its two neighbours on the circle by ``chroma x exp(-d^2 / 2 width^2)``
(d: distance in fifths from the generated point) and keeps the best, so a note moves at most one
step round the circle of fifths, and only towards a class the mix plays. ``width`` 0 leaves the
code alone; larger widths trust the chroma more. Height (octave, tuning) and the code's radius are
kept. Plain PyTorch.
"""
from __future__ import annotations

import math

import torch

# A class the mix does not play still scores a little, so with a silent chroma the nearest class wins.
CHROMA_FLOOR = 0.05


def snap_to_harmony(code: torch.Tensor, chroma: torch.Tensor, width: torch.Tensor | float) -> torch.Tensor:
    """``code [B, 3, P]`` (cos, sin, height), ``chroma [B, 12, P]`` (C = 0, in [0, 1]), ``width``
    ``[B]`` or a number (fifths; 0 = off) -> the code with each point moved to the chosen class."""
    B = code.shape[0]
    width = torch.as_tensor(width, dtype=code.dtype, device=code.device).expand(B)[:, None]   # [B, 1]
    fifths = torch.atan2(code[:, 1], code[:, 0]) * 12.0 / (2 * math.pi)                       # [B, P]
    nearest = torch.round(fifths)
    best, best_score = nearest, torch.full_like(fifths, -1.0)
    for step in (0, -1, 1):  # the nearest first: it wins ties
        candidate = nearest + step
        pitch_class = torch.remainder(7.0 * candidate, 12.0).long()                            # [B, P]
        heard = chroma.gather(1, pitch_class[:, None, :])[:, 0].clamp_min(0.0) + CHROMA_FLOOR
        score = heard * torch.exp(-(fifths - candidate) ** 2 / (2 * width.clamp_min(1e-6) ** 2))
        better = score > best_score
        best, best_score = torch.where(better, candidate, best), torch.where(better, score, best_score)
    radius = torch.sqrt(code[:, 0] ** 2 + code[:, 1] ** 2)
    angle = best * 2 * math.pi / 12.0
    # Off (width 0) returns the code untouched, not re-rounded: the decoder rounds as before.
    snapped = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle), code[:, 2]], dim=1)
    return torch.where(width[:, :, None] > 0, snapped, code)
