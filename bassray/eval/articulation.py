"""Articulation metrics: does a bass line play like a bass player? (plain numpy; no Ray).

Chord-tone agreement hears which notes a line plays, not when or how: a dense, clicky line that
keeps sounding through the song's rests scored near the true bass on it. These metrics hear the
rest, each against a reference bass (the song's true bass; its ground-truth note onsets where the
data carry them):

- ``onset_f1``: mir_eval's onset F-measure of the line's detected onsets (librosa) against the
  reference onsets, matched within ``ONSET_WINDOW_S``;
- ``note_rate``: the line's onsets per second over the reference's;
- ``sounding_iou``: intersection over union of the sounding frames (frame RMS within
  ``SOUNDING_RANGE_DB`` of the file's peak) of the line and the reference; a line that sounds
  through the reference's rests, or rests where it plays, scores low;
- ``harmonic_share``: the harmonic part's share of the energy below ``HARMONIC_MAX_HZ`` after
  librosa's harmonic/percussive separation: clicks, hiss and smeared noise are percussive;
- ``pitch_change_f1`` and ``pitch_changes_per_s``: where and how often the line moves to another
  pitch class (changes of the pYIN track's nearest pitch class, each new class held at least
  ``PITCH_HOLD_S``, a rest between two notes of one class no change), matched within
  ``PITCH_CHANGE_WINDOW_S`` to the reference's changes: a line that pedals one chord tone under a
  moving bass line scores 0 on both, however well its notes agree with the chords;
- ``register_st``: the median pitch of the line's voiced frames minus the reference's, in
  semitones, and ``register_error_st`` its size (pYIN tracks from bassray/eval/musical_fit.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

ANALYSIS_RATE = 16000
ONSET_HOP = 160                 # 10 ms onset-strength frames
ONSET_WINDOW_S = 0.07           # +-70 ms: an onset this close to a reference onset counts as a hit
RMS_FRAME, RMS_HOP = 1024, 256  # 64 ms frames every 16 ms
SOUNDING_RANGE_DB = 30.0
HARMONIC_MAX_HZ = 2000.0
HPSS_FFT, HPSS_HOP = 2048, 256  # 7.8 Hz bins: a 41 Hz bass's partials are 5 bins apart
HPSS_KERNEL = 31                # librosa's default median-filter length, in frames and in bins
PITCH_HOLD_S = 0.05             # a pitch class held shorter than this is pYIN's glitch, not a note
PITCH_CHANGE_WINDOW_S = 0.1     # pYIN settles on a new note a few 16 ms frames after its attack

# Every key :func:`articulation_scores` returns, in the order the reports show them.
ARTICULATION_COLUMNS = ("onset_f1", "note_rate", "sounding_iou", "harmonic_share", "pitch_change_f1",
                        "pitch_changes_per_s", "register_error_st")


@dataclass
class Articulation:
    """What the metrics need of one signal, computed once and compared with any reference."""
    onsets: np.ndarray       # [K] detected onset times, seconds
    sounding: np.ndarray     # [N] bool per RMS frame: within SOUNDING_RANGE_DB of the peak
    harmonic_share: float
    duration: float          # seconds


def _mono16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    from bassray.eval.musical_fit import _mono_at
    return _mono_at(audio, sample_rate, ANALYSIS_RATE)


def detect_onsets(mono: np.ndarray) -> np.ndarray:
    """librosa's spectral-flux onsets of a 16 kHz mono signal, in seconds (none in silence)."""
    import librosa
    if not np.any(np.abs(mono) > 1e-6):
        return np.zeros(0)
    return librosa.onset.onset_detect(y=mono, sr=ANALYSIS_RATE, hop_length=ONSET_HOP, units="time",
                                      backtrack=False)


def sounding_frames(mono: np.ndarray) -> np.ndarray:
    """[N] bool: RMS frames within ``SOUNDING_RANGE_DB`` of the signal's loudest frame."""
    import librosa
    rms = librosa.feature.rms(y=mono, frame_length=RMS_FRAME, hop_length=RMS_HOP)[0]
    if rms.size == 0 or rms.max() <= 1e-8:
        return np.zeros(rms.shape, bool)
    return 20.0 * np.log10(np.maximum(rms, 1e-12) / rms.max()) > -SOUNDING_RANGE_DB


