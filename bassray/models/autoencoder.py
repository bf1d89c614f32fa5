"""Musika-style spectrogram autoencoder, trained end to end (docs/design.md §2.1, paper §3.1).

wav [B, C, T] -> log|STFT|^2 (hop 256, n_fft 1024, Hann) [B, C*F, 16L] -> residual conv stack over
time, 16x down-sampling -> latent z [B, D, L] (unbounded) -> mirrored decoder -> per-bin log-magnitude
and phase for every channel -> iSTFT -> wav. One latent frame = hop * 16 = 4096 samples.

Phase (``AutoencoderConfig.phase``): ``"direct"`` decodes a unit 2-vector per bin and frame (the
paper's decoder); ``"harmonic"`` builds every bin's phase from an f0 track that the latent carries
in its last 3 x ``pitch_parts`` channels: the input's YIN f0 in each of ``pitch_parts`` equal parts
of a latent frame, coded as pitch class on the circle of fifths plus height (``pitch_code``, zeros where
unpitched); a learnt comb at that f0 sharpens the decoded log-power. ``chroma`` (the mix
autoencoder) puts the input's 12-class chroma of every latent frame in the last 12 channels: the
chords, in a form the diffusion model can read. The other channels are learnt as before, and the
decoder's magnitude sees all of them. bassray/models/harmonic_phase.py says why: a learnt phase,
and a learnt f0, lost the bass line's pitch at CPU training lengths.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bassray.config import AudioConfig, AutoencoderConfig
from bassray.models.conv_blocks import Downsample1d, Upsample1d, residual_stack
from bassray.models.latent_layout import LatentLayout
from bassray.models.rhythm_code import low_band_bins, rhythm_code
from bassray.models.harmonic_phase import (PITCH_SEMITONES, frame_chroma, harmonic_phase, pitch_code,
                                           pitch_from_code, pitch_targets, pitch_through_rests,
                                           semitones_to_bins, snap_to_semitones)

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
        if ae_cfg.phase not in ("harmonic", "direct"):
            raise ValueError(f"autoencoder phase must be 'harmonic' or 'direct', got {ae_cfg.phase!r}")
        if ae_cfg.phase == "harmonic" and ae_cfg.n_fft != 4 * ae_cfg.hop_length:
            raise ValueError(f"phase 'harmonic' needs n_fft = 4 x hop_length (75 % overlap), got "
                             f"{ae_cfg.n_fft} and {ae_cfg.hop_length}")
        frames_per_latent = math.prod(factors)
        if ae_cfg.phase == "harmonic" and not (0 < ae_cfg.pitch_parts and frames_per_latent % ae_cfg.pitch_parts == 0):
            raise ValueError(f"phase 'harmonic' needs pitch_parts >= 1 dividing the {frames_per_latent} "
                             f"STFT frames of a latent frame, got {ae_cfg.pitch_parts}")
        self.cfg = ae_cfg
        self.audio = audio
        self.n_bins = ae_cfg.n_fft // 2 + 1
        blocks, kernel = ae_cfg.blocks_per_stage, ae_cfg.kernel_size
        spec_channels = audio.channels * self.n_bins

        # Encoder: frequency bins x audio channels are the conv channels; convolve over time.
        if ae_cfg.rhythm_parts < 0 or (ae_cfg.rhythm_parts and frames_per_latent % ae_cfg.rhythm_parts):
            raise ValueError(f"rhythm_parts must be 0 (off) or divide the {frames_per_latent} STFT frames of "
                             f"a latent frame, got {ae_cfg.rhythm_parts}")
        if not ae_cfg.rhythm_low_band_hz > 0:
            raise ValueError(f"rhythm_low_band_hz is a frequency in Hz > 0, got {ae_cfg.rhythm_low_band_hz}")
        if ae_cfg.latent_noise < 0:
            raise ValueError(f"latent_noise is a noise level >= 0 (0 = off), got {ae_cfg.latent_noise}")
        self.layout = LatentLayout.of(ae_cfg)
        self.pitch_parts = ae_cfg.pitch_parts if ae_cfg.phase == "harmonic" else 0
        self.pitch_channels = self.layout.pitch
        self.chroma_channels = self.layout.chroma
        self.rhythm_parts = ae_cfg.rhythm_parts
        self.low_bins = low_band_bins(self.sample_rate, ae_cfg.n_fft, ae_cfg.rhythm_low_band_hz)
        self.frames_per_latent = frames_per_latent
        enc: list[nn.Module] = [nn.Conv1d(spec_channels, widths[0], kernel, padding=kernel // 2)]
        for i, factor in enumerate(factors):
            enc += [residual_stack(widths[i], blocks, kernel), Downsample1d(widths[i], widths[i + 1], factor)]
        enc += [residual_stack(widths[-1], blocks, kernel), nn.LeakyReLU(0.2),
                nn.Conv1d(widths[-1], self.layout.learnt, kernel, padding=kernel // 2)]
        self.encoder = nn.Sequential(*enc)

        # Decoder: the mirror. Output: log-power per channel and bin, and ("direct") the phase as a
        # 2-vector per channel and bin.
        phase_channels = 0 if ae_cfg.phase == "harmonic" else 2 * spec_channels
        # "harmonic": a learnt per-bin depth of a comb at the carried f0 (cos(2 pi k / f0), peaks on
        # the harmonics) added to the decoded log-power, so sharp partials at the right pitch need
        # no lookup table of combs in the decoder. Starts at 0: no comb.
        self.comb_depth = nn.Parameter(torch.zeros(audio.channels, self.n_bins, 1)) if self.pitch_parts else None
        dec: list[nn.Module] = [nn.Conv1d(ae_cfg.latent_dim, widths[-1], kernel, padding=kernel // 2),
                                residual_stack(widths[-1], blocks, kernel)]
        for i in reversed(range(len(factors))):
            dec += [Upsample1d(widths[i + 1], widths[i], factors[i]), residual_stack(widths[i], blocks, kernel)]
        dec += [nn.LeakyReLU(0.2), nn.Conv1d(widths[0], spec_channels + phase_channels, kernel, padding=kernel // 2)]
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
        log_mag, phase = self._decode_spectrum(self._with_training_noise(z))
        full = z.shape[-1] * self.hop_samples
        recon = self.spectrum_to_wave(self.log_power_to_magnitude(log_mag), phase, full)
        return AutoencoderOutput(wav=recon[..., :wav.shape[-1]].to(wav.dtype), log_mag=log_mag,
                                 latent=z, input_log_mag=input_log_mag)

    def _with_training_noise(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` with noise on its learnt channels (config ``latent_noise``), in training mode only:
        per example a level uniform in [0, latent_noise], times each channel's spread in the batch."""
        if not (self.training and self.cfg.latent_noise > 0):
            return z
        learnt = z[:, self.layout.learnt_slice]
        spread = learnt.detach().std(dim=(0, 2), keepdim=True)
        level = self.cfg.latent_noise * torch.rand(z.shape[0], 1, 1, device=z.device, dtype=z.dtype)
        noised = learnt + level * spread * torch.randn_like(learnt)
        return torch.cat([noised, z[:, self.layout.learnt:]], dim=1)

    # --- spectrogram <-> features ------------------------------------------------------------------
    def input_log_magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` (T a multiple of hop_samples) -> ``[B, C, F, T / hop_length]`` log-power."""
        return self._input_spectrum(wav)[0]

    def _input_spectrum(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-power ``[B, C, F, N]`` and complex STFT of ``wav`` (N = T / hop_length: the centred
        STFT's extra frame dropped)."""
        frames = wav.shape[-1] // self.cfg.hop_length
        window = torch.hann_window(self.cfg.n_fft, device=wav.device, dtype=torch.float32)
        lead = wav.shape[:-1]
        spec = torch.stft(wav.float().reshape(-1, wav.shape[-1]), self.cfg.n_fft, self.cfg.hop_length,
                          window=window, return_complex=True, center=True)[..., :frames]
        spec = spec.reshape(*lead, *spec.shape[-2:])
        return torch.log(spec.real.square() + spec.imag.square() + self.cfg.log_eps), spec

    def _encode(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, C, T = wav.shape
        padded = F.pad(wav, (0, self.latent_length(T) * self.hop_samples - T))
        log_mag, spec = self._input_spectrum(padded)                       # [B, C, F, N]
        features = (log_mag - LOG_MAG_SHIFT) / LOG_MAG_SCALE
        z = self.encoder(features.reshape(B, C * self.n_bins, -1).to(self._dtype()))  # [B, D - S, N/16]
        # Latents are float32 whatever the conv stack's dtype: the pitch code's height channel
        # carries the fine tuning, which bf16's 8-bit mantissa would round (by up to 0.2 semitone).
        z = z.float()
        if self.rhythm_parts:
            z = torch.cat([z, rhythm_code(log_mag, self.rhythm_parts, self.frames_per_latent,
                                        self.low_bins).float()], dim=1)
        if self.chroma_channels:
            chroma = frame_chroma(spec, self.sample_rate, self.hop_samples // self.cfg.hop_length)
            z = torch.cat([z, chroma.float()], dim=1)
        if self.pitch_parts:
            z = torch.cat([z, self._pitch_latent(padded, spec).float()], dim=1)
        return z, log_mag

    def _pitch_latent(self, wav: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        """``[B, 3S, L]``: the code (:func:`pitch_code`) of the f0 of each of the S parts of every latent
        frame: that of its loudest pitched STFT frame (a mean would land between two notes where a
        part spans a note change), zeros where none is pitched. Channels: S cos, S sin, S height."""
        semitones, weight = pitch_targets(wav, spec, self.sample_rate, self.cfg.hop_length)  # [B, N]
        B, S = semitones.shape[0], self.pitch_parts
        frames_per_part = self.hop_samples // self.cfg.hop_length // S
        w = weight.reshape(B, -1, frames_per_part)                                     # [B, L*S, n]
        value = semitones.reshape(B, -1, frames_per_part).gather(-1, w.argmax(-1, keepdim=True))[..., 0]
        code = pitch_code(value, w.sum(-1) > 0)                                        # [B, 3, L*S]
        return code.reshape(B, 3, -1, S).transpose(2, 3).reshape(B, 3 * S, -1)         # [B, 3S, L]

    def _decode_spectrum(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z ``[B, D, L]`` -> log-power ``[B, C, F, N]`` and unit phase ``[B, C, 2, F, N]``, float32."""
        if z.dim() != 3 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latent must be [batch, {self.latent_dim}, frames], got {tuple(z.shape)}")
        out = self.decoder(z.to(self._dtype())).float()
        B, spec_channels = z.shape[0], self.channels * self.n_bins
        log_mag = out[:, :spec_channels].reshape(B, self.channels, self.n_bins, -1) * LOG_MAG_SCALE + LOG_MAG_SHIFT
        if self.pitch_parts:
            S = self.pitch_parts
            code = z[:, self.layout.pitch_slice].float().reshape(B, 3, S, -1).transpose(2, 3).reshape(B, 3, -1)
            semitones = pitch_through_rests(pitch_from_code(code), code)            # [B, L*S]
            semitones = semitones.repeat_interleave(log_mag.shape[-1] // semitones.shape[-1], dim=-1)
            if self.cfg.pitch_snap:
                semitones = snap_to_semitones(semitones)
            f0 = semitones_to_bins(semitones.clamp(0.0, PITCH_SEMITONES), self.sample_rate, self.cfg.n_fft)
            k = torch.arange(self.n_bins, device=z.device, dtype=torch.float32)[:, None]
            comb = torch.cos(2 * math.pi * k / f0[:, None, :])                    # [B, F, N]
            log_mag = log_mag + self.comb_depth.float() * comb[:, None] * LOG_MAG_SCALE
            phase = harmonic_phase(f0, self.n_bins, self.cfg.n_fft, self.cfg.hop_length)  # [B, 2, F, N]
            return log_mag, phase.unsqueeze(1).expand(-1, self.channels, -1, -1, -1)
        xy = out[:, spec_channels:].reshape(B, self.channels, 2, self.n_bins, -1)
        # Phase as a normalised (cos, sin)-like 2-vector rather than an angle: an angle regression has
        # a 2*pi wrap-around discontinuity, the 2-vector is continuous, and normalising it leaves the
        # magnitude entirely to the log-power channel that L_rec supervises.
        return log_mag, xy * torch.rsqrt(xy.square().sum(dim=2, keepdim=True) + 1e-8)

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
        if self.pitch_parts:
            wav = self._restore_level(wav, magnitude.reshape(B * C, n_bins, frames), window)
        return wav.reshape(B, C, length)

    def _restore_level(self, wav: torch.Tensor, magnitude: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """Give each frame of the resynthesis the energy its magnitude asked for. A phase built from
        one f0 is not a consistent STFT wherever a partial strays from the harmonic series (onsets,
        inharmonic partials), and the overlap-add cancels part of it: 3-4 dB of a real bass line
        even with its true magnitude. The gain (0 dB to +12 dB) is applied by one more STFT pair."""
        frames = magnitude.shape[-1]
        made = torch.stft(wav, self.cfg.n_fft, self.cfg.hop_length, window=window, center=True,
                          return_complex=True)[..., :frames]
        # Powers without complex abs (a sqrt per bin, squared again): 12 % of a batched decode.
        wanted = magnitude.square().sum(-2)                                      # [B', N]
        got = torch.view_as_real(made).square().sum((-1, -3))
        gain = torch.sqrt((wanted + 1e-6) / (got + 1e-6)).clamp(1.0, 4.0).detach()
        gain = F.avg_pool1d(gain[:, None], 5, stride=1, padding=2, count_include_pad=False)[:, 0]
        return torch.istft(made * gain[:, None, :], self.cfg.n_fft, self.cfg.hop_length, window=window,
                           center=True, length=wav.shape[-1])

    def _check_wav(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 3 or wav.shape[1] != self.channels or wav.shape[-1] < 1:
            raise ValueError(f"audio must be [batch, {self.channels} channels, samples >= 1], "
                             f"got {tuple(wav.shape)}; conform it with bassray.audio.conform first")
        return wav

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
