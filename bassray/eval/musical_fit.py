"""Musical-fit metrics: does a bass line play the right notes? (plain numpy; no Ray).

Spectral distances cannot see bass pitch (a semitone at 41 Hz is 2.4 Hz), so everything here goes
through an f0 tracker (librosa's pYIN, which needs no weights) and the ground truth that synthetic
songs carry: chords with times, the bass notes, the tempo. Definitions:

- chord-tone agreement: share of voiced frames whose pitch class belongs to the sounding chord,
  reported with its voiced share; chord-tone coverage: share of the frames where the true bass
  plays in which the line sounds a chord tone (the headline: silence cannot score high on it);
- root agreement: share of voiced frames whose pitch class is the chord's root;
- voicing recall / false alarm, raw pitch and raw chroma accuracy against the true bass notes:
  mir_eval.melody's definitions (50 cents);
- onset grid alignment: share of detected onsets within ``ONSET_TOLERANCE_S`` of an eighth-note
  position of the song's tempo grid;
- for a reconstruction of a known input: pitch accuracy against the input's own f0 (within 50 cents,
  octave errors counted apart), and the cosine similarity of their constant-Q chroma.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# pYIN runs at this rate: bass f0 lies below 400 Hz, and 8 kHz keeps it 2x faster than 16 kHz.
TRACK_RATE = 8000
TRACK_FRAME = 1024          # 128 ms: two periods of the 30 Hz floor with room to spare
TRACK_HOP = 128             # 16 ms frames
# pYIN's pitch grid, in semitones. Its Viterbi decode is quadratic in the grid's size and was 90 % of
# its time: 0.2 (20 cents) ran 4x faster than librosa's 0.1 on 12 s of bass (1.22 -> 0.30 s) and
# stays well inside the 50-cent tolerance and the nearest-semitone rounding the metrics use.
TRACK_RESOLUTION = 0.2
FMIN_HZ, FMAX_HZ = 30.0, 400.0
CENTS_TOLERANCE = 50.0
ONSET_TOLERANCE_S = 0.05


@dataclass
class PitchTrack:
    times: np.ndarray       # [N] frame centres in seconds
    f0: np.ndarray          # [N] Hz, 0 where unvoiced
    voiced: np.ndarray      # [N] bool

    @property
    def midi(self) -> np.ndarray:
        """[N] fractional MIDI pitch, NaN where unvoiced."""
        out = np.full(self.f0.shape, np.nan)
        v = self.voiced & (self.f0 > 0)
        out[v] = 69.0 + 12.0 * np.log2(self.f0[v] / 440.0)
        return out


def _mono_at(audio: np.ndarray, sample_rate: int, rate: int) -> np.ndarray:
    import librosa
    x = np.asarray(audio, dtype=np.float32)
    mono = x.mean(axis=0) if x.ndim == 2 else x
    if sample_rate != rate:
        mono = librosa.resample(mono, orig_sr=sample_rate, target_sr=rate, res_type="soxr_hq")
    return np.ascontiguousarray(mono, dtype=np.float32)


def track_pitch(audio: np.ndarray, sample_rate: int) -> PitchTrack:
    """pYIN f0 of a (mono or [C, T]) bass signal between 30 and 400 Hz, 16 ms frames."""
    import librosa
    mono = _mono_at(audio, sample_rate, TRACK_RATE)
    if mono.shape[0] < TRACK_FRAME:
        mono = np.pad(mono, (0, TRACK_FRAME - mono.shape[0]))
    if not np.any(np.abs(mono) > 1e-6):  # pYIN's HMM on digital silence is slow and meaningless
        n = 1 + mono.shape[0] // TRACK_HOP
        return PitchTrack(np.arange(n) * TRACK_HOP / TRACK_RATE, np.zeros(n), np.zeros(n, bool))
    f0, voiced, _ = librosa.pyin(mono, fmin=FMIN_HZ, fmax=FMAX_HZ, sr=TRACK_RATE,
                                 frame_length=TRACK_FRAME, hop_length=TRACK_HOP, center=True,
                                 resolution=TRACK_RESOLUTION)
    f0 = np.nan_to_num(f0, nan=0.0)
    voiced = voiced & (f0 > 0)
    times = librosa.times_like(f0, sr=TRACK_RATE, hop_length=TRACK_HOP)
    return PitchTrack(times, np.where(voiced, f0, 0.0), voiced)


def chord_at(chords: Sequence[dict[str, Any]], times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per time: the sounding chord's root (-1 where none) and a [N, 12] mask of its pitch classes."""
    roots = np.full(times.shape, -1, dtype=int)
    tones = np.zeros((times.shape[0], 12), dtype=bool)
    for chord in chords:
        inside = (times >= chord["start"]) & (times < chord["end"])
        roots[inside] = int(chord["root"]) % 12
        for interval in chord["intervals"]:
            tones[inside, (int(chord["root"]) + int(interval)) % 12] = True
    return roots, tones


