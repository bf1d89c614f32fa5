"""Procedural composer of multitrack songs: the synthetic dataset and its ground truth (docs/design.md §3).

``compose_song(seed, seconds)`` picks a key, mode, tempo, chord progression, drum groove, comping
instrument and pattern, an optional lead melody and one of several bass patterns and bass GM
programs, all from ``seed`` alone. The :class:`Song` gives one ``pretty_midi.PrettyMIDI`` per stem
(for rendering) and the ground truth (tempo, key, chords with times, notes per stem, programs,
patterns) that evaluation checks generated bass against.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pretty_midi

from bassray.data import patterns as P
from bassray.data.stems import normalize_stem_name

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10]}
QUALITIES = {"maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11),
             "m7": (0, 3, 7, 10), "m7b5": (0, 3, 6, 10)}
_SYMBOL_SUFFIX = {"maj": "", "min": "m", "7": "7", "maj7": "maj7", "m7": "m7", "m7b5": "m7b5"}
# Roman numeral -> (semitones above the tonic, quality).
ROMAN = {"I": (0, "maj"), "ii": (2, "min"), "iii": (4, "min"), "IV": (5, "maj"), "V": (7, "maj"),
         "vi": (9, "min"), "bVII": (10, "maj"), "i": (0, "min"), "III": (3, "maj"),
         "iv": (5, "min"), "v": (7, "min"), "VI": (8, "maj"), "VII": (10, "maj"),
         "I7": (0, "7"), "IV7": (5, "7"), "V7": (7, "7"), "ii7": (2, "m7"), "Imaj7": (0, "maj7"),
         "iim7b5": (2, "m7b5"), "i7": (0, "m7"), "iv7": (5, "m7"), "v7": (7, "m7")}
# Progression family -> mode -> one chord per bar.
PROGRESSIONS = {
    "axis": {"major": "I V vi IV", "minor": "i VI III VII"},
    "doo_wop": {"major": "I vi IV V", "minor": "i iv VI V"},
    "ii_V_I": {"major": "ii7 V7 Imaj7 Imaj7", "minor": "iim7b5 V7 i7 i7"},
    "blues_12bar": {"major": "I7 I7 I7 I7 IV7 IV7 I7 I7 V7 IV7 I7 V7",
                    "minor": "i7 i7 i7 i7 iv7 iv7 i7 i7 v7 iv7 i7 V7"},
    "andalusian": {"major": "I bVII IV I", "minor": "i VII VI V"},
    "canon": {"major": "I V vi iii IV I IV V", "minor": "i v VI III iv i iv V"},
}
BASS_PROGRAMS = (32, 33, 34, 35, 36, 37, 38, 39)  # acoustic, finger, pick, fretless, slap x2, synth x2
# Chosen for short releases in General MIDI SoundFonts (no pads or string ensembles): a stem is
# silent within about half a second of its last note.
COMP_PROGRAMS = (0, 1, 4, 5, 11, 16, 17, 18, 24, 25, 26, 27)
LEAD_PROGRAMS = (0, 11, 26, 40, 56, 66, 71, 73, 80, 81)
# A drumless song's chords: instruments that sustain a chord (piano, organs, guitar, strings, choir).
ENSEMBLE_PROGRAMS = (0, 4, 16, 19, 24, 48, 52)
TEMPO_RANGE = (70, 180)
NOTE_FIELDS = ("pitch", "start", "end", "velocity")


@dataclass
class Part:
    """One instrument's notes inside a stem."""
    role: str                     # "bass", "drums", "comping" or "lead"
    program: int
    is_drum: bool
    notes: list[P.Note] = field(default_factory=list)


