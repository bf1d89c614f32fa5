"""A small (mix, bass) contrastive model: two encoders that map a mix crop and a bass crop of the
same moment close together, and crops of different songs apart (symmetric InfoNCE, as CLIP).

It answers "does this bass belong to this mix?" (the paper's Fig. 3) and gives a trained bass
embedding for FAD and for style distances. Both encoders read a log-frequency spectrogram (12 bins
per octave from 32.7 Hz, C1) so that pitch and harmony, not only rhythm, are visible to them. Plain
PyTorch: no Ray, DeepSpeed or MLflow here.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ContrastiveConfig:
    sample_rate: int = 16000
    crop_seconds: float = 4.0
    n_fft: int = 4096          # 256 ms at 16 kHz: 3.9 Hz bins, fine enough for C1's semitone neighbours
    hop_length: int = 512
    fmin_hz: float = 32.70     # C1
    bins_per_octave: int = 12
    mix_octaves: int = 8       # C1..C9 (capped at Nyquist)
    bass_octaves: int = 6      # C1..C7: the bass's partials
    channels: int = 128
    embed_dim: int = 128
    temperature: float = 0.07  # initial; learnt

    def to_dict(self) -> dict:
        return asdict(self)


def log_frequency_filterbank(n_fft: int, sample_rate: int, fmin_hz: float, bins_per_octave: int,
                             n_bins: int) -> torch.Tensor:
    """``[n_bins, n_fft // 2 + 1]`` triangular filters centred on log-spaced frequencies. Each
    triangle is at least two FFT bins wide, so low filters (narrower than a bin) still take energy."""
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    bin_hz = sample_rate / n_fft
    centres = fmin_hz * 2.0 ** (torch.arange(n_bins, dtype=torch.float64) / bins_per_octave)
    centres = centres[centres < sample_rate / 2]
    width = torch.clamp(centres * (2 ** (1 / bins_per_octave) - 1), min=2 * bin_hz)
    weights = torch.clamp(1 - (freqs[None] - centres[:, None]).abs() / width[:, None], min=0)
    return (weights / weights.sum(1, keepdim=True).clamp(min=1e-9)).float()


class SpectrogramEncoder(nn.Module):
    """Mono audio ``[B, T]`` -> L2-normalised embedding ``[B, D]`` (or per-frame features)."""

    def __init__(self, cfg: ContrastiveConfig, octaves: int):
        super().__init__()
        self.cfg = cfg
        bank = log_frequency_filterbank(cfg.n_fft, cfg.sample_rate, cfg.fmin_hz, cfg.bins_per_octave,
                                        octaves * cfg.bins_per_octave)
        self.register_buffer("filterbank", bank, persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        bins, c = bank.shape[0], cfg.channels
        # BatchNorm over the bins first: each band's log power on a common scale (the bass bands
        # of a mix are far louder than its top octave), which made learning several times faster.
        layers: list[nn.Module] = [nn.BatchNorm1d(bins), nn.Conv1d(bins, c, 5, padding=2), nn.GroupNorm(8, c),
                                   nn.GELU()]
        for _ in range(3):  # each halves time: 32 ms frames -> 256 ms
            layers += [nn.Conv1d(c, c, 5, stride=2, padding=2), nn.GroupNorm(8, c), nn.GELU()]
        self.body = nn.Sequential(*layers)
        self.project = nn.Linear(2 * c, cfg.embed_dim)

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(audio, self.cfg.n_fft, self.cfg.hop_length, window=self.window,
                          return_complex=True).abs() ** 2
        # log power; the -4 offset keeps silence finite and near the bottom of the range
        return torch.log10(self.filterbank @ spec + 1e-4) + 4.0

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        h = self.body(self.spectrogram(audio))
        pooled = torch.cat([h.mean(-1), h.amax(-1)], dim=1)
        return F.normalize(self.project(pooled), dim=-1)


class MixBassContrastive(nn.Module):
    def __init__(self, cfg: ContrastiveConfig | None = None):
        super().__init__()
        self.cfg = cfg or ContrastiveConfig()
        self.mix_encoder = SpectrogramEncoder(self.cfg, self.cfg.mix_octaves)
        self.bass_encoder = SpectrogramEncoder(self.cfg, self.cfg.bass_octaves)
        # one element, not a 0-d scalar: DeepSpeed broadcasts parameters as byte views, which 0-d refuse
        self.log_scale = nn.Parameter(torch.tensor([math.log(1 / self.cfg.temperature)]))

    @staticmethod
    def mono(audio: torch.Tensor) -> torch.Tensor:
        return audio.mean(1) if audio.dim() == 3 else audio  # [B, C, T] -> [B, T]

    def embed_mix(self, audio: torch.Tensor) -> torch.Tensor:
        return self.mix_encoder(self.mono(audio))

    def embed_bass(self, audio: torch.Tensor) -> torch.Tensor:
        return self.bass_encoder(self.mono(audio))

    def forward(self, mix: torch.Tensor, bass: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Symmetric InfoNCE over a batch of aligned crops; (loss, metrics incl. in-batch top-1)."""
        logits = self.similarity(self.embed_mix(mix), self.embed_bass(bass))
        labels = torch.arange(logits.shape[0], device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        with torch.no_grad():
            top1 = (logits.argmax(1) == labels).float().mean().item()
        return loss, {"loss": loss.item(), "top1": top1, "scale": self.log_scale.exp()[0].item()}

    def similarity(self, mix_embedding: torch.Tensor, bass_embedding: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarities ``[mixes, basses]`` (the logits of the soft assignment)."""
        return self.log_scale.clamp(max=math.log(100)).exp()[0] * mix_embedding @ bass_embedding.T


def windows(audio: torch.Tensor, length: int, hop: int) -> torch.Tensor:
    """``[C, T]`` or ``[T]`` -> ``[N, C?, length]`` windows (zero-padded to one window if short)."""
    if audio.shape[-1] < length:
        audio = F.pad(audio, (0, length - audio.shape[-1]))
    return audio.unfold(-1, length, hop).movedim(-2, 0)
