"""Chords estimated from audio, and evaluation of stems that carry no annotations: known answers on
sine chords, rendered synthetic songs against their ground truth, and held-out songs without chords."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bassray.data.compose import QUALITIES, compose_song
from bassray.data.shards import TrackSegment, write_shards
from bassray.data.synth import read_soundfont, render_song
from bassray.eval.chords import chord_accuracy, estimate_chords
from bassray.eval.evaluate import TrueBass, held_out_songs

RATE = 16000


def organ_chords(chords: list[tuple[int, str]], seconds: float = 2.0, rate: int = RATE) -> np.ndarray:
    """Each chord held ``seconds``: its tones in two octaves, each with three harmonics."""
    t = np.arange(int(seconds * rate)) / rate
    out = []
    for root, quality in chords:
        block = np.zeros_like(t)
        for interval in QUALITIES[quality]:
            for octave in (48, 60):
                f = 440.0 * 2 ** ((octave + root + interval - 69) / 12)
                block += sum(np.sin(2 * np.pi * f * k * t) / k for k in (1, 2, 3))
        out.append(block)
    audio = np.concatenate(out)
    return (0.3 * audio / np.abs(audio).max()).astype(np.float32)[None]


def as_annotations(chords: list[tuple[int, str]], seconds: float = 2.0) -> list[dict]:
    return [{"start": i * seconds, "end": (i + 1) * seconds, "root": root, "intervals": list(QUALITIES[q])}
            for i, (root, q) in enumerate(chords)]


PROGRESSION = [(0, "maj"), (9, "min"), (5, "maj"), (7, "7"), (2, "m7"), (0, "maj")]


def test_sine_chords_are_read_back():
    audio = organ_chords(PROGRESSION)
    estimated = estimate_chords(audio, RATE)
    scores = chord_accuracy(estimated, as_annotations(PROGRESSION), audio.shape[-1] / RATE)
    assert scores["root"] >= 0.85 and scores["majmin"] >= 0.85, scores


def test_accuracy_has_known_answers_and_silence_has_no_chords():
    reference = as_annotations(PROGRESSION)
    assert chord_accuracy(reference, reference, 12.0) == pytest.approx({"root": 1.0, "majmin": 1.0, "thirds": 1.0})
    up = [dict(c, root=(c["root"] + 1) % 12) for c in reference]
    assert chord_accuracy(up, reference, 12.0)["root"] == 0.0
    assert estimate_chords(np.zeros((2, RATE * 3), np.float32), RATE) == []


def test_rendered_songs_chords_match_their_ground_truth():
    """Songs rendered with the SoundFont, chords estimated from the non-bass stems alone."""
    soundfont, scores = read_soundfont(None), []
    for seed in (3, 4):
        song = compose_song(seed, 12.0)
        stems, _ = render_song(song, soundfont, RATE, 2)
        mix = sum(w for name, w in stems.items() if name != "bass")
        scores.append(chord_accuracy(estimate_chords(mix, RATE), song.ground_truth()["chords"], 12.0))
    assert np.mean([s["majmin"] for s in scores]) >= 0.6, scores


def _bass_and_piano_segments(n: int) -> list[TrackSegment]:
    """Songs with no annotations at all: a bass on each chord's root and the chords on a piano."""
    segments = []
    for i in range(n):
        progression = [((i * 5 + 7 * b) % 12, "maj" if b % 2 == 0 else "min") for b in range(3)]
        piano = organ_chords(progression)
        root_hz = np.repeat([440.0 * 2 ** ((36 + r - 69) / 12) for r, _ in progression], 2 * RATE)
        bass = (0.3 * np.sin(2 * np.pi * np.cumsum(root_hz) / RATE))[None].astype(np.float32)
        segments.append(TrackSegment(key=f"song{i}", track_id=f"song{i}", sample_rate=RATE,
                                     stems={"bass": bass, "keys": piano}, meta={"track": f"song{i}"}))
    return segments


@pytest.fixture
def unannotated_shards(tmp_path):
    write_shards(_bass_and_piano_segments(3), tmp_path, shard_target_mb=1, val_fraction=0.0,
                 test_fraction=1.0, split_seed=0)
    return tmp_path


def test_songs_without_annotations_are_scored_against_estimated_chords(unannotated_shards):
    with pytest.raises(FileNotFoundError, match="annotated chords"):
        held_out_songs(unannotated_shards, ["test"], "bass", chords="annotated")
    rows = held_out_songs(unannotated_shards, ["test"], "bass")  # auto: estimated where none are annotated
    assert len(rows) == 3
    for row in rows:
        truth = json.loads(row["truth"])
        assert truth["chord_source"] == "estimated" and truth["chords"]
        true = TrueBass(row["target"], RATE, truth)
        own, other = true.score(row["target"]), true.score(row["other_target"])
        # The bass on the roots sits on the estimated chords; another song's bass far less.
        assert own["chord_tone_coverage"] >= 0.8 and own["chord_tone_coverage"] > other["chord_tone_coverage"] + 0.2
    with pytest.raises(ValueError, match="choose from"):
        held_out_songs(unannotated_shards, ["test"], "bass", chords="guessed")


def test_every_quality_of_the_songs_has_a_harte_name_mir_eval_reads():
    from bassray.eval.chords import HARTE
    assert set(HARTE) == set(QUALITIES)
    chords = [{"start": float(i), "end": i + 1.0, "root": i % 12, "intervals": list(iv)}
              for i, iv in enumerate(QUALITIES.values())]
    assert chord_accuracy(chords, chords, float(len(chords)))["majmin"] == pytest.approx(1.0)
