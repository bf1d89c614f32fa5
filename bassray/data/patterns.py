"""Note patterns for the synthetic-song composer: drum grooves, bass lines, comping and melody.

Every generator writes one bar: it gets the bar's start time and beat length in seconds and
returns notes as ``(pitch, start, end, velocity)`` tuples. Bass lines are monophonic (a note ends
before the next starts) so the bass ground truth is one pitch per instant.
"""
from __future__ import annotations

import numpy as np

Note = tuple[int, float, float, int]  # (MIDI pitch, start s, end s, velocity)

BEATS_PER_BAR = 4
BASS_LOW, BASS_HIGH = 28, 55          # E1 .. G3: above torchcrepe's 31.7 Hz floor
COMP_LOW = 55                          # comping voicings start at G3, above most bass notes
LEAD_LOW, LEAD_HIGH = 64, 86

# GM drum notes.
KICK, SNARE, SIDE_STICK, CLAP, CLOSED_HAT, PEDAL_HAT, OPEN_HAT, CRASH, RIDE, LOW_TOM, HIGH_TOM = (
    36, 38, 37, 39, 42, 44, 46, 49, 51, 45, 50)
# How long each drum sound rings (s): drum note-offs are ignored by GM players, so the ground truth
# stores the audible length instead of the MIDI gate.
DRUM_RING = {KICK: 0.3, SNARE: 0.3, SIDE_STICK: 0.15, CLAP: 0.25, CLOSED_HAT: 0.1, PEDAL_HAT: 0.1,
             OPEN_HAT: 0.4, CRASH: 1.4, RIDE: 1.0, LOW_TOM: 0.4, HIGH_TOM: 0.4}

_TRIPLET = [0, 2 / 3]
# Groove name -> drum note -> positions in beats within the bar. No two grooves share their kick and
# time-keeping cymbals (TIMEKEEPERS) yet take bass lines of different rhythms: a bass line follows
# those, and with rock's kick and eighth hats the half-time groove (snare alone apart) left the model
# to guess between rock's eighths and a kick-locked line (docs/articulation.md). Half-time hats play
# quarter notes, as half-time feels often do.
DRUM_GROOVES: dict[str, dict[int, list[float]]] = {
    "rock": {KICK: [0, 2.5], SNARE: [1, 3], CLOSED_HAT: [i / 2 for i in range(8)]},
    "four_on_floor": {KICK: [0, 1, 2, 3], CLAP: [1, 3], OPEN_HAT: [0.5, 1.5, 2.5, 3.5]},
    "half_time": {KICK: [0, 2.5], SNARE: [2], CLOSED_HAT: [0, 1, 2, 3]},
    "funk": {KICK: [0, 0.75, 2.5], SNARE: [1, 3], CLOSED_HAT: [i / 4 for i in range(16)]},
    "shuffle": {KICK: [0, 2], SNARE: [1, 3], CLOSED_HAT: [b + t for b in range(4) for t in _TRIPLET]},
    "jazz_ride": {KICK: [0], SIDE_STICK: [3], PEDAL_HAT: [1, 3],
                  RIDE: [0, 1, 1 + 2 / 3, 2, 3, 3 + 2 / 3]},
}
# The drums that keep time for a bass line: the kick and the cymbals that mark the subdivision.
TIMEKEEPERS = (KICK, CLOSED_HAT, PEDAL_HAT, OPEN_HAT, RIDE)
_ACCENT = {KICK: 105, SNARE: 100, CLAP: 95, SIDE_STICK: 90, CLOSED_HAT: 95, PEDAL_HAT: 85,
           OPEN_HAT: 90, RIDE: 95, CRASH: 100, LOW_TOM: 95, HIGH_TOM: 95}

BASS_PATTERNS = ("root", "root_fifth", "octaves", "walking", "arpeggio", "syncopated", "eighths")
# The bass locks to the drums, as a rhythm section does: each groove takes the bass lines that
# share its rhythm, so the rhythm a bass line plays is audible in the mix (the drums) and a model can
# follow it. Kick-locked lines ("syncopated") go with the sparse grooves, eighth-note lines with
# rock's straight eighths, quarter-note lines with four-on-the-floor, the shuffle and the ride.
GROOVE_BASS_PATTERNS: dict[str, tuple[str, ...]] = {
    "rock": ("eighths", "octaves", "arpeggio"),
    "four_on_floor": ("root_fifth", "root"),
    "half_time": ("syncopated",),
    "funk": ("syncopated",),
    "shuffle": ("walking", "root_fifth"),
    "jazz_ride": ("walking",),
}
COMP_PATTERNS = ("sustained", "quarters", "offbeats", "arpeggiated", "charleston")
# Songs without drums (hymns, chamber music, ballads) take one of these rhythms: the chords and the
# bass attack together, a chord a beat, a half bar or a bar, so the bass's rhythm is audible in the
# upper parts alone, as a chorale's is (docs/results.md, "Real compositions").
_ENSEMBLE_BEATS = {"quarters": 1, "halves": 2, "whole": 4}   # beats between attacks
ENSEMBLE_RHYTHMS = tuple(_ENSEMBLE_BEATS)


