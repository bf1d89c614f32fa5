"""Tempo augmentation of aligned latent pairs: a crop read faster or slower, as if the song were
played at another tempo, for the diffusion stage.

Why: the quickstart's model plays the sparse, slow lines of its training songs (1.3 times their
notes below 100 bpm) but not those of new songs (2.4 times): few training songs are slow and sparse,
so the model has heard each such pattern at one tempo only. Stretching a latent pair lets every
pattern be heard at many tempi. Off in every preset: on the quickstart it helped the harmony and not
the rhythm, since the decoder renders a stretched note's slower decay with extra attacks
(docs/articulation.md, "Tempo augmentation").

How each kind of channel is stretched (bassray/models/latent_layout.py says where each sits):
- learnt channels and chroma: linear interpolation over latent frames;
- the rhythm code's levels: linear interpolation over the code's parts (quarter frames in ``tiny``);
- its onset strengths: *moved*, not interpolated. Each part's value lands on the part nearest its new
  time (the strongest where several land on one), and each part between two such takes
  the lower of them, so a stretched attack is one sharp peak of its old height:
  interpolation would lower a peak that falls between parts, or skip it when compressing;
- the pitch code: held from the last part that landed, so a note's pitch changes on the part its
  attack lands on, never halfway.

Plain numpy, usable anywhere the crops are made.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bassray.models.latent_layout import PITCH_CODE_CHANNELS, RHYTHM_CODE_CHANNELS, LatentLayout


def source_positions(n_out: int, factor: float, start: float) -> np.ndarray:
    """Where each of ``n_out`` output steps reads the source, in source steps: centres map to
    centres, the output running ``factor`` times as long as the source it covers."""
    return start + (np.arange(n_out) + 0.5) / factor - 0.5


def stretch_linear(x: np.ndarray, factor: float, start: float, n_out: int) -> np.ndarray:
    """``[C, N]`` -> ``[C, n_out]`` by linear interpolation (ends held)."""
    pos = np.clip(source_positions(n_out, factor, start), 0, x.shape[-1] - 1)
    left = np.minimum(pos.astype(int), x.shape[-1] - 2) if x.shape[-1] > 1 else np.zeros(n_out, int)
    weight = pos - left
    right = np.minimum(left + 1, x.shape[-1] - 1)
    return x[:, left] * (1 - weight) + x[:, right] * weight


def _landing_steps(n_in: int, factor: float, start: float) -> np.ndarray:
    """The output step each of ``n_in`` source steps lands on (non-decreasing; may fall outside the crop)."""
    return np.rint((np.arange(n_in) - start + 0.5) * factor - 0.5).astype(int)


def stretch_held(x: np.ndarray, factor: float, start: float, n_out: int) -> np.ndarray:
    """``[C, N]`` -> ``[C, n_out]``: each output step holds the last source step that landed on or
    before it, so a value changes on the very step an onset moved by :func:`stretch_peaks` lands on."""
    last = np.searchsorted(_landing_steps(x.shape[-1], factor, start), np.arange(n_out), side="right") - 1
    return x[:, np.clip(last, 0, x.shape[-1] - 1)]


def stretch_peaks(x: np.ndarray, factor: float, start: float, n_out: int) -> np.ndarray:
    """``[C, N]`` onset strengths -> ``[C, n_out]`` with every source step moved to the output step
    nearest its new time (the largest where several land on one step) and each step between two
    such takes the lower of them, so peaks keep their height, width and number (up to those that
    merge when compressing)."""
    target = _landing_steps(x.shape[-1], factor, start)
    # Every source step is placed, those beyond the crop too, so the steps at its edges are filled
    # between two anchors rather than copying the nearest one (which would double a peak there).
    low = min(int(target.min()), 0)
    out = np.full((x.shape[0], max(int(target.max()) + 1, n_out) - low), -np.inf)
    np.maximum.at(out, (slice(None), target - low), x)
    anchors = np.flatnonzero(np.isfinite(out[0]))
    steps = np.arange(n_out) - low
    # A step between two anchors takes the lower: an attack stays one sharp step however slowly it
    # is played (a linear fill would ramp it over several steps, a zero fill split it in two).
    right = np.clip(np.searchsorted(anchors, steps), 0, len(anchors) - 1)
    left = np.clip(right - 1, 0, len(anchors) - 1)
    exact = anchors[right] == steps
    between = np.minimum(out[:, anchors[left]], out[:, anchors[right]])
    return np.where(exact, out[:, anchors[right]], between)


def _fine(x: np.ndarray, kinds: int, parts: int) -> np.ndarray:
    """``[kinds x parts, L]`` code block (part-major within each kind) -> ``[kinds, L x parts]``."""
    L = x.shape[-1]
    return x.reshape(kinds, parts, L).transpose(0, 2, 1).reshape(kinds, L * parts)


def _coarse(x: np.ndarray, kinds: int, parts: int) -> np.ndarray:
    """Inverse of :func:`_fine`."""
    L = x.shape[-1] // parts
    return x.reshape(kinds, L, parts).transpose(0, 2, 1).reshape(kinds * parts, L)


@dataclass(frozen=True)
class LatentStretcher:
    """Stretches one latent (``[D, L]``, raw or normalised) of a given layout; ``rhythm_parts`` and
    ``pitch_parts`` are the autoencoder's."""
    layout: LatentLayout
    rhythm_parts: int
    pitch_parts: int

    @classmethod
    def of(cls, ae_cfg) -> "LatentStretcher":
        layout = LatentLayout.of(ae_cfg)
        return cls(layout, ae_cfg.rhythm_parts, ae_cfg.pitch_parts if layout.pitch else 0)

    def __call__(self, z: np.ndarray, factor: float, start: float, n_out: int) -> np.ndarray:
        """The ``n_out`` frames that start at source frame ``start`` (fractional), played ``factor``
        times as slowly."""
        lay = self.layout
        if z.shape[0] != lay.total:
            raise ValueError(f"a latent of {z.shape[0]} channels cannot be stretched as the config's "
                             f"{lay.total}-channel layout: encode the latents with this config's autoencoders")
        out = np.empty((z.shape[0], n_out), dtype=z.dtype)
        out[lay.learnt_slice] = stretch_linear(z[lay.learnt_slice], factor, start, n_out)
        if lay.chroma:
            out[lay.chroma_slice] = stretch_linear(z[lay.chroma_slice], factor, start, n_out)
        if lay.rhythm:
            R = self.rhythm_parts
            level, onset, low = _fine(z[lay.rhythm_slice], RHYTHM_CODE_CHANNELS, R)
            fine = [stretch_linear(level[None], factor, start * R, n_out * R)[0],
                    *stretch_peaks(np.stack([onset, low]), factor, start * R, n_out * R)]
            out[lay.rhythm_slice] = _coarse(np.stack(fine), RHYTHM_CODE_CHANNELS, R)
        if lay.pitch:
            S = self.pitch_parts
            fine = stretch_held(_fine(z[lay.pitch_slice], PITCH_CODE_CHANNELS, S), factor, start * S, n_out * S)
            out[lay.pitch_slice] = _coarse(fine, PITCH_CODE_CHANNELS, S)
        return out


