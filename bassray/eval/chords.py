"""Chords estimated from audio, for stems that carry no annotations: a chroma-template decoder
smoothed by Viterbi (librosa), over the qualities the synthetic songs use, plus "no chord".

The estimate comes from the mix (the non-bass stems), never from the bass being scored, so a bass
line cannot agree with chords that it made itself. ``chord_accuracy`` checks an estimate against
annotated chords with mir_eval's root and major/minor comparisons.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bassray.data.compose import NOTE_NAMES, QUALITIES

# The synthetic songs' chord qualities (semitones above the root), in Harte's notation for mir_eval.
HARTE = {"maj": "maj", "min": "min", "7": "7", "maj7": "maj7", "m7": "min7", "m7b5": "hdim7"}
HOP_SECONDS = 0.128
# Chords hold for about a bar or more: the chance of staying in one per 128 ms frame.
SELF_TRANSITION = 0.97
# A triad is the simpler reading of a chroma that fits a seventh chord almost as well.
SEVENTH_PRIOR = 0.8
NO_CHORD_LEVEL_DB = -50.0


def _states() -> list[tuple[int, str]]:
    return [(root, quality) for quality in QUALITIES for root in range(12)]


def _templates() -> np.ndarray:
    """[states, 12] unit-norm pitch-class templates (the no-chord state is apart)."""
    out = np.zeros((len(_states()), 12))
    for i, (root, quality) in enumerate(_states()):
        out[i, [(root + k) % 12 for k in QUALITIES[quality]]] = 1.0
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def estimate_chords(mix: np.ndarray, sample_rate: int) -> list[dict[str, Any]]:
    """Chords of ``mix`` ([C, T] or [T]) as ``{start, end, root, quality, intervals}`` segments in
    seconds (the annotations' format), silence and chordless passages left out."""
    import librosa
    mono = np.asarray(mix, dtype=np.float32)
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono
    hop = int(round(HOP_SECONDS * sample_rate / 512)) * 512
    harmonic = librosa.effects.harmonic(mono)  # drums blur the chroma
    chroma = librosa.feature.chroma_cqt(y=harmonic, sr=sample_rate, hop_length=hop)  # [12, frames]
    rms = librosa.feature.rms(y=mono, frame_length=2 * hop, hop_length=hop)[0]
    frames = min(chroma.shape[1], rms.shape[0])
    chroma, rms = chroma[:, :frames], rms[:frames]
    norm = chroma / np.maximum(np.linalg.norm(chroma, axis=0, keepdims=True), 1e-9)
    similarity = _templates() @ norm  # cosine, [states, frames]
    prior = np.array([1.0 if len(QUALITIES[q]) == 3 else SEVENTH_PRIOR for _, q in _states()])[:, None]
    score = np.exp(8.0 * similarity) * prior
    level_db = 20 * np.log10(np.maximum(rms, 1e-9) / max(float(rms.max()), 1e-9))
    quiet = level_db < NO_CHORD_LEVEL_DB
    no_chord = np.where(quiet, score.max(axis=0) * 10.0, np.exp(8.0 * 0.5))[None, :]
    probs = np.vstack([score, no_chord])
    probs /= probs.sum(axis=0, keepdims=True)
    n_states = probs.shape[0]
    transition = librosa.sequence.transition_loop(n_states, SELF_TRANSITION)
    path = librosa.sequence.viterbi_discriminative(probs, transition)
    times = np.arange(frames + 1) * hop / sample_rate
    chords, states = [], _states()
    start = 0
    for i in range(1, frames + 1):
        if i == frames or path[i] != path[start]:
            if path[start] < len(states):
                root, quality = states[path[start]]
                chords.append({"start": round(float(times[start]), 4), "end": round(float(times[i]), 4),
                               "root": root, "quality": quality, "intervals": list(QUALITIES[quality]),
                               "symbol": f"{NOTE_NAMES[root]}:{HARTE[quality]}"})
            start = i
    return chords


def _harte(chord: dict[str, Any]) -> str:
    intervals = tuple(int(i) for i in chord["intervals"])
    quality = next((q for q, iv in QUALITIES.items() if iv == intervals), "maj" if 4 in intervals else "min")
    return f"{NOTE_NAMES[int(chord['root']) % 12]}:{HARTE[quality]}"


def _labels(chords: Sequence[dict[str, Any]], duration: float) -> tuple[np.ndarray, list[str]]:
    """mir_eval intervals and Harte labels covering [0, duration), gaps as "N"."""
    items, t = [], 0.0
    for chord in sorted(chords, key=lambda c: c["start"]):
        start, end = max(float(chord["start"]), t), min(float(chord["end"]), duration)
        if end <= start:
            continue
        if start > t:
            items.append((t, start, "N"))
        items.append((start, end, _harte(chord)))
        t = end
    if t < duration:
        items.append((t, duration, "N"))
    return np.array([(s, e) for s, e, _ in items]), [label for _, _, label in items]


def chord_accuracy(estimated: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]],
                   duration: float) -> dict[str, float]:
    """Duration-weighted agreement of ``estimated`` with ``reference`` chords (mir_eval): ``root``,
    ``majmin`` (root and major/minor third) and ``thirds``, over the reference's chord time."""
    import mir_eval
    ref_iv, ref_labels = _labels(reference, duration)
    est_iv, est_labels = _labels(estimated, duration)
    est_iv, est_labels = mir_eval.util.adjust_intervals(est_iv, est_labels, ref_iv.min(), ref_iv.max(),
                                                        mir_eval.chord.NO_CHORD, mir_eval.chord.NO_CHORD)
    intervals, ref, est = mir_eval.util.merge_labeled_intervals(ref_iv, ref_labels, est_iv, est_labels)
    weights = mir_eval.util.intervals_to_durations(intervals)
    out = {}
    for name, compare in (("root", mir_eval.chord.root), ("majmin", mir_eval.chord.majmin),
                          ("thirds", mir_eval.chord.thirds)):
        out[name] = float(mir_eval.chord.weighted_accuracy(compare(ref, est), weights))
    return out
