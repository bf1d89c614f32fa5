"""Spectrogram helpers for the critics and the autoencoder losses.

Everything is computed in float32 whatever the caller's dtype: torch.stft has no bf16 kernel, and
DeepSpeed's bf16 mode casts whole modules (buffers included), so no window or filterbank lives in a
module buffer that could be cast; they are built on the fly (cheap next to the convolutions).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
import torchaudio.functional as AF


def power_spectrogram(wav: torch.Tensor, n_fft: int, hop_length: int,
                      pad_mode: str = "reflect") -> torch.Tensor:
    """``|STFT(wav)|^2`` with a Hann window of ``n_fft``: ``[..., T] -> [..., n_fft//2+1, frames]``.

    Same values as a centred ``torch.stft``, framed with ``unfold`` + ``rfft`` instead: its backward
    is about a third cheaper on CPU (the MSSD loss takes seven of these per step).
    ``pad_mode="constant"`` works for inputs shorter than ``n_fft // 2`` (reflect padding does not).
    """
    wav = wav.float()
    lead = wav.shape[:-1]
    window = torch.hann_window(n_fft, device=wav.device, dtype=torch.float32)
    flat = F.pad(wav.reshape(-1, 1, wav.shape[-1]), (n_fft // 2, n_fft // 2), mode=pad_mode).squeeze(1)
    spec = torch.fft.rfft(flat.unfold(-1, n_fft, hop_length) * window, dim=-1)  # [B', frames, F]
    power = (spec.real.square() + spec.imag.square()).transpose(-1, -2)        # [B', F, frames]
    return power.reshape(*lead, *power.shape[-2:])


@functools.lru_cache(maxsize=16)
def _mel_filterbank_cpu(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    # Same filters as torchaudio.transforms.MelSpectrogram's defaults (HTK scale, no norm, 0..sr/2).
    return AF.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2.0, n_mels, sample_rate)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """``[n_fft//2+1, n_mels]`` triangular mel filters (float32)."""
    return _mel_filterbank_cpu(int(sample_rate), int(n_fft), int(n_mels)).to(device)


def power_to_mel(power: torch.Tensor, filterbank: torch.Tensor) -> torch.Tensor:
    """``[..., F, N]`` power spectrogram -> ``[..., n_mels, N]`` mel power."""
    return torch.matmul(power.transpose(-1, -2), filterbank).transpose(-1, -2)


def log_mel_spectrogram(wav: torch.Tensor, sample_rate: int, n_fft: int = 1024, hop_length: int = 256,
                        n_mels: int = 128, eps: float = 1e-5) -> torch.Tensor:
    """``log(mel(|STFT|^2) + eps)``: ``[..., T] -> [..., n_mels, frames]``."""
    power = power_spectrogram(wav, n_fft, hop_length, pad_mode="constant")
    return torch.log(power_to_mel(power, mel_filterbank(sample_rate, n_fft, n_mels, wav.device)) + eps)