def harmonic_share(mono: np.ndarray) -> float:
    """Share of the energy below ``HARMONIC_MAX_HZ`` that librosa's HPSS (median filtering, soft
    masks) assigns to the harmonic part; NaN for silence."""
    import librosa
    spec = np.abs(librosa.stft(mono, n_fft=HPSS_FFT, hop_length=HPSS_HOP))
    low = int(HARMONIC_MAX_HZ * HPSS_FFT / ANALYSIS_RATE) + 1
    # The percussive median runs across HPSS_KERNEL bins: the bins below `low` see only rows below
    # low + HPSS_KERNEL // 2, so the rest of the spectrum is left out (same shares, a third of the time).
    harmonic, percussive = librosa.decompose.hpss(spec[: low + HPSS_KERNEL // 2], kernel_size=HPSS_KERNEL)
    h, p = float(np.sum(harmonic[:low] ** 2)), float(np.sum(percussive[:low] ** 2))
    return h / (h + p) if h + p > 1e-12 else float("nan")


def articulation_features(audio: np.ndarray, sample_rate: int) -> Articulation:
    """Onsets, sounding frames and harmonic share of a (mono or [C, T]) bass signal."""
    mono = _mono16k(audio, sample_rate)
    return Articulation(onsets=detect_onsets(mono), sounding=sounding_frames(mono),
                        harmonic_share=harmonic_share(mono), duration=mono.shape[0] / ANALYSIS_RATE)


def note_onsets(notes: Sequence[Sequence[float]] | None, duration: float) -> np.ndarray | None:
    """Ground-truth onset times from ``[pitch, start, end, ...]`` notes that start inside the
    signal (repeated starts merged), or None where there are no notes."""
    if not notes:
        return None
    starts = np.unique(np.round([float(n[1]) for n in notes if 0.0 <= float(n[1]) < duration], 3))
    return starts if starts.size else None


def articulation_scores(line: Articulation, reference: Articulation,
                        reference_onsets: np.ndarray | None = None,
                        line_midi: np.ndarray | None = None,
                        reference_midi: np.ndarray | None = None) -> dict[str, float]:
    """Every articulation metric of ``line`` against ``reference`` (see the module's docstring).
    ``reference_onsets``: ground-truth onsets to use instead of those detected in the reference;
    ``*_midi``: per-frame pitch (NaN unvoiced) for the register, left out where not given."""
    ref_onsets = reference.onsets if reference_onsets is None else np.asarray(reference_onsets, float)
    out: dict[str, float] = {"harmonic_share": line.harmonic_share, "onsets": float(len(line.onsets)),
                             **onset_scores(line.onsets, ref_onsets)}
    n = min(len(line.sounding), len(reference.sounding))
    union = np.sum(line.sounding[:n] | reference.sounding[:n])
    if union:
        out["sounding_iou"] = float(np.sum(line.sounding[:n] & reference.sounding[:n]) / union)
        out["sounding_share"] = float(line.sounding[:n].mean())
    if line_midi is not None and reference_midi is not None:
        out.update(pitch_change_scores(line_midi, reference_midi))
        a, b = line_midi[np.isfinite(line_midi)], reference_midi[np.isfinite(reference_midi)]
        if a.size and b.size:
            out["register_st"] = float(np.median(a) - np.median(b))
            out["register_error_st"] = abs(out["register_st"])  # means of signed offsets cancel
    return out


def pitch_change_times(midi: np.ndarray, frame_s: float | None = None) -> np.ndarray:
    """Times (seconds from the first frame) at which a pitch track (fractional MIDI per frame, NaN
    unvoiced) moves to another pitch class: voiced frames only, so a rest between two notes of one
    class is no change, and a class must hold ``PITCH_HOLD_S`` to count (a shorter run is pYIN's
    glitch at an attack)."""
    from bassray.eval.musical_fit import TRACK_HOP, TRACK_RATE
    frame_s = frame_s or TRACK_HOP / TRACK_RATE
    midi = np.asarray(midi, float)
    frames = np.flatnonzero(np.isfinite(midi))
    classes = np.round(midi[frames]).astype(int) % 12
    if classes.size == 0:
        return np.zeros(0)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(classes)) + 1])  # runs of one class
    lengths = np.diff(np.concatenate([starts, [classes.size]]))
    kept = starts[lengths * frame_s >= PITCH_HOLD_S]
    moved = kept[1:][np.diff(classes[kept]) != 0]
    return frames[moved] * frame_s