@dataclass
class Song:
    seed: int
    duration: float               # seconds
    tempo: float                  # BPM
    tonic: int                    # pitch class, 0 = C
    mode: str
    progression: str
    patterns: dict[str, str | None]
    chords: list[dict[str, Any]]  # start, end, root, quality, symbol, intervals
    stems: dict[str, list[Part]]  # stem name -> parts (two roles may share a stem name)
    gains_db: dict[str, float]
    pans: dict[str, float]        # -1 left .. +1 right
    bass_rest_bars: list[int]

    @property
    def key(self) -> str:
        return NOTE_NAMES[self.tonic]

    def stem_midi(self, stem: str) -> pretty_midi.PrettyMIDI:
        """The stem's parts as MIDI, with a controller event at the song end so a renderer
        covers the whole song (and the last notes' release)."""
        midi = pretty_midi.PrettyMIDI(initial_tempo=self.tempo)
        for part in self.stems[stem]:
            instrument = pretty_midi.Instrument(program=part.program, is_drum=part.is_drum, name=part.role)
            instrument.notes = [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e)
                                for p, s, e, v in part.notes]
            instrument.control_changes = [pretty_midi.ControlChange(7, 100, 0.0),
                                          pretty_midi.ControlChange(7, 100, self.duration)]
            midi.instruments.append(instrument)
        return midi

    def ground_truth(self) -> dict[str, Any]:
        """JSON-ready ground truth; ``parts[stem]`` holds the stem's programs, roles and notes as
        ``[pitch, start s, end s, velocity]`` (see note_fields)."""
        stems = {}  # "parts" in the JSON: shard metadata keeps "stems" for the list of stem names
        for name, parts in self.stems.items():
            notes = sorted((n for part in parts for n in part.notes), key=lambda n: (n[1], n[0]))
            stems[name] = {"programs": [p.program for p in parts], "roles": [p.role for p in parts],
                           "is_drum": any(p.is_drum for p in parts),
                           "notes": [[p, round(s, 4), round(e, 4), v] for p, s, e, v in notes]}
        return {"source": "synthetic", "seed": self.seed, "duration": self.duration,
                "tempo": self.tempo, "key": self.key, "tonic": self.tonic, "mode": self.mode,
                "beats_per_bar": P.BEATS_PER_BAR, "progression": self.progression,
                "patterns": dict(self.patterns), "chords": [dict(c) for c in self.chords],
                "programs": {name: parts[0].program for name, parts in self.stems.items()},
                "gains_db": dict(self.gains_db), "pans": dict(self.pans),
                "bass_rest_bars": list(self.bass_rest_bars), "note_fields": list(NOTE_FIELDS),
                "parts": stems}


def make_chord(tonic: int, numeral: str) -> dict[str, Any]:
    offset, quality = ROMAN[numeral]
    root = (tonic + offset) % 12
    return {"root": root, "quality": quality, "intervals": list(QUALITIES[quality]),
            "symbol": NOTE_NAMES[root] + _SYMBOL_SUFFIX[quality], "numeral": numeral}


def stem_name_for(program: int, is_drum: bool = False) -> str:
    """Vocabulary stem name of a GM program (piano, keys, guitar, synth, winds, ...)."""
    if is_drum:
        return "drums"
    if 32 <= program <= 39:
        return "bass"
    return normalize_stem_name(pretty_midi.program_to_instrument_class(program))


def _pick(rng: np.random.Generator, options) -> Any:
    return options[int(rng.integers(len(options)))]


def _rest_bars(rng: np.random.Generator, n_bars: int) -> list[int]:
    """A block of 1-2 bars of break where bass and drums rest (silence handling)."""
    if n_bars < 3:
        return []
    length = 2 if n_bars >= 12 and rng.random() < 0.5 else 1
    start = int(rng.integers(0, n_bars - length + 1))
    return list(range(start, start + length))


def _clip(notes: list[P.Note], duration: float) -> list[P.Note]:
    """Drop notes starting in the last 50 ms and cut the rest at the song end."""
    return [(p, s, min(e, duration), v) for p, s, e, v in notes if s < duration - 0.05]


