"""Musical-fit metrics with known answers: a bass that plays its chords' roots, the same bass a
tritone away, silence, and reconstructions with and without the input's pitch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bassray.eval.musical_fit import (bass_fit, chord_agreement, reconstruction_fidelity, track_pitch)
from bassray.models.harmonic_phase import harmonic_phase, hz_to_semitones, semitones_to_bins, yin_f0

RATE = 16000


def _chords(roots: list[int], bar: float) -> list[dict]:
    """One major or minor triad per bar (no tritone inside, so a tritone shift leaves the chord)."""
    return [{"start": i * bar, "end": (i + 1) * bar, "root": r, "intervals": [0, 4, 7] if i % 2 else [0, 3, 7]}
            for i, r in enumerate(roots)]


def _bass(notes: list[tuple[int, float, float]], seconds: float, rate: int = RATE) -> np.ndarray:
    """A plucked harmonic tone per (midi, start, end): decaying partials 1-6, stereo."""
    t = np.arange(int(seconds * rate)) / rate
    out = np.zeros_like(t)
    for pitch, start, end in notes:
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        on = (t >= start) & (t < end)
        tt = t[on] - start
        env = np.exp(-tt * 2.5) * np.minimum(1.0, tt / 0.005)
        out[on] += env * sum(0.3 / h * np.sin(2 * np.pi * h * f0 * tt) for h in range(1, 7))
    return np.stack([out, out]).astype(np.float32)


@pytest.fixture(scope="module")
def song():
    bar, roots = 1.0, [4, 9, 7, 0, 4, 9]                      # E A G C E A
    notes = [(28 + (r - 4) % 12 + 12, i * bar, (i + 1) * bar) for i, r in enumerate(roots)]
    truth = {"chords": _chords(roots, bar), "tempo": 120.0,
             "parts": {"bass": {"notes": [[p, s, e, 100] for p, s, e in notes]}}}
    return notes, truth, len(roots) * bar


def test_bass_on_its_chord_roots_scores_near_one(song):
    notes, truth, seconds = song
    fit = bass_fit(_bass(notes, seconds), RATE, truth)
    assert fit["chord_tone"] >= 0.9 and fit["root"] >= 0.85
    assert fit["raw_pitch"] >= 0.85 and fit["raw_chroma"] >= fit["raw_pitch"]
    assert fit["voicing_recall"] >= 0.85
    assert fit["onset_on_grid"] >= 0.8


def test_same_bass_a_tritone_higher_scores_low(song):
    notes, truth, seconds = song
    shifted = [(p + 6, s, e) for p, s, e in notes]
    fit = bass_fit(_bass(shifted, seconds), RATE, truth)
    assert fit["chord_tone"] <= 0.15 and fit["root"] <= 0.05
    assert fit["raw_pitch"] <= 0.05


def test_silence_is_unvoiced(song):
    _, truth, seconds = song
    silent = np.zeros((2, int(seconds * RATE)), np.float32)
    track = track_pitch(silent, RATE)
    assert not track.voiced.any()
    fit = bass_fit(silent, RATE, truth)
    assert fit["voiced_frames"] == 0 and fit["chord_tone"] == 0.0 and fit["voicing_recall"] == 0.0


def test_chord_agreement_ignores_frames_outside_chords(song):
    notes, truth, seconds = song
    track = track_pitch(_bass(notes, seconds), RATE)
    none = chord_agreement(track, [])
    assert none["voiced_frames"] == 0


def test_reconstruction_fidelity_separates_pitch_from_pitchless(song):
    """The input itself is perfect; a pitchless decoder fails: one that keeps each frame's loudness
    but plays the song's average spectrum (the old bass autoencoder's fixed comb of partials); the
    same tone an octave down counts as an octave error, not a hit."""
    notes, _, seconds = song
    bass = _bass(notes, seconds)
    same = reconstruction_fidelity(bass, bass, RATE)
    assert same["pitch_accuracy"] >= 0.99 and same["chroma_cosine"] >= 0.99 and same["cqt_l1"] == 0.0

    window = torch.hann_window(1024)
    spec = torch.stft(torch.from_numpy(bass), 1024, 256, window=window, return_complex=True)  # [C, F, N]
    loudness = spec.abs().square().sum(-2, keepdim=True).sqrt()
    average = spec.abs().mean(-1, keepdim=True)
    static = average / average.square().sum(-2, keepdim=True).sqrt() * loudness
    phase = 2 * torch.pi * torch.rand(spec.shape, generator=torch.Generator().manual_seed(0))
    pitchless = torch.istft(torch.polar(static, phase), 1024, 256, window=window, length=bass.shape[-1]).numpy()
    bad = reconstruction_fidelity(bass, pitchless, RATE)
    assert bad["pitch_accuracy"] <= 0.3

    octave = reconstruction_fidelity(bass, _bass([(p - 12, s, e) for p, s, e in notes], seconds), RATE)
    assert octave["pitch_accuracy"] <= 0.1 and octave["octave_errors"] >= 0.7


def test_yin_finds_the_f0_of_a_harmonic_tone():
    for pitch in (28, 40, 52):  # E1, E2, E3
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        wav = torch.from_numpy(_bass([(pitch, 0.0, 2.0)], 2.0)[:1])
        est, aperiodicity = yin_f0(wav, RATE, 256, 100)
        cents = 1200 * torch.log2(est[0, 10:90] / f0)
        assert cents.abs().max() < 20 and (aperiodicity[0, 10:90] < 0.3).all()


def test_harmonic_phase_with_the_true_magnitude_keeps_pitch(song):
    """The decoder's phase construction on its own: the input's magnitude with the phase built
    from its YIN f0 reconstructs the pitch."""
    notes, _, seconds = song
    bass = torch.from_numpy(_bass(notes, seconds))
    window = torch.hann_window(1024)
    spec = torch.stft(bass, 1024, 256, window=window, return_complex=True)     # [C, F, N]
    f0_hz, _ = yin_f0(bass.mean(0, keepdim=True), RATE, 256, spec.shape[-1])
    phase = harmonic_phase(semitones_to_bins(hz_to_semitones(f0_hz[0]), RATE, 1024), spec.shape[-2], 1024, 256)
    rebuilt = torch.polar(spec.abs(), torch.atan2(phase[1], phase[0]))
    wav = torch.istft(rebuilt, 1024, 256, window=window, length=bass.shape[-1]).numpy()
    assert reconstruction_fidelity(bass.numpy(), wav, RATE)["pitch_accuracy"] >= 0.8


def test_each_held_out_song_draws_its_own_noise_whatever_its_batch():
    from bassray.eval.evaluate import song_seed
    keys = [f"test-synth-{i:06d}-s000" for i in range(64)]
    seeds = [song_seed(0, k) for k in keys]
    assert len(set(seeds)) == len(keys)                      # no two songs share a seed
    assert seeds == [song_seed(0, k) for k in keys]          # the same song, the same seed
    assert song_seed(1, keys[0]) != seeds[0]                 # the run's seed changes every song's
    assert all(0 <= s < 2**31 for s in seeds)


def test_the_report_breaks_the_generated_scores_down_by_bass_pattern():
    from bassray.eval.fit_report import pattern_table
    row = lambda pattern, f1: {"bass_pattern": pattern, "true": {"chord_tone_coverage": 0.9},  # noqa: E731
                               "generated": {"chord_tone_coverage": 0.5, "onset_f1": f1, "note_rate": 1.0,
                                             "sounding_iou": 0.8, "harmonic_share": 0.9}}
    table = pattern_table([row("walking", 0.8), row("syncopated", 0.2), row("syncopated", 0.4)])
    lines = table.splitlines()
    assert lines[2].startswith("| syncopated | 2 | 0.90 | 0.50 | 0.30 |")     # means over its two songs
    assert lines[3].startswith("| walking | 1 |")
    assert pattern_table([{"generated": {}, "true": {}}]) == ""             # real songs carry no pattern


def test_the_report_breaks_the_generated_scores_down_by_tempo_band_in_tempo_order():
    from bassray.eval.fit_report import TEMPO_BANDS, tempo_band, tempo_table
    row = lambda bpm, rate: {"tempo_bpm": bpm, "true": {"chord_tone_coverage": 0.9},  # noqa: E731
                             "generated": {"chord_tone_coverage": 0.5, "onset_f1": 0.7, "note_rate": rate,
                                           "sounding_iou": 0.8, "harmonic_share": 0.9}}
    # every tempo falls in exactly one band, the edges in the upper one
    assert [tempo_band(b) for b in (70, 99.9, 100, 139.9, 140, 180)] == \
        [TEMPO_BANDS[0][2]] * 2 + [TEMPO_BANDS[1][2]] * 2 + [TEMPO_BANDS[2][2]] * 2
    assert tempo_band(None) is None and tempo_band(float("nan")) is None
    lines = tempo_table([row(150, 1.0), row(80, 2.0), row(90, 3.0)]).splitlines()
    assert lines[2].startswith(f"| {TEMPO_BANDS[0][2]} | 2 |") and "| 2.50 |" in lines[2]  # slow first, mean rate
    assert lines[3].startswith(f"| {TEMPO_BANDS[2][2]} | 1 |") and len(lines) == 4  # an empty band is left out
    assert tempo_table([{"generated": {}, "true": {}}]) == ""                  # no tempo, no table