def pitch_change_scores(line_midi: np.ndarray, reference_midi: np.ndarray,
                        frame_s: float | None = None) -> dict[str, float]:
    """``pitch_changes_per_s`` of a line's pitch track and ``pitch_change_f1`` of its changes
    against the reference's (mir_eval within ``PITCH_CHANGE_WINDOW_S``; left out where the reference
    never changes pitch class)."""
    import mir_eval
    from bassray.eval.musical_fit import TRACK_HOP, TRACK_RATE
    frame_s = frame_s or TRACK_HOP / TRACK_RATE
    line, reference = pitch_change_times(line_midi, frame_s), pitch_change_times(reference_midi, frame_s)
    out = {"pitch_changes_per_s": line.size / max(len(line_midi) * frame_s, 1e-9)}
    if reference.size:
        out["pitch_change_f1"] = float(mir_eval.onset.f_measure(reference, line, window=PITCH_CHANGE_WINDOW_S)[0]
                                       if line.size else 0.0)
    return out


def onset_scores(onsets: np.ndarray, reference_onsets: np.ndarray | None) -> dict[str, float]:
    """``onset_f1`` (mir_eval, within ``ONSET_WINDOW_S``) and ``note_rate`` of onset times against
    reference onsets; empty where the reference has none. Rates are over the reference's length: the
    line is the same song, cut or padded to it."""
    import mir_eval
    if reference_onsets is None or not len(reference_onsets):
        return {}
    onsets = np.sort(np.asarray(onsets, float))
    f1 = mir_eval.onset.f_measure(np.sort(reference_onsets), onsets, window=ONSET_WINDOW_S)[0] if onsets.size else 0.0
    return {"onset_f1": float(f1), "note_rate": float(onsets.size / len(reference_onsets))}


def floor_to_ceiling(value: float, floor: float, ceiling: float) -> float:
    """Where ``value`` lies from ``floor`` (0) to ``ceiling`` (1); NaN where they do not differ."""
    return (value - floor) / (ceiling - floor) if abs(ceiling - floor) > 1e-9 else float("nan")


def beat_grid_scores(truth: dict[str, Any], reference_onsets: np.ndarray | None,
                     duration: float) -> dict[str, float]:
    """Onset F1 and note rate of a line that plays every quarter note at the song's tempo (from
    its ground truth; beats counted from the song's start): the rhythm a listener gets from a
    bassist who only keeps the beat. A model that hears the mix's rhythm must beat it. Empty where
    the truth has no tempo or the reference no onsets."""
    tempo = truth.get("tempo")
    if not tempo:
        return {}
    beat, start = 60.0 / float(tempo), float(truth.get("start_seconds", 0.0))
    grid = np.arange(np.ceil(start / beat - 1e-6) * beat, start + duration, beat) - start
    return onset_scores(grid[(grid >= 0) & (grid < duration)], reference_onsets)


def mix_onset_scores(mix: np.ndarray, sample_rate: int, reference_onsets: np.ndarray | None) -> dict[str, float]:
    """Onset F1 and note rate of the mix's own detected onsets against the bass's: what a bassist
    who attacks whenever the band does would get. Where it is high the mix carries the bass's
    rhythm; where a model scores far below it, the model does not hear that rhythm."""
    return onset_scores(detect_onsets(_mono16k(mix, sample_rate)), reference_onsets)


def truth_onsets(truth: dict[str, Any], duration: float) -> np.ndarray | None:
    """The target bass's ground-truth note onsets from a segment's JSON, where it carries them."""
    notes = ((truth.get("parts") or {}).get("bass") or {}).get("notes")
    return note_onsets(notes, duration)
