"""Stage-1 objectives (docs/design.md §2.1, paper eqs. 1-4): reconstruction, multi-scale spectral
distance, hinge critics and the generator's adversarial term. Plain PyTorch; ``autoencoder`` and
``critics_forward`` may be DeepSpeed engines or their ``.module`` (anything callable)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from bassray.config import AutoencoderTrainConfig
from bassray.models.spectral import log_mel_spectrogram, power_spectrogram

CriticsForward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def reconstruction_l1(decoded_log_mag: torch.Tensor, target_log_mag: torch.Tensor) -> torch.Tensor:
    """``L_rec``: mean |D(E(s)) - s| over batch, channels, bins and frames (target not differentiated)."""
    return (decoded_log_mag.float() - target_log_mag.detach().float()).abs().mean()


def mssd(a: torch.Tensor, b: torch.Tensor, hops: Sequence[int]) -> torch.Tensor:
    """Multi-scale spectral distance ``sum_h mean| |STFT_h(a)|^2 - |STFT_h(b)|^2 |``, window 4*hop.

    Reduction: a mean over batch, channels, bins and frames within each scale (so crop length and
    batch size do not change the loss scale), then a sum over scales, as in the paper's sum over H.
    Constant padding lets any length work, even shorter than the largest window.
    """
    if a.shape != b.shape:
        raise ValueError(f"mssd needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    if not hops:
        raise ValueError("mssd needs at least one hop size")
    total = a.new_zeros((), dtype=torch.float32)
    for hop in hops:
        pa = power_spectrogram(a, 4 * hop, hop, pad_mode="constant")
        pb = power_spectrogram(b, 4 * hop, hop, pad_mode="constant")
        total = total + (pa - pb).abs().mean()
    return total


def log_mel_l1(a: torch.Tensor, b: torch.Tensor, sample_rate: int, n_fft: int = 1024,
               hop_length: int = 256, n_mels: int = 80) -> torch.Tensor:
    """Mean |log-mel(a) - log-mel(b)|: a perceptual reconstruction metric for held-out crops."""
    if a.shape != b.shape:
        raise ValueError(f"log_mel_l1 needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    ma = log_mel_spectrogram(a, sample_rate, n_fft, hop_length, n_mels)
    mb = log_mel_spectrogram(b, sample_rate, n_fft, hop_length, n_mels)
    return (ma - mb).abs().mean()


def hinge_critic_terms(score_real: torch.Tensor, score_fake: torch.Tensor) -> torch.Tensor:
    """``E[max(0, 1 - C(real))] + E[max(0, 1 + C(fake))]``."""
    return torch.relu(1.0 - score_real.float()).mean() + torch.relu(1.0 + score_fake.float()).mean()


def critic_loss(critics_forward: CriticsForward, real_wav: torch.Tensor,
                fake_wav: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Hinge loss of both critics; pass ``fake_wav`` detached. One forward over [real; fake]."""
    if real_wav.shape != fake_wav.shape:
        raise ValueError(f"real and fake batches differ: {tuple(real_wav.shape)} vs {tuple(fake_wav.shape)}")
    n = real_wav.shape[0]
    score_spec, score_mel = critics_forward(torch.cat([real_wav, fake_wav.to(real_wav.dtype)]))
    loss_spec = hinge_critic_terms(score_spec[:n], score_spec[n:])
    loss_mel = hinge_critic_terms(score_mel[:n], score_mel[n:])
    loss = loss_spec + loss_mel
    metrics = {"critic/loss": float(loss.detach()), "critic/spec": float(loss_spec.detach()), "critic/mel": float(loss_mel.detach()),
               "critic/real_score": float(score_spec[:n].detach().float().mean() + score_mel[:n].detach().float().mean()) / 2,
               "critic/fake_score": float(score_spec[n:].detach().float().mean() + score_mel[n:].detach().float().mean()) / 2}
    return loss, metrics


def adversarial_generator_loss(critics_forward: CriticsForward, fake_wav: torch.Tensor) -> torch.Tensor:
    """``L_adv = -C1(s~) - C2(mel(w~))`` (each a mean over the critic's patch scores)."""
    score_spec, score_mel = critics_forward(fake_wav)
    return -score_spec.float().mean() - score_mel.float().mean()


def generator_loss(autoencoder: Callable, critics_forward: CriticsForward, wav: torch.Tensor,
                   train_cfg: AutoencoderTrainConfig, adversarial: bool
                   ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """The autoencoder objective ``25 L_rec + 0.002 L_mssd (+ adv_weight L_adv)``.

    Returns (loss, metrics, reconstruction ``[B, C, T]``); the reconstruction is handed back so the
    critic step reuses it (detach it there) instead of running the autoencoder twice. Freeze the
    critics' parameters around this call: only the autoencoder should receive these gradients.
    """
    out = autoencoder(wav)
    rec = reconstruction_l1(out.log_mag, out.input_log_mag)
    spectral = mssd(wav, out.wav, train_cfg.mssd_hops)
    loss = train_cfg.rec_weight * rec + train_cfg.mssd_weight * spectral
    metrics = {"gen/rec": float(rec.detach()), "gen/mssd": float(spectral.detach())}
    if adversarial:
        adv = adversarial_generator_loss(critics_forward, out.wav)
        loss = loss + train_cfg.adv_weight * adv
        metrics["gen/adv"] = float(adv.detach())
    metrics["gen/loss"] = float(loss.detach())
    return loss, metrics, out.wav
