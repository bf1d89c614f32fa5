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


def _song_near(tempo: float):
    """A synthetic song whose tempo is within 8 BPM of ``tempo`` (songs start on a beat at 0 s)."""
    from bassray.data.compose import compose_song
    for seed in range(400):
        song = compose_song(seed, 10.0)
        if abs(song.tempo - tempo) <= 8:
            return song
    raise AssertionError(f"no song near {tempo} BPM")


@pytest.mark.parametrize("tempo", [75, 120, 165])
def test_exported_notes_fall_on_the_songs_beats(tempo):
    from bassray.data.synth import render_song
    from bassray.transcribe import song_beats
    song = _song_near(tempo)
    stems, _ = render_song(song, read_soundfont(None), RATE, 1)
    mix = sum(w for name, w in stems.items() if name != "bass")
    [bass] = [p for p in song.stems["bass"] if p.role == "bass"] or song.stems["bass"]
    truth = [Note(s, e, p, v) for p, s, e, v in bass.notes]
    midi = pretty_midi.PrettyMIDI(io.BytesIO(midi_bytes(truth, beats=song_beats(mix, RATE))))
    [track] = midi.instruments
    in_file = np.array([midi.time_to_tick(n.start) for n in track.notes]) / midi.resolution  # beats
    file_tempo = float(np.median(midi.get_tempo_changes()[1]))
    # The tracker may count the song at half or double its tempo (a metrical level, not an error of
    # the grid); the notes must sit on the song's beats at the level the file counts.
    level = min((0.5, 1.0, 2.0), key=lambda f: abs(np.log(file_tempo / (f * song.tempo))))
    true_beats = np.array([n.start for n in truth]) * song.tempo * level / 60.0
    error = np.abs(in_file - true_beats) / level                  # in the song's own beats
    assert np.median(error) < 0.1 and error.max() <= 0.25, (song.tempo, file_tempo, error.max())  # a sixteenth
    assert np.allclose([n.start for n in track.notes], [n.start for n in truth], atol=0.005)  # seconds kept


def test_without_beats_the_file_keeps_pretty_midis_default_tempo():
    truth = bass_line(np.random.default_rng(3), count=6)
    midi = pretty_midi.PrettyMIDI(io.BytesIO(midi_bytes(truth)))
    assert np.allclose(midi.get_tempo_changes()[1], [120.0])
    assert np.allclose([n.start for n in midi.instruments[0].notes], [n.start for n in truth], atol=0.005)
