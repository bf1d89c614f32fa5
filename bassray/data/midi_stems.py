"""A MIDI file as multitrack stems with ground truth, ready to render (no Ray).

- **Bass**: the tracks with a GM bass program (32-39); where none is marked, the pitched track with
  the lowest median pitch, if that median is at most ``BASS_MEDIAN_MAX`` (E3).
- **Drums**: the drum channel (10). **Others**: grouped by GM family as the stem layouts do.
- **Ground truth** in the synthetic songs' format: every note per stem, the tempo, and chords
  chordified from the sounding pitches of all pitched tracks, beat by beat, over the composer's
  chord vocabulary; so the musical-fit and articulation metrics work on rendered MIDI.
- **Timbre variety**: with a seed, each pitched track's program is redrawn within its GM family.

A file that cannot make a training song raises :class:`MidiSkip` with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi

from bassray.data.compose import NOTE_FIELDS, NOTE_NAMES, QUALITIES, stem_name_for

BASS_MEDIAN_MAX = 52     # E3: a lowest track above this is a tenor voice, not a bass
MIN_CHORD_TONES = 2      # fewer distinct pitch classes in a beat: no chord there
_SUFFIX = {"maj": "", "min": "m", "7": "7", "maj7": "maj7", "m7": "m7", "m7b5": "m7b5"}


class MidiSkip(Exception):
    """This MIDI file cannot make a training song; the message says why."""


@dataclass
class MidiSong:
    name: str
    duration: float
    stems: dict[str, pretty_midi.PrettyMIDI]   # stem name -> its tracks, ready to render
    truth: dict[str, Any]


def _median_pitch(instrument: pretty_midi.Instrument) -> float:
    return float(np.median([n.pitch for n in instrument.notes]))


def _vary_program(program: int, rng: np.random.Generator | None) -> int:
    """Another program of the same GM family of eight (the family decides the stem)."""
    return int(program) if rng is None else (int(program) // 8) * 8 + int(rng.integers(8))


def chordify(instruments: list[pretty_midi.Instrument], beats: np.ndarray, duration: float) -> list[dict]:
    """One chord per beat from the pitch classes sounding in it (weighted by how long they sound),
    the best-matching template of the chord vocabulary; equal neighbours merged."""
    edges = np.append(beats[beats < duration], duration)
    names = list(QUALITIES)
    templates = np.array([[[1.0 if (pc - root) % 12 in QUALITIES[q] else 0.0 for pc in range(12)]
                           for root in range(12)] for q in names])  # [quality, root, 12]
    templates /= np.linalg.norm(templates, axis=-1, keepdims=True)
    chords: list[dict] = []
    for start, end in zip(edges[:-1], edges[1:]):
        weights = np.zeros(12)
        for instrument in instruments:
            for note in instrument.notes:
                overlap = min(note.end, end) - max(note.start, start)
                if overlap > 0:
                    weights[note.pitch % 12] += overlap
        if np.count_nonzero(weights > 0.1 * weights.max(initial=0.0)) < MIN_CHORD_TONES:
            continue
        score = templates @ (weights / np.linalg.norm(weights))
        q, root = np.unravel_index(int(np.argmax(score)), score.shape)
        quality = names[int(q)]
        chord = {"start": round(float(start), 4), "end": round(float(end), 4), "root": int(root),
                 "quality": quality, "intervals": list(QUALITIES[quality]),
                 "symbol": NOTE_NAMES[int(root)] + _SUFFIX[quality]}
        last = chords[-1] if chords else None
        if last and last["root"] == chord["root"] and last["quality"] == quality and last["end"] == chord["start"]:
            last["end"] = chord["end"]
        else:
            chords.append(chord)
    return chords


def midi_song(path: str | Path, *, max_seconds: float | None = None, seed: int | None = None,
              name: str | None = None) -> MidiSong:
    """Read ``path`` and split it into stems with ground truth; :class:`MidiSkip` if it cannot be one."""
    name = name or Path(path).stem
    try:
        midi = pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # mido and pretty_midi raise many kinds on broken files
        raise MidiSkip(f"unreadable MIDI ({type(exc).__name__}: {str(exc)[:120]})") from None
    tracks = [i for i in midi.instruments if i.notes]
    if not tracks:
        raise MidiSkip("no notes")
    pitched = [i for i in tracks if not i.is_drum]
    if not pitched:
        raise MidiSkip("drums only: no pitched part")
    basses = [i for i in pitched if 32 <= i.program <= 39]
    if not basses:
        lowest = min(pitched, key=_median_pitch)
        if _median_pitch(lowest) > BASS_MEDIAN_MAX or len(pitched) < 2:
            raise MidiSkip("no bass part (no GM bass program, and no track low enough to be one)")
        basses = [lowest]
    others = [i for i in tracks if not any(i is b for b in basses)]
    if not others:
        raise MidiSkip("bass only: nothing for a bass to accompany")
    duration = float(midi.get_end_time())
    if max_seconds:
        duration = min(duration, float(max_seconds))
    rng = np.random.default_rng(seed) if seed is not None else None
    groups: dict[str, list[pretty_midi.Instrument]] = {}
    for instrument in tracks:
        is_bass = any(instrument is b for b in basses)
        program = int(instrument.program) if instrument.is_drum else _vary_program(instrument.program, rng)
        if is_bass and not 32 <= program <= 39:  # an unmarked bass line keeps a bass's sound
            program = 32 + (program % 8)
        copy = pretty_midi.Instrument(program=program, is_drum=instrument.is_drum, name=instrument.name)
        copy.notes = [pretty_midi.Note(n.velocity, n.pitch, n.start, min(n.end, duration))
                      for n in instrument.notes if n.start < duration]
        stem = "bass" if is_bass else stem_name_for(program, instrument.is_drum)
        groups.setdefault(stem, []).append(copy)
    tempo = float(midi.get_tempo_changes()[1][0]) if len(midi.get_tempo_changes()[1]) else 120.0
    stems, parts = {}, {}
    for stem, instruments in groups.items():
        song = pretty_midi.PrettyMIDI(initial_tempo=tempo)
        song.instruments = instruments
        stems[stem] = song
        notes = sorted(([int(n.pitch), round(float(n.start), 4), round(float(n.end), 4), int(n.velocity)]
                        for i in instruments for n in i.notes), key=lambda n: (n[1], n[0]))
        parts[stem] = {"programs": [int(i.program) for i in instruments], "is_drum": bool(instruments[0].is_drum),
                       "notes": notes}
    chords = chordify([i for s, group in groups.items() if s != "drums" for i in group if not i.is_drum],
                      midi.get_beats(), duration)
    truth = {"source": "midi", "file": name, "duration": round(duration, 4), "tempo": round(tempo, 3),
             "chords": chords, "programs": {s: p["programs"][0] for s, p in parts.items()},
             "note_fields": list(NOTE_FIELDS), "parts": parts}
    return MidiSong(name=name, duration=duration, stems=stems, truth=truth)


def render_stems(song: MidiSong, soundfont_bytes: bytes, sample_rate: int, channels: int
                 ) -> tuple[dict[str, np.ndarray], float]:
    """Every stem of ``song`` rendered with the SoundFont, scaled by one gain so nothing clips."""
    from bassray.data.synth import mix_gain, render_midi
    stems = {name: render_midi(midi, soundfont_bytes, song.duration, sample_rate, channels)
             for name, midi in song.stems.items()}
    gain = mix_gain(stems)
    return {name: (w * gain).astype(np.float32) for name, w in stems.items()}, gain
