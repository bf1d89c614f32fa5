"""Deterministic sine-and-noise stem tracks: a fast fixture for pipeline tests and benchmarks.

Not music (the synthetic song generator is ``bassray.data.synth``): every stem is a few sines at its
own pitches plus a little noise, with silent gaps so silence handling gets exercised.
"""
from __future__ import annotations

import numpy as np

from bassray.data.shards import TrackSegment

DEFAULT_STEMS = ("bass", "drums", "guitar", "piano")


def sine_stem(seconds: float, sample_rate: int, channels: int, freq: float, rng: np.random.Generator,
              gap_seconds: float = 0.0) -> np.ndarray:
    """One stem: a sine at ``freq`` and its octave plus noise, silent for its first ``gap_seconds``."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    wave = 0.2 * np.sin(2 * np.pi * freq * t) + 0.05 * np.sin(2 * np.pi * 2 * freq * t)
    audio = np.repeat(wave[None], channels, axis=0)
    audio += 0.01 * rng.standard_normal(audio.shape)
    audio[:, : int(gap_seconds * sample_rate)] = 0.0
    return audio.astype(np.float32)  # [C, T]


def sine_segments(n_tracks: int, seconds: float, sample_rate: int, channels: int,
                  stems: tuple[str, ...] = DEFAULT_STEMS, seed: int = 0) -> list[TrackSegment]:
    """``n_tracks`` tracks of ``seconds`` each; every stem gets its own random pitch."""
    rng = np.random.default_rng(seed)
    segments = []
    for i in range(n_tracks):
        track = {name: sine_stem(seconds, sample_rate, channels, float(rng.uniform(40, 1000)), rng,
                                 gap_seconds=float(rng.uniform(0, seconds / 4)))
                 for name in stems}
        segments.append(TrackSegment(key=f"sine{i:05d}", track_id=f"sine{i:05d}",
                                     sample_rate=sample_rate, stems=track,
                                     meta={"source": "sine_stems"}))
    return segments
