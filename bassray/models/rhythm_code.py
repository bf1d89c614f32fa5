"""The rhythm code: each part of a latent frame's level and onset strength, read off the input's
STFT, so that the latent carries when notes start and stop as the pitch code carries which notes.

Why: a 256 ms latent frame (``tiny``) holds up to two eighth notes. Learnt channels that code an
attack's place inside the frame were what the diffusion model got wrong: the generated bass attacked
about every frame and sounded through the song's rests (docs/articulation.md). A code that says, per
quarter of a frame, how loud the input is and how sharply it rises gives the decoder the envelope
outright, and gives the diffusion model the mix's beat (where the drums hit) to copy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# log of an STFT frame's power summed over bins, mapped to about -1 (silence at log_eps 1e-5 over
# 513 bins: -5.3) .. +1.1 (a bass line at -20 dBFS: about 6.5) .. +1.9 (a full-scale sine).
LEVEL_SCALE = 6.0
LEVEL_LIMIT = 2.0


def frame_level(log_mag: torch.Tensor) -> torch.Tensor:
    """``[B, C, F, N]`` log-power -> ``[B, N]``: each STFT frame's log power (summed over bins,
    averaged over audio channels), scaled by :data:`LEVEL_SCALE` and clamped to +-LEVEL_LIMIT."""
    return (torch.logsumexp(log_mag, dim=2).mean(dim=1) / LEVEL_SCALE).clamp(-LEVEL_LIMIT, LEVEL_LIMIT)


def frame_onset(log_mag: torch.Tensor) -> torch.Tensor:
    """``[B, C, F, N]`` log-power -> ``[B, N]``: log1p of the mean positive log-power rise per bin
    from the frame before (spectral flux; 0 for the first frame)."""
    rise = (log_mag[..., 1:] - log_mag[..., :-1]).clamp_min(0.0).mean(dim=(1, 2))
    return torch.log1p(F.pad(rise, (1, 0)))


def rhythm_code(log_mag: torch.Tensor, parts: int, frames_per_latent: int) -> torch.Tensor:
    """``[B, C, F, N]`` log-power (N = L x frames_per_latent) -> ``[B, 2 x parts, L]``: the loudest
    level and the strongest onset within each of ``parts`` equal parts of every latent frame.
    Channels: ``parts`` levels, then ``parts`` onsets."""
    B, N = log_mag.shape[0], log_mag.shape[-1]
    if frames_per_latent % parts or N % frames_per_latent:
        raise ValueError(f"{parts} rhythm parts must divide the {frames_per_latent} STFT frames of a latent "
                         f"frame, and those the {N} frames of the input")
    per_part = frames_per_latent // parts
    values = torch.stack([frame_level(log_mag), frame_onset(log_mag)], dim=1)          # [B, 2, N]
    values = values.reshape(B, 2, N // per_part, per_part).amax(dim=-1)                 # [B, 2, L*R]
    return values.reshape(B, 2, -1, parts).transpose(2, 3).reshape(B, 2 * parts, -1)    # [B, 2R, L]