def _vel(rng: np.random.Generator, base: int, spread: int = 8) -> int:
    return int(np.clip(base + rng.integers(-spread, spread + 1), 1, 127))


def drum_bar(groove: str, t0: float, beat: float, rng: np.random.Generator,
             crash: bool, fill: bool) -> list[Note]:
    """One bar of ``groove``; ``crash`` opens a phrase, ``fill`` swaps beats 3-4 for a tom fill."""
    notes = []
    for drum, positions in DRUM_GROOVES[groove].items():
        for pos in positions:
            if fill and pos >= 2:
                continue
            start = t0 + pos * beat
            notes.append((drum, start, start + DRUM_RING[drum], _vel(rng, _ACCENT[drum])))
    if fill:
        for i in range(8):  # 16th-note toms, high to low
            start = t0 + (2 + i / 4) * beat
            tom = HIGH_TOM if i < 4 else LOW_TOM
            notes.append((tom, start, start + DRUM_RING[tom], _vel(rng, 90)))
    if crash:
        notes.append((CRASH, t0, t0 + DRUM_RING[CRASH], _vel(rng, 100)))
    return notes


def bass_register(pitch_class: int) -> int:
    """The chord root as a bass note in E1..D#2, leaving an octave and a fifth above in range."""
    return BASS_LOW + (pitch_class - BASS_LOW) % 12


def _monophonic(events: list[tuple[int, float, float]], t0: float, beat: float,
                rng: np.random.Generator, gate: float, accent_beats: bool = True) -> list[Note]:
    """(pitch, start beat, length beats) -> notes clipped so each ends before the next starts."""
    notes = []
    for i, (pitch, pos, length) in enumerate(events):
        limit = events[i + 1][1] - pos if i + 1 < len(events) else BEATS_PER_BAR - pos
        length = min(length, limit) * gate
        on_beat = accent_beats and abs(pos - round(pos)) < 1e-6
        velocity = _vel(rng, 105 if on_beat else 92)
        notes.append((int(np.clip(pitch, BASS_LOW, BASS_HIGH)), t0 + pos * beat,
                      t0 + (pos + length) * beat, velocity))
    return notes


def bass_bar(pattern: str, chord: dict, next_chord: dict, kick_beats: list[float], t0: float,
             beat: float, rng: np.random.Generator) -> list[Note]:
    """One bar of bass line ``pattern`` over ``chord`` (dict with 'root' pitch class, 'intervals')."""
    root = bass_register(chord["root"])
    tones = [root + i for i in chord["intervals"]]          # chord tones upward from the root
    third, fifth = tones[1], root + 7
    if pattern == "root":
        step = 2 if beat > 0.6 else 1                        # half notes at slow tempi
        events = [(root, float(b), step) for b in range(0, BEATS_PER_BAR, step)]
        return _monophonic(events, t0, beat, rng, gate=0.92)
    if pattern == "root_fifth":
        events = [(root if b % 2 == 0 else fifth, float(b), 1) for b in range(BEATS_PER_BAR)]
        return _monophonic(events, t0, beat, rng, gate=0.88)
    if pattern == "octaves":
        events = [(root + 12 * (i % 2), i / 2, 0.5) for i in range(2 * BEATS_PER_BAR)]
        return _monophonic(events, t0, beat, rng, gate=0.8)
    if pattern == "eighths":
        events = [(root, i / 2, 0.5) for i in range(2 * BEATS_PER_BAR)]
        return _monophonic(events, t0, beat, rng, gate=0.85)
    if pattern == "walking":
        target = bass_register(next_chord["root"])
        approach = target + (1 if rng.random() < 0.5 else -1)   # chromatic approach to the next root
        middle = [int(rng.choice(tones[1:])), int(rng.choice([fifth, root + 12, third]))]
        events = [(root, 0.0, 1), (middle[0], 1.0, 1), (middle[1], 2.0, 1), (approach, 3.0, 1)]
        return _monophonic(events, t0, beat, rng, gate=0.9)
    if pattern == "arpeggio":
        cycle = tones[:4] if len(tones) >= 4 else tones + [root + 12]
        order = cycle + cycle[-2:0:-1]                           # up and back down
        events = [(order[i % len(order)], i / 2, 0.5) for i in range(2 * BEATS_PER_BAR)]
        return _monophonic(events, t0, beat, rng, gate=0.85)
    if pattern == "syncopated":
        # Lock to the kick drum: a note on every kick, root mostly, octave or fifth for colour.
        events = []
        for pos in kick_beats:
            pitch = root if rng.random() < 0.65 else int(rng.choice([root + 12, fifth]))
            events.append((pitch, pos, 1.0))
        if not events or events[0][1] > 0:
            events.insert(0, (root, 0.0, 1.0))
        return _monophonic(events, t0, beat, rng, gate=0.7)
    raise ValueError(f"unknown bass pattern {pattern!r}; choose one of {BASS_PATTERNS}")