@dataclass(frozen=True)
class TempoAugment:
    """Draws a stretch for a crop of ``crop_frames``: with ``probability``, a factor log-uniform in
    ``factor_range`` (above 1 plays slower); both latents of a pair get the same one."""
    mix: LatentStretcher
    target: LatentStretcher
    probability: float
    factor_range: tuple[float, float]

    @classmethod
    def of(cls, config) -> "TempoAugment | None":
        """The augmentation a config asks for (``diffusion_training.tempo_stretch_probability`` and
        ``tempo_stretch_range``), or None where it asks for none."""
        cfg = config.diffusion_training
        if cfg.tempo_stretch_probability <= 0:
            return None
        return cls(LatentStretcher.of(config.mix_autoencoder), LatentStretcher.of(config.bass_autoencoder),
                   cfg.tempo_stretch_probability, tuple(cfg.tempo_stretch_range))

    def draw_factor(self, length: int, crop_frames: int, rng: np.random.Generator) -> float:
        """The stretch of one crop of a ``length``-frame track: 1 (a plain crop) unless drawn, and
        where the track is too short to compress this much."""
        if rng.random() >= self.probability:
            return 1.0
        lo, hi = self.factor_range
        factor = float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
        return 1.0 if crop_frames / factor > length - 1 else factor

    def crop(self, mix: np.ndarray, target: np.ndarray, crop_frames: int, factor: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One aligned crop of ``mix [Dx, L]`` and ``target [Dy, L]`` stretched by ``factor``, from a
        random start in the track."""
        start = rng.uniform(0.0, target.shape[-1] - crop_frames / factor)
        return self.mix(mix, factor, start, crop_frames), self.target(target, factor, start, crop_frames)
