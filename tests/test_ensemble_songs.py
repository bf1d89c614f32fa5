"""Drumless synthetic songs (the "ensemble" texture): the bass's rhythm is in the upper parts."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bassray.config import load_config
from bassray.data import patterns as P
from bassray.data.compose import compose_ensemble_song
from bassray.data.shards import SPLITS, iter_segments, list_shards
from bassray.data.synth import (TEXTURES, indexed_song, song_groove, song_split, synthesize_dataset,
                                track_key)

STEP_BEATS = {"quarters": 1, "halves": 2, "whole": 4}


@pytest.mark.parametrize("rhythm", P.ENSEMBLE_RHYTHMS)
def test_an_ensemble_song_attacks_its_bass_with_its_chords_and_has_no_drums(rhythm):
    for seed in range(12):
        song = compose_ensemble_song(seed, 12.0, rhythm=rhythm)
        truth = song.ground_truth()
        assert "drums" not in truth["parts"] and truth["bass_rest_bars"] == []
        assert truth["patterns"]["bass"] == f"ensemble_{rhythm}"
        beat = 60.0 / truth["tempo"]
        bass = truth["parts"]["bass"]["notes"]
        chord_starts = {round(n[1], 3) for stem, part in truth["parts"].items() if stem != "bass"
                        for n, role in ((n, r) for n in part["notes"] for r in part["roles"]) if role == "comping"}
        bass_starts = [round(n[1], 3) for n in bass]
        # Every bass note starts with a chord, on the rhythm's grid, and the line never stops.
        assert set(bass_starts) <= chord_starts
        gaps = np.diff(bass_starts) / beat
        np.testing.assert_allclose(gaps, STEP_BEATS[rhythm], atol=1e-2)
        assert bass_starts[0] == 0.0 and bass[-1][2] >= 12.0 - STEP_BEATS[rhythm] * beat
        for a, b in zip(bass, bass[1:]):          # monophonic
            assert a[2] <= b[1] + 1e-6
        assert all(P.BASS_LOW <= n[0] <= P.BASS_HIGH for n in bass)
        # Each bar's first note is the chord's root.
        for chord in truth["chords"]:
            first = next(n for n in bass if abs(n[1] - chord["start"]) < 1e-3)
            assert first[0] % 12 == chord["root"]


def test_ensemble_songs_are_seeded_and_go_through_the_rhythms_evenly():
    a, b = compose_ensemble_song(5, 8.0), compose_ensemble_song(5, 8.0)
    assert json.dumps(a.ground_truth()) == json.dumps(b.ground_truth())
    rhythms = [song_groove(0, i, "ensemble")[0] for i in range(30)]
    for block in range(0, 30, 3):
        assert sorted(rhythms[block:block + 3]) == sorted(P.ENSEMBLE_RHYTHMS)
    splits = [song_split(0, i, 0.1, 0.1, 0, "ensemble") for i in range(300)]
    assert 20 <= splits.count("test") <= 40 and 20 <= splits.count("val") <= 40
    # An ensemble song is not the band song of the same index with its drums left out.
    band, ensemble = indexed_song(0, 3, 8.0), indexed_song(0, 3, 8.0, "ensemble")
    assert (band.tempo, band.tonic) != (ensemble.tempo, ensemble.tonic) or band.progression != ensemble.progression
    assert track_key(3) != track_key(3, "ensemble")
    with pytest.raises(ValueError, match="unknown ensemble rhythm"):
        compose_ensemble_song(0, 6.0, rhythm="polka")
    with pytest.raises(ValueError, match="unknown song texture"):
        song_groove(0, 0, "orchestra")
    assert TEXTURES == ("band", "ensemble")


def test_an_ensemble_dataset_has_its_own_keys_and_no_drum_stem(tmp_path):
    config = load_config("tiny")
    manifest = synthesize_dataset(tmp_path, num_songs=3, config=config, seed=0, song_seconds=4.0,
                                  workers=1, texture="ensemble")
    assert manifest["texture"] == "ensemble" and "drums" not in manifest["stems"]
    segments = [s for split in SPLITS if manifest["shards"].get(split)
                for s in iter_segments(list_shards(tmp_path, split))]
    assert sorted({s.track_id for s in segments}) == [track_key(i, "ensemble") for i in range(3)]
    for segment in segments:
        assert "drums" not in segment.stems
        bass = segment.stems["bass"]
        assert np.sqrt(np.mean(bass ** 2)) > 1e-3          # the bass sounds
    with pytest.raises(ValueError, match="unknown song texture"):
        synthesize_dataset(tmp_path / "x", num_songs=1, config=config, texture="orchestra")
