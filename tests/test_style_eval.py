"""Table 1's parts: the bass-program classifier on rendered bass lines, and the choice of style
references."""
from __future__ import annotations

import json

import numpy as np
import pretty_midi

from bassray.data.synth import read_soundfont, render_midi
from bassray.eval.style import ProgramClassifier, references

RATE = 16000
PROGRAMS = (33, 35, 36, 38)  # finger, fretless, slap, synth bass


def _bass_line(program: int, seed: int, soundfont: bytes, seconds: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    midi = pretty_midi.PrettyMIDI()
    part = pretty_midi.Instrument(program=program)
    start = 0.0
    while start < seconds - 0.3:
        length = float(rng.choice([0.25, 0.5]))
        part.notes.append(pretty_midi.Note(velocity=int(rng.integers(70, 110)), pitch=int(rng.integers(33, 52)),
                                           start=start, end=start + length * 0.9))
        start += length
    midi.instruments.append(part)
    return render_midi(midi, soundfont, seconds, RATE, 1)


def test_program_classifier_beats_chance_on_held_out_lines():
    soundfont = read_soundfont(None)
    train = [(_bass_line(p, 10 * p + i, soundfont), p) for p in PROGRAMS for i in range(6)]
    test = [(_bass_line(p, 1000 + 10 * p + i, soundfont), p) for p in PROGRAMS for i in range(3)]
    classifier = ProgramClassifier().fit([c for c, _ in train], [p for _, p in train], RATE)
    predicted = classifier.predict([c for c, _ in test], RATE)
    accuracy = float(np.mean(predicted == np.array([p for _, p in test])))
    assert accuracy >= 0.5 > 1 / len(PROGRAMS), accuracy


def test_references_are_other_songs_with_another_program():
    rows = [{"truth": json.dumps({"programs": {"bass": p}})} for p in (33, 33, 38, 33, 36)]
    refs = references(rows, "bass")
    for i, j in enumerate(refs):
        assert j != i
        assert json.loads(rows[j]["truth"])["programs"]["bass"] != json.loads(rows[i]["truth"])["programs"]["bass"]
    same = [{"truth": json.dumps({"programs": {"bass": 33}})}] * 3
    assert references(same, "bass") == [0, 1, 2]  # nobody else to borrow from: itself