def compose_song(seed: int, seconds: float, groove: str | None = None) -> Song:
    """A whole song of ``seconds`` from ``seed`` (same seed and length -> same song); ``groove``
    sets the drum groove instead of drawing it (the rest of the song is what ``seed`` draws)."""
    rng, (tempo, tonic, mode, family, cycle) = _start(seed, seconds, "drum groove", groove, sorted(P.DRUM_GROOVES))
    # Fast songs sometimes hold each chord for two bars.
    bars_per_chord = 2 if tempo >= 130 and family != "blues_12bar" and rng.random() < 0.5 else 1
    drawn_groove = _pick(rng, sorted(P.DRUM_GROOVES))   # drawn either way: the same seed, the same rest
    groove = groove if groove is not None else drawn_groove
    bass_pattern = _pick(rng, P.GROOVE_BASS_PATTERNS[groove])
    comp_pattern = _pick(rng, P.COMP_PATTERNS)
    bass_program, comp_program = _pick(rng, BASS_PROGRAMS), _pick(rng, COMP_PROGRAMS)
    lead_program = _pick(rng, LEAD_PROGRAMS) if rng.random() < 0.7 else None

    beat = 60.0 / tempo
    bar = P.BEATS_PER_BAR * beat
    n_bars = int(np.ceil(seconds / bar - 1e-9))
    drum_start_bar = 1 if n_bars >= 4 and rng.random() < 0.4 else 0   # some songs open without drums
    # The bass enters with the drums and rests in a break where the drums stop too (stop-time), so
    # its silences are audible in the mix; comping and lead play on.
    rest_bars = sorted(set(range(drum_start_bar)) | set(_rest_bars(rng, n_bars)))
    kick_beats = sorted(P.DRUM_GROOVES[groove][P.KICK])
    scale = MODES[mode]

    chords, bass, drums, comp, lead = [], [], [], [], []
    melody_pitch, lead_phrase = P.LEAD_LOW + 7 + tonic, False
    for b in range(n_bars):
        t0 = b * bar
        chord = cycle[(b // bars_per_chord) % len(cycle)]
        next_chord = cycle[((b + 1) // bars_per_chord) % len(cycle)]
        _extend_chords(chords, chord, t0, t0 + bar)
        if b >= drum_start_bar and b not in rest_bars:
            phrase_bar = (b - drum_start_bar) % 8
            # No crash just before a break: its tail would ring on into the silence.
            crash = phrase_bar == 0 and b + 1 not in rest_bars
            drums += P.drum_bar(groove, t0, beat, rng, crash=crash, fill=phrase_bar == 7)
        if b not in rest_bars:
            bass += P.bass_bar(bass_pattern, chord, next_chord, kick_beats, t0, beat, rng)
        comp += P.comp_bar(comp_pattern, chord, t0, beat, rng)
        lead_phrase, melody_pitch = _lead_bar(lead, lead_program, lead_phrase, b, chord, scale, tonic,
                                              melody_pitch, t0, beat, rng)

    roles = [("bass", bass_program, False, bass), ("drums", 0, True, drums),
             ("comping", comp_program, False, comp)]
    patterns = {"bass": bass_pattern, "drums": groove, "comping": comp_pattern,
                "lead": "melody" if lead_program is not None else None,
                "bars_per_chord": str(bars_per_chord)}
    return _song(seed, seconds, tempo, tonic, mode, family, patterns, chords, roles, lead_program, lead,
                 rest_bars, rng)


def compose_ensemble_song(seed: int, seconds: float, rhythm: str | None = None) -> Song:
    """A song without drums (a hymn, a chamber piece, a ballad): block chords on a sustaining
    instrument attacked with the bass, a chord a beat, half bar or bar (``rhythm``, else drawn), an
    optional lead melody, and a legato bass that plays throughout. Same seed, same song."""
    rng, (tempo, tonic, mode, family, cycle) = _start(seed, seconds, "ensemble rhythm", rhythm, P.ENSEMBLE_RHYTHMS)
    drawn_rhythm = _pick(rng, P.ENSEMBLE_RHYTHMS)
    rhythm = rhythm if rhythm is not None else drawn_rhythm
    bass_program, upper_program = _pick(rng, BASS_PROGRAMS), _pick(rng, ENSEMBLE_PROGRAMS)
    lead_program = _pick(rng, LEAD_PROGRAMS) if rng.random() < 0.7 else None
    beat = 60.0 / tempo
    bar = P.BEATS_PER_BAR * beat
    scale = MODES[mode]
    chords, bass, comp, lead = [], [], [], []
    melody_pitch, lead_phrase = P.LEAD_LOW + 7 + tonic, False
    for b in range(int(np.ceil(seconds / bar - 1e-9))):
        t0 = b * bar
        chord, next_chord = cycle[b % len(cycle)], cycle[(b + 1) % len(cycle)]
        _extend_chords(chords, chord, t0, t0 + bar)
        bass += P.ensemble_bass_bar(rhythm, chord, next_chord, scale, tonic, t0, beat, rng)
        comp += P.ensemble_comp_bar(rhythm, chord, t0, beat, rng)
        lead_phrase, melody_pitch = _lead_bar(lead, lead_program, lead_phrase, b, chord, scale, tonic,
                                              melody_pitch, t0, beat, rng)
    roles = [("bass", bass_program, False, bass), ("comping", upper_program, False, comp)]
    patterns = {"bass": f"ensemble_{rhythm}", "drums": None, "comping": f"ensemble_{rhythm}",
                "lead": "melody" if lead_program is not None else None, "bars_per_chord": "1"}
    return _song(seed, seconds, tempo, tonic, mode, family, patterns, chords, roles, lead_program, lead,
                 [], rng)


def _start(seed: int, seconds: float, kind: str, chosen: str | None, options) -> tuple[np.random.Generator, tuple]:
    """The song's generator and its harmony (:func:`_harmony`), after checking the length and ``chosen``."""
    if seconds <= 0:
        raise ValueError(f"song length must be positive, got {seconds} s")
    if chosen is not None and chosen not in options:
        raise ValueError(f"unknown {kind} {chosen!r}; choose one of {', '.join(options)}")
    rng = np.random.default_rng(seed)
    return rng, _harmony(rng)


def _harmony(rng: np.random.Generator) -> tuple[float, int, str, str, list[dict[str, Any]]]:
    """Tempo, tonic, mode, progression family and its chord cycle, drawn in this order."""
    tempo = float(rng.integers(TEMPO_RANGE[0], TEMPO_RANGE[1] + 1))
    tonic, mode = int(rng.integers(12)), _pick(rng, ("major", "minor"))
    family = _pick(rng, sorted(PROGRESSIONS))
    return tempo, tonic, mode, family, [make_chord(tonic, n) for n in PROGRESSIONS[family][mode].split()]


def _extend_chords(chords: list[dict[str, Any]], chord: dict[str, Any], start: float, end: float) -> None:
    if chords and chords[-1]["symbol"] == chord["symbol"]:
        chords[-1]["end"] = end          # a chord held on: one span
    else:
        chords.append(dict(chord, start=start, end=end))


def _lead_bar(lead: list[P.Note], lead_program: int | None, lead_phrase: bool, b: int, chord: dict,
              scale: list[int], tonic: int, melody_pitch: int, t0: float, beat: float,
              rng: np.random.Generator) -> tuple[bool, int]:
    """Bar ``b`` of the lead melody (2-bar phrases, some silent) appended to ``lead``."""
    if b % 2 == 0:
        lead_phrase = lead_program is not None and rng.random() < 0.6
    if lead_phrase:
        notes, melody_pitch = P.melody_bar(chord, scale, tonic, melody_pitch, t0, beat, rng)
        lead += notes
    return lead_phrase, melody_pitch


def _song(seed: int, seconds: float, tempo: float, tonic: int, mode: str, family: str,
          patterns: dict[str, str | None], chords: list[dict[str, Any]], roles: list, lead_program: int | None,
          lead: list[P.Note], rest_bars: list[int], rng: np.random.Generator) -> Song:
    duration = float(seconds)
    for c in chords:
        c["start"], c["end"] = round(c["start"], 4), round(min(c["end"], duration), 4)
    chords = [c for c in chords if c["start"] < duration]
    stems: dict[str, list[Part]] = {}
    if lead_program is not None:
        roles = roles + [("lead", lead_program, False, lead)]
    for role, program, is_drum, notes in roles:
        # Two roles of one instrument family (e.g. piano comping and piano lead) share a stem.
        stems.setdefault(stem_name_for(program, is_drum), []).append(
            Part(role, program, is_drum, _clip(notes, duration)))

    gains_db = {name: 0.0 if name == "drums" else round(float(rng.uniform(-4.0, 2.0)), 2)
                for name in stems}
    pans = {name: 0.0 if name in ("bass", "drums") else round(float(rng.uniform(-0.5, 0.5)), 2)
            for name in stems}
    return Song(seed=seed, duration=duration, tempo=tempo, tonic=tonic, mode=mode,
                progression=family, patterns=patterns, chords=chords, stems=stems,
                gains_db=gains_db, pans=pans, bass_rest_bars=rest_bars)


def cut_ground_truth(truth: dict[str, Any], start: float, end: float) -> dict[str, Any]:
    """The ground truth of ``[start, end)`` seconds of a song, re-timed to start at 0."""
    def cut(items_start: float, items_end: float) -> tuple[float, float] | None:
        s, e = max(items_start, start), min(items_end, end)
        return (round(s - start, 4), round(e - start, 4)) if e > s else None

    out = dict(truth, duration=round(end - start, 4), start_seconds=round(start, 4))
    chords = []
    for chord in truth["chords"]:
        span = cut(chord["start"], chord["end"])
        if span:
            chords.append(dict(chord, start=span[0], end=span[1]))
    out["chords"] = chords
    stems = {}
    for name, stem in truth["parts"].items():
        notes = []
        for pitch, s, e, v in stem["notes"]:
            span = cut(s, e)
            if span:
                notes.append([pitch, span[0], span[1], v])
        stems[name] = dict(stem, notes=notes)
    out["parts"] = stems
    return out