def chord_agreement(track: PitchTrack, chords: Sequence[dict[str, Any]],
                    notes: Sequence[Sequence[float]] | None = None) -> dict[str, float]:
    """Chord-tone and root agreement over the voiced frames that fall inside a chord, the share
    of the chords' frames that are voiced (``chord_voiced_share``), and ``chord_tone_coverage``:
    the share of the frames where the true bass plays a note (``notes``; where none are given,
    all the chords' frames) in which this line sounds a chord tone. The coverage is the headline:
    a line voiced in a few frames, all on chord tones, scores high on ``chord_tone`` but not on it."""
    roots, tones = chord_at(chords, track.times)
    in_chords = roots >= 0
    use = track.voiced & in_chords
    n = int(use.sum())
    out = {"chord_voiced_share": float(use.sum() / max(1, in_chords.sum())), "voiced_frames": n}
    if n == 0:
        return {**out, "chord_tone": 0.0, "root": 0.0, "chord_tone_coverage": 0.0}
    pc = np.round(track.midi[use]).astype(int) % 12
    in_chord = tones[use][np.arange(n), pc]
    on_tone = np.zeros(track.times.shape, bool)
    on_tone[use] = in_chord
    should_play = in_chords & (notes_to_f0(notes, track.times) > 0 if notes else True)
    coverage = float(on_tone[should_play].mean()) if should_play.any() else float("nan")
    return {**out, "chord_tone": float(in_chord.mean()), "root": float((pc == roots[use]).mean()),
            "chord_tone_coverage": coverage}


def notes_to_f0(notes: Sequence[Sequence[float]], times: np.ndarray) -> np.ndarray:
    """Ground-truth f0 (Hz, 0 where no note) at ``times`` from [pitch, start, end, ...] notes."""
    f0 = np.zeros(times.shape)
    for note in sorted(notes, key=lambda n: n[1]):
        pitch, start, end = float(note[0]), float(note[1]), float(note[2])
        f0[(times >= start) & (times < end)] = 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)
    return f0


def note_accuracy(track: PitchTrack, notes: Sequence[Sequence[float]]) -> dict[str, float]:
    """mir_eval.melody against the ground-truth notes: voicing recall / false alarm, raw pitch and
    raw chroma accuracy (50 cents)."""
    import mir_eval
    ref_f0 = notes_to_f0(notes, track.times)
    if not np.any(ref_f0 > 0):
        return {}
    ref_v, ref_c, est_v, est_c = mir_eval.melody.to_cent_voicing(track.times, ref_f0, track.times, track.f0)
    return {"voicing_recall": float(mir_eval.melody.voicing_recall(ref_v, est_v)),
            "voicing_false_alarm": float(mir_eval.melody.voicing_false_alarm(ref_v, est_v)),
            "raw_pitch": float(mir_eval.melody.raw_pitch_accuracy(ref_v, ref_c, est_v, est_c)),
            "raw_chroma": float(mir_eval.melody.raw_chroma_accuracy(ref_v, ref_c, est_v, est_c))}


def onset_grid_alignment(audio: np.ndarray, sample_rate: int, tempo_bpm: float,
                         subdivision: int = 2) -> dict[str, float]:
    """Share of detected onsets within ``ONSET_TOLERANCE_S`` of the tempo grid (``subdivision``
    positions per beat, from t = 0), and the onset count."""
    import librosa
    mono = _mono_at(audio, sample_rate, 16000)
    onsets = librosa.onset.onset_detect(y=mono, sr=16000, hop_length=160, units="time", backtrack=False)
    if len(onsets) == 0:
        return {"onset_on_grid": 0.0, "onsets": 0}
    step = 60.0 / float(tempo_bpm) / subdivision
    distance = np.abs(onsets - np.round(onsets / step) * step)
    return {"onset_on_grid": float((distance <= ONSET_TOLERANCE_S).mean()), "onsets": int(len(onsets))}


def level_db(audio: np.ndarray) -> float:
    """RMS level in dBFS (-120 for silence)."""
    rms = float(np.sqrt(np.mean(np.square(np.asarray(audio, dtype=np.float64)))))
    return 20.0 * np.log10(max(rms, 1e-6))


