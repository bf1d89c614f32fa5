"""The audio shard format: keys, splits by track, round trips, WebDataset compatibility, and
what an interrupted write leaves behind."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import webdataset as wds

from bassray.audio import encode_flac
from bassray.data.shards import (SPLITS, TrackSegment, iter_segments, list_shards, safe_key,
                                 split_for, write_shards)
from bassray.data.sine_stems import sine_segments

RATE, CHANNELS = 16000, 2
QUANT = 2.0 / 32768


def track_segments(n_tracks: int, per_track: int, seconds: float = 0.5) -> list[TrackSegment]:
    """``per_track`` segments for each of ``n_tracks`` tracks (segments share their track id)."""
    out = []
    for i, seg in enumerate(sine_segments(n_tracks * per_track, seconds, RATE, CHANNELS, seed=3)):
        track = f"track{i // per_track:04d}"
        out.append(TrackSegment(key=f"{track}-s{i % per_track:03d}", track_id=track,
                                sample_rate=RATE, stems=seg.stems, meta={"source": "test"}))
    return out


def shard_paths(out_dir):
    return [p for s in SPLITS for p in sorted(out_dir.glob(f"{s}-*.tar"))]


def write(segments, out_dir, target_mb=0.2, seed=0):
    return write_shards(iter(segments), out_dir, shard_target_mb=target_mb, val_fraction=0.2,
                        test_fraction=0.2, split_seed=seed)


def test_split_for_is_deterministic_and_respects_fractions():
    ids = [f"song_{i}" for i in range(2000)]
    splits = [split_for(t, 0.1, 0.2, seed=7) for t in ids]
    assert splits == [split_for(t, 0.1, 0.2, seed=7) for t in ids]
    counts = Counter(splits)
    assert abs(counts["val"] / 2000 - 0.1) < 0.03
    assert abs(counts["test"] / 2000 - 0.2) < 0.03
    assert abs(counts["train"] / 2000 - 0.7) < 0.03
    other_seed = [split_for(t, 0.1, 0.2, seed=8) for t in ids]
    assert other_seed != splits  # the seed reshuffles the assignment
    assert {split_for(t, 0.0, 0.0, seed=7) for t in ids} == {"train"}


def test_keys_with_dots_are_rejected_and_safe_key_removes_them():
    stems = {"bass": np.zeros((2, 10), np.float32)}
    with pytest.raises(ValueError, match="key"):
        TrackSegment(key="song.v2", track_id="song", sample_rate=RATE, stems=stems)
    for name in ("My Song.v2", "a/b.c d", "...", "Ünïcode—track"):
        key = safe_key(name)
        assert key and "." not in key
        TrackSegment(key=key, track_id=key, sample_rate=RATE, stems=stems)


def test_round_trip_and_tracks_never_span_splits(tmp_path):
    segments = track_segments(n_tracks=12, per_track=3)
    stats = write(segments, tmp_path)
    decoded = list(iter_segments(shard_paths(tmp_path)))
    assert sorted(s.key for s in decoded) == sorted(s.key for s in segments)
    assert sum(v["segments"] for v in stats.values()) == len(segments)
    assert sum(v["tracks"] for v in stats.values()) == 12

    by_key = {s.key: s for s in segments}
    for seg in decoded:
        original = by_key[seg.key]
        assert seg.track_id == original.track_id and seg.sample_rate == RATE
        assert seg.meta["stems"] == sorted(original.stems) and seg.meta["source"] == "test"
        assert seg.meta["duration"] == pytest.approx(0.5)
        for name, audio in original.stems.items():
            assert seg.stems[name].shape == audio.shape
            assert np.max(np.abs(seg.stems[name] - np.clip(audio, -1, 1))) <= QUANT

    split_of_track: dict[str, set[str]] = {}
    for split in SPLITS:
        for seg in iter_segments(sorted(tmp_path.glob(f"{split}-*.tar"))):
            split_of_track.setdefault(seg.track_id, set()).add(split)
    assert all(len(s) == 1 for s in split_of_track.values())
    for track, (split,) in split_of_track.items():
        assert split == split_for(track, 0.2, 0.2, seed=0)


def test_same_seed_same_shards(tmp_path):
    segments = track_segments(n_tracks=8, per_track=2)
    first = write(segments, tmp_path / "a", seed=5)
    second = write(segments, tmp_path / "b", seed=5)
    assert first == second
    for split in SPLITS:
        a = [s.key for s in iter_segments(sorted((tmp_path / "a").glob(f"{split}-*.tar")))]
        b = [s.key for s in iter_segments(sorted((tmp_path / "b").glob(f"{split}-*.tar")))]
        assert a == b


def test_shards_read_with_webdataset(tmp_path):
    segments = track_segments(n_tracks=4, per_track=2)
    write(segments, tmp_path)
    keys = set()
    for sample in wds.WebDataset([str(p) for p in shard_paths(tmp_path)], shardshuffle=False):
        meta = json.loads(sample["json"])
        assert sample["__key__"] == meta["key"]
        flac_columns = {k for k in sample if k.endswith(".flac")}
        assert flac_columns == {f"{stem}.flac" for stem in meta["stems"]}
        keys.add(sample["__key__"])
    assert keys == {s.key for s in segments}


def test_small_target_gives_several_shards_and_list_shards(tmp_path):
    segments = track_segments(n_tracks=6, per_track=2)
    stats = write(segments, tmp_path, target_mb=0.01)
    train = list_shards(tmp_path, "train")
    assert len(train) == len(stats["train"]["shards"]) > 1
    with pytest.raises(FileNotFoundError, match="shards"):
        list_shards(tmp_path / "nowhere", "train")


def segment_bytes(segment: TrackSegment) -> int:
    return sum(len(encode_flac(a, RATE)) for a in segment.stems.values()) + 200


def test_interrupted_write_keeps_only_whole_shards_and_rerun_rewrites(tmp_path):
    # One track (one split); a target of 1.5 segments closes a shard after every second segment.
    segments = track_segments(n_tracks=1, per_track=3)
    target_mb = 1.5 * segment_bytes(segments[0]) / 2**20

    def interrupted():
        yield from segments
        raise RuntimeError("simulated crash while the third segment's shard is still open")

    with pytest.raises(RuntimeError):
        write(interrupted(), tmp_path, target_mb=target_mb)
    whole = shard_paths(tmp_path)
    partial = list(tmp_path.glob("*.tar.partial"))
    assert len(whole) == 1 and len(partial) == 1
    assert [s.key for s in iter_segments(whole)] == [s.key for s in segments[:2]]

    stats = write(segments, tmp_path, target_mb=target_mb)
    assert not list(tmp_path.glob("*.partial"))
    names = sorted(p.name for p in shard_paths(tmp_path))
    assert names == sorted(n for v in stats.values() for n in v["shards"])
    assert sorted(s.key for s in iter_segments(shard_paths(tmp_path))) == [s.key for s in segments]


def test_several_folders_join_into_one_data_argument(tmp_path, monkeypatch):
    from bassray.data.shards import data_dirs, resolve_data_dirs
    a, b = tmp_path / "synth", tmp_path / "rendered"
    stats_a = write(track_segments(n_tracks=8, per_track=1), a, target_mb=0.01)
    stats_b = write(track_segments(n_tracks=8, per_track=1), b, target_mb=0.01, seed=1)
    both = list_shards(f"{a},{b}", "train")
    assert both == list_shards(a, "train") + list_shards(b, "train")
    assert len(both) == len(stats_a["train"]["shards"]) + len(stats_b["train"]["shards"])
    monkeypatch.chdir(tmp_path)
    assert data_dirs(resolve_data_dirs("synth, rendered")) == [str(a.resolve()), str(b.resolve())]
    assert resolve_data_dirs(f"s3://bucket/x,{a}") == f"s3://bucket/x,{a.resolve()}"
    with pytest.raises(ValueError, match="no shard folder"):
        data_dirs(" , ")
