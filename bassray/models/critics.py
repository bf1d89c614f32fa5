"""The two autoencoder critics (paper §3.1): C1 on the log-power STFT, C2 on a log-mel spectrogram.

Both are 1-D residual conv stacks over time with frequency bins x audio channels as conv channels,
the same layout as the autoencoder. Each returns one score per (down-sampled) time frame, a
patch-style critic, so it works for any crop length.
"""
from __future__ import annotations

import torch
from torch import nn

from bassray.config import AudioConfig, CriticConfig
from bassray.models.conv_blocks import Downsample1d, ResidualBlock1d
from bassray.models.spectral import mel_filterbank, power_spectrogram, power_to_mel

# Same fixed input scaling as the autoencoder (log-power of roughly -11.5 .. +11).
LOG_SHIFT = -4.0
LOG_SCALE = 5.0


class SpectrogramCritic(nn.Module):
    """``[B, in_channels, N]`` features -> ``[B, N / 2^(len(channels)-1)]`` scores."""

    def __init__(self, in_channels: int, channels: list[int], kernel_size: int):
        super().__init__()
        if not channels:
            raise ValueError("critic channels must list at least one width")
        layers: list[nn.Module] = [nn.Conv1d(in_channels, channels[0], kernel_size, padding=kernel_size // 2)]
        for i, width in enumerate(channels):
            layers.append(ResidualBlock1d(width, kernel_size))
            if i + 1 < len(channels):
                layers.append(Downsample1d(width, channels[i + 1], 2))
        layers += [nn.LeakyReLU(0.2), nn.Conv1d(channels[-1], 1, kernel_size, padding=kernel_size // 2)]
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(1)  # [B, N']


class Critics(nn.Module):
    """Both critics in one module (one DeepSpeed engine). ``forward(wav) -> (score_spec, score_mel)``."""

    def __init__(self, critic_cfg: CriticConfig, audio: AudioConfig):
        super().__init__()
        self.cfg = critic_cfg
        self.audio = audio
        n_bins = critic_cfg.n_fft // 2 + 1
        self.spec_critic = SpectrogramCritic(audio.channels * n_bins, list(critic_cfg.channels),
                                             critic_cfg.kernel_size)
        self.mel_critic = SpectrogramCritic(audio.channels * critic_cfg.n_mels, list(critic_cfg.channels),
                                            critic_cfg.kernel_size)

    def features(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wav ``[B, C, T]`` -> (log-power ``[B, C*F, N]``, log-mel ``[B, C*n_mels, N]``), float32.

        The mel spectrogram equals torchaudio.transforms.MelSpectrogram (power 2, HTK, no norm) on the
        same STFT; it is computed here from the shared power spectrogram, with filters built on the
        fly, because a bf16-cast module would otherwise hold a bf16 filterbank and window.
        """
        if wav.dim() != 3 or wav.shape[1] != self.audio.channels:
            raise ValueError(f"critics take [batch, {self.audio.channels}, samples], got {tuple(wav.shape)}")
        B = wav.shape[0]
        power = power_spectrogram(wav, self.cfg.n_fft, self.cfg.hop_length, pad_mode="constant")  # [B, C, F, N]
        fb = mel_filterbank(self.audio.sample_rate, self.cfg.n_fft, self.cfg.n_mels, wav.device)
        log_spec = torch.log(power + self.cfg.log_eps)
        log_mel = torch.log(power_to_mel(power, fb) + self.cfg.log_eps)
        return (log_spec.reshape(B, -1, log_spec.shape[-1]), log_mel.reshape(B, -1, log_mel.shape[-1]))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_spec, log_mel = self.features(wav)
        dtype = next(self.parameters()).dtype
        score_spec = self.spec_critic(((log_spec - LOG_SHIFT) / LOG_SCALE).to(dtype))
        score_mel = self.mel_critic(((log_mel - LOG_SHIFT) / LOG_SCALE).to(dtype))
        return score_spec, score_mel  # [B, N1], [B, N2]
