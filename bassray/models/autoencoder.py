"""Musika-style spectrogram autoencoder, trained end to end (DESIGN.md §2.1, paper §3.1).

wav [B, C, T] -> log|STFT|^2 (hop 256, n_fft 1024, Hann) [B, C*F, 16L] -> residual conv stack over
time, 16x down-sampling -> latent z [B, D, L] (unbounded) -> mirrored decoder -> per-bin log-magnitude
and phase for every channel -> iSTFT -> wav. One latent frame = hop * 16 = 4096 samples.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bassray.audio import log_magnitude
from bassray.config import AudioConfig, AutoencoderConfig
from bassray.models.conv_blocks import Downsample1d, Upsample1d, residual_stack

# Fixed affine map of log-power values (about -11.5 for silence to +11 for a full-scale sine at
# n_fft 1024) into roughly [-1.5, 3] for the first conv; the decoder maps back with the inverse.
LOG_MAG_SHIFT = -4.0
LOG_MAG_SCALE = 5.0
# Decoded log-power is clamped before exp() so an untrained decoder cannot overflow the iSTFT.
MAX_LOG_POWER = 24.0


@dataclass
class AutoencoderOutput:
    wav: torch.Tensor             # [B, C, T] reconstruction, same length as the input
    log_mag: torch.Tensor         # [B, C, F, 16L] decoded log(|S|^2 + eps)
    latent: torch.Tensor          # [B, D, L]
    input_log_mag: torch.Tensor   # [B, C, F, 16L] log(|STFT(w)|^2 + eps) of the padded input (L_rec target)


class LatentAutoencoder(nn.Module, abc.ABC):
    """What every bassray autoencoder offers (audiocraft's EncodecModel style): the diffusion stage,
    the latent encoder and serving only use this."""

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int: ...

    @property
    @abc.abstractmethod
    def channels(self) -> int: ...

    @property
    @abc.abstractmethod
    def latent_dim(self) -> int: ...

    @property
    @abc.abstractmethod
    def hop_samples(self) -> int:
        """Waveform samples per latent frame."""

    @property
    def frame_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.hop_samples

    def latent_length(self, samples: int) -> int:
        """Latent frames for ``samples`` waveform samples: ceil(T / hop_samples), at least 1."""
        return max(1, math.ceil(samples / self.hop_samples))

    @abc.abstractmethod
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, C, T] -> [B, D, ceil(T / hop_samples)]``."""

    @abc.abstractmethod
    def decode(self, z: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """``[B, D, L] -> [B, C, length]`` (default ``L * hop_samples``)."""


class Autoencoder(LatentAutoencoder):
    def __init__(self, ae_cfg: AutoencoderConfig, audio: AudioConfig):
        super().__init__()
        factors = list(ae_cfg.downsample_factors)
        widths = list(ae_cfg.channels)
        if len(widths) != len(factors) + 1:
            raise ValueError(f"autoencoder channels needs len(downsample_factors) + 1 = {len(factors) + 1} "
                             f"entries (one per time resolution), got {widths}")
        if ae_cfg.n_fft < ae_cfg.hop_length or ae_cfg.n_fft % ae_cfg.hop_length:
            raise ValueError(f"n_fft ({ae_cfg.n_fft}) must be a multiple of hop_length ({ae_cfg.hop_length})")
        self.cfg = ae_cfg
        self.audio = audio
        self.n_bins = ae_cfg.n_fft // 2 + 1
        blocks, kernel = ae_cfg.blocks_per_stage, ae_cfg.kernel_size
        spec_channels = audio.channels * self.n_bins

        # Encoder: frequency bins x audio channels are the conv channels; convolve over time.
        enc: list[nn.Module] = [nn.Conv1d(spec_channels, widths[0], kernel, padding=kernel // 2)]
        for i, factor in enumerate(factors):
            enc += [residual_stack(widths[i], blocks, kernel), Downsample1d(widths[i], widths[i + 1], factor)]
        enc += [residual_stack(widths[-1], blocks, kernel), nn.LeakyReLU(0.2),
                nn.Conv1d(widths[-1], ae_cfg.latent_dim, kernel, padding=kernel // 2)]
        self.encoder = nn.Sequential(*enc)

        # Decoder: the mirror. Output per channel and bin: log-power + a 2-vector for the phase.
        dec: list[nn.Module] = [nn.Conv1d(ae_cfg.latent_dim, widths[-1], kernel, padding=kernel // 2),
                                residual_stack(widths[-1], blocks, kernel)]
        for i in reversed(range(len(factors))):
            dec += [Upsample1d(widths[i + 1], widths[i], factors[i]), residual_stack(widths[i], blocks, kernel)]
        dec += [nn.LeakyReLU(0.2), nn.Conv1d(widths[0], 3 * spec_channels, kernel, padding=kernel // 2)]
        self.decoder = nn.Sequential(*dec)

    # --- the LatentAutoencoder interface -------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.audio.sample_rate)

    @property
    def channels(self) -> int:
        return int(self.audio.channels)

    @property
    def latent_dim(self) -> int:
        return int(self.cfg.latent_dim)

    @property
    def hop_samples(self) -> int:
        return int(self.cfg.hop_length * math.prod(self.cfg.downsample_factors))

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        return self._encode(self._check_wav(wav))[0]

    def decode(self, z: torch.Tensor, length: int | None = None) -> torch.Tensor:
        full = z.shape[-1] * self.hop_samples
        if length is None:
            length = full
        if not 0 < length <= full:
            raise ValueError(f"decode length {length} must be in 1..{full} (latent frames x {self.hop_samples})")
        log_mag, phase = self._decode_spectrum(z)
        return self.spectrum_to_wave(self.log_power_to_magnitude(log_mag), phase, full)[..., :length]

    def forward(self, wav: torch.Tensor) -> AutoencoderOutput:
        wav = self._check_wav(wav)
        z, input_log_mag = self._encode(wav)
        log_mag, phase = self._decode_spectrum(z)
        full = z.shape[-1] * self.hop_samples
        recon = self.spectrum_to_wave(self.log_power_to_magnitude(log_mag), phase, full)
        return AutoencoderOutput(wav=recon[..., :wav.shape[-1]].to(wav.dtype), log_mag=log_mag,
                                 latent=z, input_log_mag=input_log_mag)

    # --- spectrogram <-> features ------------------------------------------------------------------
    def input_log_magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` (T a multiple of hop_samples) -> ``[B, C, F, T / hop_length]`` log-power."""
        spec = log_magnitude(wav.float(), self.cfg.n_fft, self.cfg.hop_length, self.cfg.log_eps)
        return spec[..., : wav.shape[-1] // self.cfg.hop_length]  # drop the centred STFT's extra frame

    def _encode(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, C, T = wav.shape
        padded = F.pad(wav, (0, self.latent_length(T) * self.hop_samples - T))
        log_mag = self.input_log_magnitude(padded)                      # [B, C, F, N]
        features = (log_mag - LOG_MAG_SHIFT) / LOG_MAG_SCALE
        features = features.reshape(B, C * self.n_bins, -1).to(self._dtype())
        return self.encoder(features), log_mag                          # [B, D, N/16], [B, C, F, N]

    def _decode_spectrum(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z ``[B, D, L]`` -> log-power ``[B, C, F, N]`` and unit phase ``[B, C, 2, F, N]`` (float32)."""
        if z.dim() != 3 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latent must be [batch, {self.latent_dim}, frames], got {tuple(z.shape)}")
        out = self.decoder(z.to(self._dtype())).float()
        out = out.reshape(z.shape[0], self.channels, 3, self.n_bins, -1)  # [B, C, 3, F, N]
        log_mag = out[:, :, 0] * LOG_MAG_SCALE + LOG_MAG_SHIFT
        # Phase as a normalised (cos, sin)-like 2-vector rather than an angle: an angle regression has
        # a 2*pi wrap-around discontinuity, the 2-vector is continuous, and normalising it leaves the
        # magnitude entirely to the log-power channel that L_rec supervises.
        xy = out[:, :, 1:3]
        phase = xy * torch.rsqrt(xy.square().sum(dim=2, keepdim=True) + 1e-8)
        return log_mag, phase

    def log_power_to_magnitude(self, log_mag: torch.Tensor) -> torch.Tensor:
        """|S| from log(|S|^2 + eps): exp(x / 2). The eps floor (sqrt(1e-5) per bin) is inaudible and
        keeps the gradient finite, unlike sqrt(exp(x) - eps). Values below log(eps) cannot come from
        a real input; clamping them also keeps exp() out of the denormal range, which slows CPUs
        down by orders of magnitude."""
        return torch.exp(0.5 * log_mag.clamp(min=math.log(self.cfg.log_eps), max=MAX_LOG_POWER))

    def spectrum_to_wave(self, magnitude: torch.Tensor, phase: torch.Tensor, length: int) -> torch.Tensor:
        """iSTFT of ``magnitude [B, C, F, N]`` x unit ``phase [B, C, 2, F, N]`` -> ``[B, C, length]``.

        N = length / hop_length frames (the centred STFT's last frame dropped, as in the encoder);
        the overlap-add still covers every sample because each is seen by 3 of the 4 windows.
        """
        B, C, n_bins, frames = magnitude.shape
        spec = torch.complex(magnitude * phase[:, :, 0], magnitude * phase[:, :, 1])
        window = torch.hann_window(self.cfg.n_fft, device=magnitude.device, dtype=torch.float32)
        wav = torch.istft(spec.reshape(B * C, n_bins, frames), self.cfg.n_fft, self.cfg.hop_length,
                          window=window, center=True, length=length)
        return wav.reshape(B, C, length)

    def _check_wav(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 3 or wav.shape[1] != self.channels or wav.shape[-1] < 1:
            raise ValueError(f"audio must be [batch, {self.channels} channels, samples >= 1], "
                             f"got {tuple(wav.shape)}; conform it with bassray.audio.conform first")
        return wav

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
