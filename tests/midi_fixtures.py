"""A folder of MIDI files for the render tests: good songs, a corrupt file, an empty one, a
drum-only one and a bass-less one, each written with pretty_midi."""
from __future__ import annotations

from pathlib import Path

import pretty_midi

# (root pitch class, quality intervals) per bar of 2 s at 120 BPM
PROGRESSION = [(0, (0, 4, 7)), (9, (0, 3, 7)), (5, (0, 4, 7)), (7, (0, 4, 7, 10))]
BAR_S = 2.0


def song_midi(bass_program: int | None = 33, bars: int = 4, drums: bool = True,
              keys_octave: int = 60) -> pretty_midi.PrettyMIDI:
    """Block chords on a piano, a bass on each bar's root (two notes a bar), a kick on each beat.
    ``bass_program=None``: the bass line on a cello (program 42), unmarked as a bass."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    keys = pretty_midi.Instrument(program=0, name="piano")
    bass = pretty_midi.Instrument(program=42 if bass_program is None else bass_program, name="bass")
    kit = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
    for bar in range(bars):
        root, intervals = PROGRESSION[bar % len(PROGRESSION)]
        start = bar * BAR_S
        for interval in intervals:
            keys.notes.append(pretty_midi.Note(80, keys_octave + root + interval, start, start + BAR_S))
        for half in (0, 1):
            bass.notes.append(pretty_midi.Note(90, 36 + root, start + half, start + half + 0.8))
        for beat in range(4):
            kit.notes.append(pretty_midi.Note(100, 36, start + beat * 0.5, start + beat * 0.5 + 0.1))
    midi.instruments = [keys, bass] + ([kit] if drums else [])
    return midi


def write_fixture_folder(root: Path) -> dict[str, str | None]:
    """The folder's files and, for each, the reason it must be skipped (None: it renders)."""
    root.mkdir(parents=True, exist_ok=True)
    song_midi().write(str(root / "good-one.mid"))
    (root / "sub").mkdir(exist_ok=True)
    song_midi(bass_program=None, bars=3).write(str(root / "sub" / "good-unmarked-bass.mid"))
    (root / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage" + bytes(range(40)))
    pretty_midi.PrettyMIDI().write(str(root / "empty.mid"))
    drums_only = song_midi()
    drums_only.instruments = [i for i in drums_only.instruments if i.is_drum]
    drums_only.write(str(root / "drums-only.mid"))
    no_bass = song_midi(keys_octave=72)
    no_bass.instruments = [i for i in no_bass.instruments if i.name != "bass"]
    no_bass.write(str(root / "no-bass.mid"))
    return {"good-one.mid": None, "sub/good-unmarked-bass.mid": None, "corrupt.mid": "unreadable",
            "empty.mid": "no notes", "drums-only.mid": "drums only", "no-bass.mid": "no bass part"}
