"""The rhythm code: each part of a latent frame's level and onset strength, read off the input's
STFT, so that the latent carries when notes start and stop as the pitch code carries which notes.

Why: a 256 ms latent frame (``tiny``) holds up to two eighth notes. Learnt channels that code an
attack's place inside the frame were what the diffusion model got wrong: the generated bass attacked
about every frame and sounded through the song's rests (docs/articulation.md). A code that says, per
quarter of a frame, how loud the input is and how sharply it rises gives the decoder the envelope
outright, and gives the diffusion model the mix's beat (where the drums hit) to copy.

A third channel per part is the onset strength below a low-band edge (150 Hz), where the kick drum and
the bass sound and hi-hats and cymbals do not: the whole-band onset of a mix is mostly hats, which
play eighths and sixteenths, while a bass that locks to the kick plays two or three notes a bar
(on the quickstart's kick-locked songs the generated bass played 2.7 times the true bass's notes).
Where the band ends is the autoencoder's ``rhythm_low_band_hz``: below 150 Hz a mix's snare and
keys sound as well as its kick (on seed 1's held-out half-time songs the mix's low-band onset peaks
were 3.2 per true bass note); below 60 Hz the kick alone does (1.03 per note, onset F1 0.97).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# log of an STFT frame's power summed over bins, mapped to about -1 (silence at log_eps 1e-5 over
# 513 bins: -5.3) .. +1.1 (a bass line at -20 dBFS: about 6.5) .. +1.9 (a full-scale sine).
LEVEL_SCALE = 6.0
LEVEL_LIMIT = 2.0
# The low-band onset counts arriving power, not a log rise: a log rise from silence would count a
# hi-hat's faint leakage below 150 Hz as much as a kick. Unit: a mean square of -40 dBFS.
LOW_ONSET_POWER = 1e-4


def low_band_bins(sample_rate: int, n_fft: int, edge_hz: float) -> slice:
    """The STFT bins above DC and below ``edge_hz`` (at least one)."""
    return slice(1, 1 + max(1, math.floor(edge_hz * n_fft / sample_rate)))


def frame_level(log_mag: torch.Tensor) -> torch.Tensor:
    """``[B, C, F, N]`` log-power -> ``[B, N]``: each STFT frame's log power (summed over bins,
    averaged over audio channels), scaled by :data:`LEVEL_SCALE` and clamped to +-LEVEL_LIMIT."""
    return (torch.logsumexp(log_mag, dim=2).mean(dim=1) / LEVEL_SCALE).clamp(-LEVEL_LIMIT, LEVEL_LIMIT)


def frame_onset(log_mag: torch.Tensor) -> torch.Tensor:
    """``[B, C, F, N]`` log-power -> ``[B, N]``: log1p of the mean positive log-power rise per bin
    from the frame before (spectral flux; 0 for the first frame)."""
    rise = (log_mag[..., 1:] - log_mag[..., :-1]).clamp_min(0.0).mean(dim=(1, 2))
    return torch.log1p(F.pad(rise, (1, 0)))


def frame_low_onset(log_mag: torch.Tensor, bins: slice) -> torch.Tensor:
    """``[B, C, F, N]`` log-power -> ``[B, N]``: log1p of the rise in the power of ``bins`` (as the
    band's mean square, averaged over audio channels) from the frame before, in units of
    :data:`LOW_ONSET_POWER`: a kick at -12 dBFS reads about 5, a hat's leakage about 0."""
    half_window = log_mag.shape[2] - 1                      # n_fft / 2: a Hann window's sum
    power = torch.exp(log_mag[:, :, bins]).sum(dim=2).mean(dim=1) / half_window ** 2
    rise = (power[..., 1:] - power[..., :-1]).clamp_min(0.0) / LOW_ONSET_POWER
    return torch.log1p(F.pad(rise, (1, 0)))


def rhythm_code(log_mag: torch.Tensor, parts: int, frames_per_latent: int, low_bins: slice) -> torch.Tensor:
    """``[B, C, F, N]`` log-power (N = L x frames_per_latent) -> ``[B, 3 x parts, L]``: the loudest
    level, the strongest onset and the strongest low-band onset (:func:`frame_low_onset` of
    ``low_bins``, from :func:`low_band_bins`) within each of ``parts`` equal parts of every latent frame.
    Channels: ``parts`` levels, then ``parts`` onsets, then ``parts`` low-band onsets."""
    B, N = log_mag.shape[0], log_mag.shape[-1]
    if frames_per_latent % parts or N % frames_per_latent:
        raise ValueError(f"{parts} rhythm parts must divide the {frames_per_latent} STFT frames of a latent "
                         f"frame, and those the {N} frames of the input")
    per_part = frames_per_latent // parts
    values = torch.stack([frame_level(log_mag), frame_onset(log_mag), frame_low_onset(log_mag, low_bins)], dim=1)
    kinds = values.shape[1]                                                             # [B, 3, N]
    values = values.reshape(B, kinds, N // per_part, per_part).amax(dim=-1)             # [B, 3, L*R]
    return values.reshape(B, kinds, -1, parts).transpose(2, 3).reshape(B, kinds * parts, -1)  # [B, 3R, L]


def _frames(code: torch.Tensor, kind: int, parts: int) -> torch.Tensor:
    """One kind of a ``[B, 3R, L]`` rhythm code as ``[B, L x R]``, part by part in time order."""
    B, _, L = code.shape
    return code[:, kind * parts:(kind + 1) * parts].transpose(1, 2).reshape(B, L * parts)


def onset_peaks(x: torch.Tensor, threshold: float, window: int = 2) -> torch.Tensor:
    """``[B, N]`` onset strengths -> ``[B, N]`` bool: the largest within ``window`` either side,
    above ``threshold``."""
    local_max = F.max_pool1d(x[:, None], 2 * window + 1, stride=1, padding=window)[:, 0]
    return (x >= local_max) & (x > threshold)


def code_attacks(code: torch.Tensor, parts: int, threshold: float, window: int = 2) -> torch.Tensor:
    """``[B, 3R, L]`` rhythm code -> ``[B, L x R]`` bool: the parts where either onset channel peaks."""
    return onset_peaks(_frames(code, 1, parts), threshold, window) | onset_peaks(_frames(code, 2, parts), threshold, window)


def plucked_rhythm_code(code: torch.Tensor, parts: int, threshold: float, window: int = 2) -> torch.Tensor:
    """A sampled rhythm code ``[B, 3R, L]`` (raw values) made to read as plucked notes: each onset
    channel keeps only its peaks (:func:`onset_peaks`; 0 elsewhere, as a held note reads), and the
    level never rises between attacks (after an attack it is the running minimum until the next one).

    Why it was tried: a sampled code carries about three times the true bass's onset peaks and a
    level that swells between them. Decoded, it changes nothing (the extra attacks come from the
    pitch code and the learnt channels; docs/articulation.md), so generation does not use it."""
    B, _, L = code.shape
    level, onset, low = (_frames(code, k, parts) for k in range(3))
    onset = torch.where(onset_peaks(onset, threshold, window), onset, torch.zeros_like(onset))
    low = torch.where(onset_peaks(low, threshold, window), low, torch.zeros_like(low))
    attack = (onset > 0) | (low > 0)
    decayed = level.clone()
    for t in range(1, level.shape[1]):  # a running minimum that restarts at each attack
        decayed[:, t] = torch.where(attack[:, t], level[:, t], torch.minimum(level[:, t], decayed[:, t - 1]))
    back = lambda x: x.reshape(B, L, parts).transpose(1, 2)  # noqa: E731
    return torch.cat([back(decayed), back(onset), back(low)], dim=1)
