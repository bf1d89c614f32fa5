"""The one inference path, shared by ``bassray generate``, training examples and Ray Serve.

A diffusion bundle is self-contained: the EMA U-Net, the latent statistics and copies of the two
autoencoder bundles it was trained with (``mix_autoencoder/``, ``target_autoencoder/``).
Long inputs are encoded and decoded in chunks, so autoencoder memory does not grow with length.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from bassray.audio import rms_db
from bassray.config import Config
from bassray.data.latents import LatentStats
from bassray.models.pitch_classes import diffused_target_dim, from_pitch_classes, pitch_class_parts, to_pitch_classes

log = logging.getLogger(__name__)

# Latent frames per autoencoder chunk, and context frames on each side (more than the
# encoder/decoder receptive field, so chunked results match whole-signal ones closely).
CHUNK_FRAMES = 128
CONTEXT_FRAMES = 8
# Level matching: below this a signal counts as silent (no gain), and the gain stays within +-30 dB.
SILENT_DB = -90.0
MAX_LEVEL_GAIN_DB = 30.0


@dataclass
class GenerationSettings:
    steps: int = 64
    cfg_weight: float = 1.0
    rescale_phi: float = 0.0
    seed: int = 0
    sampler: str | None = None  # "ddim" or "dpmpp-2m"; None = the bundle's config
    # Harmony snap width in fifths (bassray.models.harmony; 0 = off); None = the bundle's config.
    harmony: float | None = None
    # Scale of the starting noise (sampler.temperature); None = the bundle's config.
    temperature: float | None = None
    style_audio: np.ndarray | None = None  # [C, T] at the model's rate; None = no grounding
    # One gain per request puts the bass at the training collection's median bass-to-mix level.
    # The model's own level drifts by several dB between training runs (in the quickstart, +1 to
    # +7 dB against the true bass) because no loss pins it; dynamics within the line are untouched.
    match_level: bool = True


def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, step: int, context: int,
             out_scale: float) -> torch.Tensor:
    """Apply a length-preserving-up-to-scale conv model to ``x [B, C, N]`` in overlapping chunks
    of ``step`` (+ ``context`` each side) and stitch the centres; output length ``N * out_scale``."""
    n = x.shape[-1]
    if n <= step + 2 * context:
        return fn(x)
    pieces = []
    for start in range(0, n, step):
        lo, hi = max(0, start - context), min(n, start + step + context)
        y = fn(x[..., lo:hi])
        a = int(round((start - lo) * out_scale))
        b = a + int(round((min(start + step, n) - start) * out_scale))
        pieces.append(y[..., a:b])
    return torch.cat(pieces, dim=-1)


def encode_chunked(autoencoder: torch.nn.Module, audio: torch.Tensor) -> torch.Tensor:
    """``[B, C, T]`` -> latent ``[B, D, ceil(T / hop)]``, in chunks of bounded memory."""
    hop = autoencoder.hop_samples
    padded = torch.nn.functional.pad(audio, (0, (-audio.shape[-1]) % hop))
    return _chunked(autoencoder.encode, padded, CHUNK_FRAMES * hop, CONTEXT_FRAMES * hop, 1.0 / hop)


def decode_chunked(autoencoder: torch.nn.Module, latent: torch.Tensor) -> torch.Tensor:
    """Latent ``[B, D, L]`` -> audio ``[B, C, L * hop]``, in chunks of bounded memory."""
    return _chunked(lambda c: autoencoder.decode(c), latent, CHUNK_FRAMES, CONTEXT_FRAMES,
                    autoencoder.hop_samples)


class BassGenerator:
    """Generate a target-stem (bass) waveform for mixes, with per-request settings."""

    def __init__(self, unet: torch.nn.Module, mix_autoencoder: torch.nn.Module,
                 target_autoencoder: torch.nn.Module, stats: LatentStats, config: Config,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 autoencoder_dtype: torch.dtype | None = None):
        """``dtype``: the U-Net's; ``autoencoder_dtype`` (default: ``dtype``): the autoencoders'
        convolution stacks. Their STFT, pitch code, chroma and iSTFT stay float32 either way, so the
        pitch the latents carry is computed the same in both."""
        self.device = torch.device(device)
        self.dtype = dtype
        self.autoencoder_dtype = autoencoder_dtype or dtype
        self.unet = unet.to(self.device, dtype).eval()
        self.mix_ae = mix_autoencoder.to(self.device, self.autoencoder_dtype).eval()
        self.target_ae = target_autoencoder.to(self.device, self.autoencoder_dtype).eval()
        self.stats = stats
        self.config = config
        self.sample_rate = config.audio.sample_rate
        self.channels = config.audio.channels
        self.hop = self.mix_ae.hop_samples
        t = lambda v: torch.tensor(v, dtype=torch.float32, device=self.device)[:, None]  # noqa: E731
        self._mix_mean, self._mix_std = t(stats.mix_mean), t(stats.mix_std)
        self._tgt_mean, self._tgt_std = t(stats.target_mean), t(stats.target_std)
        self._check_compatible()
        # The U-Net may diffuse the pitch as class channels (bassray/models/pitch_classes.py): it
        # reads and writes that view, everything else here the bass latent itself.
        self._class_parts = pitch_class_parts(config)
        self._diffused_dim = diffused_target_dim(config)

    def _check_compatible(self) -> None:
        problems = []
        if self.mix_ae.latent_dim != len(self.stats.mix_mean):
            problems.append(f"mix autoencoder latent dim {self.mix_ae.latent_dim} != statistics {len(self.stats.mix_mean)}")
        if self.target_ae.latent_dim != len(self.stats.target_mean):
            problems.append(f"target autoencoder latent dim {self.target_ae.latent_dim} != statistics {len(self.stats.target_mean)}")
        if self.mix_ae.sample_rate != self.target_ae.sample_rate or self.mix_ae.sample_rate != self.sample_rate:
            problems.append(f"sample rates differ: mix AE {self.mix_ae.sample_rate}, target AE "
                            f"{self.target_ae.sample_rate}, diffusion config {self.sample_rate}")
        if problems:
            raise ValueError("the diffusion bundle does not match its autoencoders: " + "; ".join(problems)
                             + ". Use the autoencoder bundles the model was trained with.")

    def compile(self, mode: str = "default") -> "BassGenerator":
        """Compile the U-Net with ``torch.compile`` (``mode`` "default", or "reduce-overhead": CUDA
        graphs on a GPU, for launch-bound single requests). The first call of each shape compiles
        (tens of seconds); later calls of that shape run the compiled code."""
        self.unet = torch.compile(self.unet, mode=mode)
        return self

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_bundle(cls, bundle_dir: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32, autoencoder_dtype: torch.dtype | None = None
                    ) -> "BassGenerator":
        from bassray.bundles.diffusion import load_diffusion_bundle
        unet, mix_ae, target_ae, stats, config = load_diffusion_bundle(bundle_dir)
        return cls(unet, mix_ae, target_ae, stats, config, device, dtype, autoencoder_dtype)

    @classmethod
    def from_parts(cls, unet: torch.nn.Module, mix_bundle: str | Path, target_bundle: str | Path,
                   latent_dir: str | Path, config: Config) -> "BassGenerator":
        from bassray.bundles.files import load_autoencoder
        device = next(unet.parameters()).device
        return cls(unet, load_autoencoder(mix_bundle), load_autoencoder(target_bundle),
                   LatentStats.load(latent_dir), config, device)

    # -- latents -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_mix(self, audio: np.ndarray) -> torch.Tensor:
        """``[C, T]`` audio -> normalised mix latent ``[Dx, ceil(T / hop)]``."""
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)[None]
        return (encode_chunked(self.mix_ae, x)[0] - self._mix_mean) / self._mix_std

    @torch.no_grad()
    def style_mean(self, audio: np.ndarray) -> torch.Tensor:
        """Time-average of a reference recording's normalised target latent as the U-Net diffuses it:
        ``[Dy]``, or ``[Dy + 10 P]`` with the pitch as classes (bassray/models/pitch_classes.py)."""
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)[None]
        return self._to_diffused((encode_chunked(self.target_ae, x) - self._tgt_mean) / self._tgt_std)[0].mean(-1)

    def _to_diffused(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised bass latents ``[B, Dy, L]`` -> what the U-Net diffuses."""
        if not self._class_parts:
            return latents
        return to_pitch_classes(latents.float(), self._class_parts, self._tgt_mean[:, 0], self._tgt_std[:, 0])

    def _from_diffused(self, latents: torch.Tensor) -> torch.Tensor:
        if not self._class_parts:
            return latents
        return from_pitch_classes(latents.float(), self._class_parts, self._tgt_mean[:, 0], self._tgt_std[:, 0])

    @torch.no_grad()
    def decode_target(self, latent: torch.Tensor, length: int | None = None) -> np.ndarray:
        """Normalised target latents ``[B, Dy, L]`` -> audio ``[B, C, length or L*hop]``."""
        z = latent.float() * self._tgt_std + self._tgt_mean
        audio = decode_chunked(self.target_ae, z)
        return audio[..., : length or audio.shape[-1]].cpu().numpy()

    @torch.no_grad()
    def decode_mix(self, latent: torch.Tensor) -> np.ndarray:
        z = latent.float() * self._mix_std + self._mix_mean
        return decode_chunked(self.mix_ae, z).cpu().numpy()

    @torch.no_grad()
    def sample_latents(self, cond: torch.Tensor, *, steps: int, cfg_weight: Sequence[float],
                       rescale_phi: Sequence[float], seeds: Sequence[int],
                       style_means: Sequence[torch.Tensor | None] | None = None,
                       progress: Callable[[int, int], None] | None = None, sampler: str | None = None,
                       temperature: Sequence[float | None] | None = None) -> torch.Tensor:
        """DDIM (or ``sampler``; default the config's) over a batch of normalised mix latents
        ``[B, Dx, L]`` -> ``[B, Dy, L]``; ``temperature`` per sample (None: the config's)."""
        from bassray.diffusion.sampler import generate_latents
        batch = cond.shape[0]
        styles = list(style_means) if style_means is not None else [None] * batch
        target_dim = self._diffused_dim
        style = torch.stack([s if s is not None else torch.zeros(target_dim, device=self.device)
                             for s in styles])
        mask = torch.tensor([s is not None for s in styles], device=self.device)
        return self._from_diffused(generate_latents(
            self.unet, cond.to(self.dtype), target_dim=target_dim, steps=steps,
            cfg_weight=torch.tensor(cfg_weight, device=self.device, dtype=torch.float32),
            rescale_phi=torch.tensor(rescale_phi, device=self.device, dtype=torch.float32),
            style_mean=style if bool(mask.any()) else None, style_mask=mask if bool(mask.any()) else None,
            seeds=list(seeds), progress=progress, sampler=sampler or self.config.sampler.method,
            temperature=torch.tensor([self.config.sampler.temperature if t is None else t
                                      for t in (temperature or [None] * batch)],
                                     device=self.device, dtype=torch.float32),
            learnt_cfg_max=self.config.sampler.learnt_cfg_max,
            learnt_channels=self.target_ae.layout.learnt).float())

    @property
    def can_snap_to_harmony(self) -> bool:
        """Whether the bass latent carries a pitch code and the mix latent a chroma."""
        return bool(getattr(self.target_ae, "pitch_parts", 0) and getattr(self.mix_ae, "chroma_channels", 0))

    @torch.no_grad()
    def snap_to_harmony(self, latents: torch.Tensor, cond: torch.Tensor, widths: Sequence[float]) -> torch.Tensor:
        """Normalised bass latents ``[B, Dy, L]`` with each quarter frame's pitch class resolved by the
        mix's chroma (``cond [B, Dx, L]``, normalised mix latents; ``widths`` per example, 0 = as is)."""
        from bassray.models.harmony import snap_to_harmony
        if any(not 0.0 <= w <= 4.0 for w in widths):
            raise ValueError(f"harmony snap widths must be in [0, 4] fifths (0 = off), got {list(widths)}")
        if not self.can_snap_to_harmony or not any(w > 0 for w in widths):
            return latents
        parts = self.target_ae.pitch_parts
        from bassray.models.harmonic_phase import code_of_latent, latent_with_code
        z = latents.float() * self._tgt_std + self._tgt_mean
        at = self.mix_ae.layout.chroma_slice
        chroma = cond[:, at].float() * self._mix_std[at] + self._mix_mean[at]             # [B, 12, L]
        code = snap_to_harmony(code_of_latent(z, parts), chroma.repeat_interleave(parts, dim=-1),
                               torch.tensor(list(widths), dtype=torch.float32, device=z.device))
        return (latent_with_code(z, code, parts) - self._tgt_mean) / self._tgt_std

    @torch.no_grad()
    def smooth_pitch(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised bass latents ``[B, Dy, L]`` with the pitch track median-filtered over the
        config's ``sampler.pitch_median`` quarter frames, then held between the rhythm code's attacks
        (``sampler.hold_pitch``); as is where both are off or the latent lacks the codes."""
        from bassray.models.harmonic_phase import (code_of_latent, held_pitch_code, latent_with_code,
                                                   median_pitch_code)
        from bassray.models.rhythm_code import code_attacks
        sampler, ae = self.config.sampler, self.target_ae
        parts, rhythm_parts = getattr(ae, "pitch_parts", 0), getattr(ae, "rhythm_parts", 0)
        hold = sampler.hold_pitch > 0 and rhythm_parts == parts > 0
        if not parts or (sampler.pitch_median <= 1 and not hold):
            return latents
        z = latents.float() * self._tgt_std + self._tgt_mean
        code = median_pitch_code(code_of_latent(z, parts), sampler.pitch_median)
        if hold:
            code = held_pitch_code(code, code_attacks(z[:, ae.layout.rhythm_slice], parts, sampler.hold_pitch))
        return (latent_with_code(z, code, parts) - self._tgt_mean) / self._tgt_std

    # -- the whole path ------------------------------------------------------------------------
    def generate(self, mixes: Sequence[np.ndarray], settings: Sequence[GenerationSettings],
                 progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
        """One bass line per mix (``[C, T]`` at the model's rate), each exactly as long as its mix.
        Requests of equal latent length, step count and sampler share one batched sampling loop."""
        return self._generate(mixes, settings, progress, unsnapped=False)[0]

    def generate_with_and_without_snap(self, mixes: Sequence[np.ndarray], settings: Sequence[GenerationSettings],
                                       progress: Callable[[int, int], None] | None = None
                                       ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """:meth:`generate`, and the same samples decoded without the harmony snap (the network's own
        notes), from one sampling run: for evaluations that report both."""
        return self._generate(mixes, settings, progress, unsnapped=True)

    def _generate(self, mixes: Sequence[np.ndarray], settings: Sequence[GenerationSettings],
                  progress: Callable[[int, int], None] | None, unsnapped: bool
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if len(mixes) != len(settings):
            raise ValueError("give one GenerationSettings per mix")
        conds = [self.encode_mix(m) for m in mixes]
        styles = [self.style_mean(s.style_audio) if s.style_audio is not None else None for s in settings]
        groups: dict[tuple[int, int, str], list[int]] = {}
        for i, (c, s) in enumerate(zip(conds, settings)):
            groups.setdefault((c.shape[-1], s.steps, s.sampler or self.config.sampler.method), []).append(i)
        outputs: list[np.ndarray | None] = [None] * len(mixes)
        raw_outputs: list[np.ndarray | None] = [None] * len(mixes)
        for (_, steps, sampler), idx in groups.items():
            raw = self.sample_latents(
                torch.stack([conds[i] for i in idx]), steps=steps,
                cfg_weight=[settings[i].cfg_weight for i in idx],
                rescale_phi=[settings[i].rescale_phi for i in idx],
                seeds=[settings[i].seed for i in idx], style_means=[styles[i] for i in idx],
                progress=progress, sampler=sampler,
                temperature=[settings[i].temperature for i in idx])
            default_width = self.config.sampler.harmony_snap
            # The median follows the snap: a snapped class that stands alone is a flip too.
            raw = self.smooth_pitch(raw)
            latents = self.snap_to_harmony(raw, torch.stack([conds[i] for i in idx]), [
                default_width if settings[i].harmony is None else settings[i].harmony for i in idx])
            latents = latents if latents is raw else self.smooth_pitch(latents)

            def place(into: list, audio: np.ndarray) -> None:
                for j, i in enumerate(idx):
                    out = audio[j, :, : mixes[i].shape[-1]]
                    into[i] = self.match_level(out, mixes[i]) if settings[i].match_level else out
            audio = self.decode_target(latents)
            place(outputs, audio)
            if unsnapped:  # where nothing was snapped the latents are the samples: no second decode
                place(raw_outputs, audio if latents is raw else self.decode_target(raw))
        return outputs, raw_outputs  # type: ignore[return-value]

    def match_level(self, bass: np.ndarray, mix: np.ndarray) -> np.ndarray:
        """``bass`` scaled to the mix's level plus the training median target-minus-mix level (gain
        within +-30 dB); unchanged when the statistics predate it or either signal is silent."""
        offset = self.stats.target_minus_mix_db
        if offset is None:
            return bass
        bass_db, mix_db = rms_db(bass), rms_db(mix)
        if bass_db < SILENT_DB or mix_db < SILENT_DB:
            return bass
        gain_db = float(np.clip(mix_db + offset - bass_db, -MAX_LEVEL_GAIN_DB, MAX_LEVEL_GAIN_DB))
        return (bass * 10.0 ** (gain_db / 20.0)).astype(bass.dtype)