def bass_fit(audio: np.ndarray, sample_rate: int, truth: dict[str, Any],
             track: PitchTrack | None = None) -> dict[str, float]:
    """Every musical-fit metric of one bass signal against a segment's ground truth (its JSON:
    ``chords``, ``tempo`` and ``parts.bass.notes`` where present). ``track``: the signal's
    :func:`track_pitch`, where the caller has it already."""
    track = track or track_pitch(audio, sample_rate)
    notes = ((truth.get("parts") or {}).get("bass") or {}).get("notes")
    out: dict[str, float] = {**chord_agreement(track, truth.get("chords", []), notes),
                             "voiced_share": float(track.voiced.mean()), "level_db": level_db(audio)}
    if notes:
        out.update(note_accuracy(track, notes))
    if truth.get("tempo"):
        out.update(onset_grid_alignment(audio, sample_rate, truth["tempo"]))
    return out


def chroma(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """[12, N] constant-Q chroma of the low register (from C1, 5 octaves)."""
    import librosa
    mono = _mono_at(audio, sample_rate, 16000)
    return librosa.feature.chroma_cqt(y=mono, sr=16000, hop_length=256, fmin=librosa.note_to_hz("C1"),
                                      n_octaves=5, bins_per_octave=36)


def cqt_log_l1(a: np.ndarray, b: np.ndarray, sample_rate: int) -> float:
    """Mean |log CQT(a) - log CQT(b)| over 5 octaves from C1 at 36 bins per octave: a spectral
    distance that resolves bass pitch (a third of a semitone per bin), unlike a 64-band mel."""
    import librosa
    spec = [np.log(np.abs(librosa.cqt(_mono_at(x, sample_rate, 16000), sr=16000, hop_length=256,
                                      fmin=librosa.note_to_hz("C1"), n_bins=180, bins_per_octave=36)) + 1e-4)
            for x in (a, b)]
    n = min(s.shape[1] for s in spec)
    return float(np.abs(spec[0][:, :n] - spec[1][:, :n]).mean())


def reconstruction_fidelity(original: np.ndarray, reconstruction: np.ndarray, sample_rate: int,
                            tracks: tuple[PitchTrack, PitchTrack] | None = None) -> dict[str, float]:
    """How well a reconstruction keeps the pitch of its input.

    ``pitch_accuracy``: share of the input's voiced frames where the reconstruction is voiced within
    50 cents of it; ``octave_errors``: share off by a whole number of octaves (within 50 cents);
    ``chroma_cosine``: mean cosine similarity of their CQT chroma frames (where the input sounds);
    ``cqt_l1``: :func:`cqt_log_l1`. ``tracks``: both signals' :func:`track_pitch`, where the caller
    has them already.
    """
    ref, est = tracks or (track_pitch(original, sample_rate), track_pitch(reconstruction, sample_rate))
    n = min(len(ref.f0), len(est.f0))
    ref_v, est_v = ref.voiced[:n], est.voiced[:n]
    out: dict[str, float] = {}
    if ref_v.any():
        both = ref_v & est_v
        cents = np.zeros(n)
        cents[both] = 1200.0 * np.log2(est.f0[:n][both] / ref.f0[:n][both])
        octave_off = np.abs(cents - 1200.0 * np.round(cents / 1200.0))
        exact = both & (np.abs(cents) <= CENTS_TOLERANCE)
        octave = both & ~exact & (octave_off <= CENTS_TOLERANCE)
        out.update(pitch_accuracy=float(exact.sum() / ref_v.sum()),
                   octave_errors=float(octave.sum() / ref_v.sum()),
                   voicing_recall=float(both.sum() / ref_v.sum()))
    else:
        out.update(pitch_accuracy=float("nan"), octave_errors=float("nan"), voicing_recall=float("nan"))
    ca, cb = chroma(original, sample_rate), chroma(reconstruction, sample_rate)
    m = min(ca.shape[1], cb.shape[1])
    ca, cb = ca[:, :m], cb[:, :m]
    energy = np.abs(_frame_rms(original, sample_rate, m))
    sounding = energy > energy.max() * 0.05 if energy.size else np.zeros(m, bool)
    cos = (ca * cb).sum(0) / (np.linalg.norm(ca, axis=0) * np.linalg.norm(cb, axis=0) + 1e-9)
    out["chroma_cosine"] = float(cos[sounding].mean()) if sounding.any() else float("nan")
    out["cqt_l1"] = cqt_log_l1(original, reconstruction, sample_rate)
    return out


def _frame_rms(audio: np.ndarray, sample_rate: int, frames: int) -> np.ndarray:
    import librosa
    mono = _mono_at(audio, sample_rate, 16000)
    return librosa.feature.rms(y=mono, frame_length=1024, hop_length=256)[0][:frames]


def mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over rows (NaNs and missing keys ignored)."""
    keys = sorted({k for r in rows for k in r})
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in rows if k in r], dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[k] = float(vals.mean())
    return out
