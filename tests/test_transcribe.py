"""MIDI export round trip: a known bass line rendered with a General MIDI bass, transcribed and
written as MIDI, gives back its notes (onset within 50 ms, pitch exact) for at least 90 % of them."""
from __future__ import annotations

import io

import numpy as np
import pretty_midi
import pytest

from bassray.data.synth import read_soundfont, render_midi
from bassray.transcribe import Note, midi_bytes, note_recovery, notes_to_midi, transcribe

RATE = 16000


def bass_line(rng: np.random.Generator, count: int = 24) -> list[Note]:
    """Eighths and quarters at 120 BPM between E1 and G3, with rests and repeated pitches."""
    notes, t = [], 0.25
    for _ in range(count):
        length = float(rng.choice([0.25, 0.5]))
        pitch = int(rng.integers(28, 56))
        if notes and rng.random() < 0.2:
            pitch = notes[-1].pitch  # a repeated note: only the attack separates it
        notes.append(Note(t, t + 0.9 * length, pitch, 100))
        t += length + (0.25 if rng.random() < 0.15 else 0.0)
    return notes


@pytest.mark.parametrize("seed", [0, 1])
def test_rendered_bass_line_round_trips_through_midi(seed):
    truth = bass_line(np.random.default_rng(seed))
    seconds = truth[-1].end + 0.5
    audio = render_midi(notes_to_midi(truth), read_soundfont(None), seconds, RATE, 1)
    found = transcribe(audio, RATE)
    recovered = note_recovery(truth, found)
    assert recovered >= 0.9, (recovered, len(truth), len(found))
    # The written file holds exactly the transcribed notes.
    midi = pretty_midi.PrettyMIDI(io.BytesIO(midi_bytes(found)))
    [track] = midi.instruments
    assert track.program == 33 and not track.is_drum
    assert [n.pitch for n in track.notes] == [n.pitch for n in found]
    assert np.allclose([n.start for n in track.notes], [n.start for n in found], atol=0.005)  # MIDI ticks


def test_silence_has_no_notes_and_a_transposed_line_does_not_match():
    assert transcribe(np.zeros(RATE, np.float32), RATE) == []
    truth = bass_line(np.random.default_rng(2), count=12)
    audio = render_midi(notes_to_midi(truth), read_soundfont(None), truth[-1].end + 0.5, RATE, 1)
    tritone_up = [Note(n.start, n.end, n.pitch + 6, n.velocity) for n in truth]
    assert note_recovery(tritone_up, transcribe(audio, RATE)) < 0.2