def voicing(chord: dict) -> list[int]:
    """Close voicing of the chord's pitch classes from G3 upward."""
    return sorted(COMP_LOW + (chord["root"] + i - COMP_LOW) % 12 for i in chord["intervals"])


def comp_bar(pattern: str, chord: dict, t0: float, beat: float,
             rng: np.random.Generator) -> list[Note]:
    """One bar of chords played in ``pattern``."""
    pitches = voicing(chord)
    if pattern == "sustained":
        hits = [(0.0, 3.9)]
    elif pattern == "quarters":
        hits = [(float(b), 0.85) for b in range(BEATS_PER_BAR)]
    elif pattern == "offbeats":
        hits = [(b + 0.5, 0.35) for b in range(BEATS_PER_BAR)]
    elif pattern == "charleston":
        hits = [(0.0, 1.2), (1.5, 0.4), (2.0, 1.2), (3.5, 0.4)]
    elif pattern == "arpeggiated":
        order = pitches + pitches[-2:0:-1]
        return [(order[i % len(order)], t0 + i * beat / 2, t0 + (i / 2 + 0.9) * beat,
                 _vel(rng, 80)) for i in range(2 * BEATS_PER_BAR)]
    else:
        raise ValueError(f"unknown comping pattern {pattern!r}; choose one of {COMP_PATTERNS}")
    return [(p, t0 + pos * beat, t0 + (pos + length) * beat, _vel(rng, 78))
            for pos, length in hits for p in pitches]


_RHYTHM_CELLS = ([1, 1, 1, 1], [2, 1, 1], [1.5, 0.5, 2], [0.5] * 8, [1, 0.5, 0.5, 2], [3, 1],
                 [0.5, 0.5, 1, 2])


def melody_bar(chord: dict, scale: list[int], tonic: int, previous: int, t0: float, beat: float,
               rng: np.random.Generator) -> tuple[list[Note], int]:
    """One bar of melody: a random walk on the scale, chord tones on the beat; returns the notes
    and the last pitch (the next bar continues from it)."""
    candidates = [p for p in range(LEAD_LOW, LEAD_HIGH + 1) if (p - tonic) % 12 in scale]
    chord_pcs = {(chord["root"] + i) % 12 for i in chord["intervals"]}
    cell = _RHYTHM_CELLS[int(rng.integers(len(_RHYTHM_CELLS)))]
    notes, pos, pitch = [], 0.0, previous
    for length in cell:
        index = int(np.argmin([abs(c - pitch) for c in candidates]))
        index = int(np.clip(index + rng.integers(-2, 3), 0, len(candidates) - 1))
        pitch = candidates[index]
        if abs(pos - round(pos)) < 1e-6 and pitch % 12 not in chord_pcs:
            # Strong beats land on the nearest chord tone.
            tones = [c for c in candidates if c % 12 in chord_pcs]
            pitch = min(tones, key=lambda c: abs(c - pitch))
        if rng.random() > 0.12:  # a few rests inside phrases
            notes.append((pitch, t0 + pos * beat, t0 + (pos + length * 0.9) * beat, _vel(rng, 90)))
        pos += length
    return notes, pitch


def _ensemble_step(rhythm: str) -> int:
    if rhythm not in _ENSEMBLE_BEATS:
        raise ValueError(f"unknown ensemble rhythm {rhythm!r}; choose one of {ENSEMBLE_RHYTHMS}")
    return _ENSEMBLE_BEATS[rhythm]


def ensemble_bass_bar(rhythm: str, chord: dict, next_chord: dict, scale: list[int], tonic: int,
                      t0: float, beat: float, rng: np.random.Generator) -> list[Note]:
    """One bar of a drumless song's bass in ``rhythm``: the root on the downbeat, then chord tones,
    and in quarters the last beat a scale step into the next chord's root, held legato."""
    step = _ensemble_step(rhythm)
    root = bass_register(chord["root"])
    tones = [root + i for i in chord["intervals"][1:3]] + [root + 12]
    events = [(root, 0.0, step)]
    for pos in range(step, BEATS_PER_BAR, step):
        events.append((int(rng.choice(tones)), float(pos), step))
    if rhythm == "quarters":
        target = bass_register(next_chord["root"])
        steps = [p for p in (target - 2, target - 1, target + 1, target + 2) if (p - tonic) % 12 in scale]
        events[-1] = (int(rng.choice(steps or [target + 7])), 3.0, 1)
    return _monophonic(events, t0, beat, rng, gate=0.95)


def ensemble_comp_bar(rhythm: str, chord: dict, t0: float, beat: float,
                      rng: np.random.Generator) -> list[Note]:
    """One bar of block chords attacked with the bass: on every beat, half bar or bar."""
    step = _ensemble_step(rhythm)
    return [(p, t0 + pos * beat, t0 + (pos + step * 0.95) * beat, _vel(rng, 78))
            for pos in range(0, BEATS_PER_BAR, step) for p in voicing(chord)]
