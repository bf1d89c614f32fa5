"""`bassray data render`: MIDI files into shards on Ray Data. A fixture folder of good, corrupt,
empty, drum-only and bass-less files; the notes and chords in the rendered JSON against the MIDI;
a re-run that renders nothing twice."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bassray.config import load_config
from bassray.data.midi_stems import MidiSkip, midi_song
from bassray.data.shards import iter_segments, list_shards
from midi_fixtures import BAR_S, PROGRESSION, song_midi, write_fixture_folder

CONFIG = ["data.segment_seconds=4.0", "data.crop_seconds=1.0", "data.shard_target_mb=0.5",
          "data.val_fraction=0.0", "data.test_fraction=0.0"]


def test_a_midi_file_becomes_stems_with_its_notes_and_chords(tmp_path):
    path = tmp_path / "song.mid"
    song_midi().write(str(path))
    song = midi_song(path, seed=3)
    assert set(song.stems) == {"bass", "drums", "piano"}
    truth = song.truth
    assert truth["tempo"] == pytest.approx(120.0) and truth["duration"] == pytest.approx(4 * BAR_S)
    bass_notes = truth["parts"]["bass"]["notes"]
    assert [n[0] for n in bass_notes] == [36 + root for root, _ in PROGRESSION for _ in (0, 1)]
    assert [(c["root"], tuple(c["intervals"])) for c in truth["chords"]] == PROGRESSION
    assert [c["start"] for c in truth["chords"]] == [i * BAR_S for i in range(4)]
    # Program variation stays inside each GM family, so the stem names do not change.
    assert 32 <= truth["programs"]["bass"] <= 39 and 0 <= truth["programs"]["piano"] <= 7
    assert midi_song(path).truth["programs"] == {"piano": 0, "bass": 33, "drums": 0}


def test_each_bad_file_is_skipped_with_its_reason(tmp_path):
    expected = write_fixture_folder(tmp_path / "midi")
    for relative, reason in expected.items():
        if reason is None:
            assert midi_song(tmp_path / "midi" / relative).stems["bass"].instruments
        else:
            with pytest.raises(MidiSkip, match=reason):
                midi_song(tmp_path / "midi" / relative)


@pytest.mark.slow
def test_render_job_writes_shards_training_reads_and_resumes(tmp_path, ray_session):
    from bassray.distributed.render_midi import render_midi_collection
    expected = write_fixture_folder(tmp_path / "midi")
    config = load_config("tiny", CONFIG)
    out = tmp_path / "shards"
    manifest = render_midi_collection(tmp_path / "midi", out, config, files_per_batch=2, seed=1)
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {f for f, why in expected.items() if why}
    for relative, why in expected.items():
        if why:
            assert why in reasons[relative]
    assert manifest["counts"]["tracks_kept"] == 2 and manifest["counts"]["batches_rendered_now"] == 3

    segments = list(iter_segments(list_shards(out, "train")))
    assert {json.loads(json.dumps(s.meta))["file"] for s in segments} == {"good-one.mid", "sub/good-unmarked-bass.mid"}
    for segment in segments:
        assert {"bass", "drums", "piano"} <= set(segment.stems)
        bass = segment.stems["bass"]
        assert bass.shape[0] == config.audio.channels and np.abs(bass).max() > 1e-3
        notes = segment.meta["parts"]["bass"]["notes"]
        assert notes and all(0 <= n[1] < segment.meta["duration"] for n in notes)
        assert segment.meta["chords"] and all(c["end"] <= segment.meta["duration"] + 1e-6 for c in segment.meta["chords"])

    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    again = render_midi_collection(tmp_path / "midi", out, config, files_per_batch=2, seed=1)
    assert again["counts"]["batches_rendered_now"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == before
    assert again["counts"]["segments"] == manifest["counts"]["segments"]


def test_the_ground_truth_is_plain_json(tmp_path):
    """pretty_midi reads times as numpy floats: the JSON in a shard must not depend on numpy."""
    path = tmp_path / "song.mid"
    song_midi().write(str(path))
    truth = midi_song(path, seed=1).truth
    assert json.loads(json.dumps(truth)) == truth


def test_split_folders_are_kept_as_the_splits(tmp_path):
    """A collection with train/ and test/ folders (the music21 corpus's held-out composers) keeps
    them: every segment of a file under test/ is in a test shard, whatever the path's hash says."""
    from bassray.distributed.render_midi import folder_split, render_batch
    assert folder_split("test/bach/a.mid") == "test" and folder_split("val/x.mid") == "val"
    assert folder_split("test.mid") is None and folder_split("songs/test/a.mid") is None
    for split in ("train", "test"):
        (tmp_path / "midi" / split).mkdir(parents=True)
        song_midi(bars=2).write(str(tmp_path / "midi" / split / "song.mid"))
    config = load_config("tiny", CONFIG)
    render_batch({"batch": 0, "files": ["test/song.mid", "train/song.mid"], "midi_dir": str(tmp_path / "midi"),
                  "out_dir": str(tmp_path / "shards"), "config": config.to_dict(), "soundfonts": [], "seed": 0,
                  "vary_programs": False, "max_seconds": None})
    found = {split: {s.meta["file"] for s in iter_segments(list_shards(tmp_path / "shards", split))}
             for split in ("train", "test")}
    assert found == {"train": {"train/song.mid"}, "test": {"test/song.mid"}}
