"""Ingest of MUSDB18-HQ, Slakh2100 and folder layouts into audio shards, on tiny synthetic trees."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from bassray.audio import load_audio
from bassray.config import load_config
from bassray.data import ingest as ingest_module
from bassray.data.ingest import ingest, segment_bounds
from bassray.data.shards import MANIFEST_NAME, iter_segments
from bassray.data.stems import VOCABULARY

SEGMENT_S = 1.2
QUANT = 2.0 / 32768  # one 16-bit step of FLAC plus rounding


@pytest.fixture
def config():
    # 16 kHz stereo; short segments so a 3 s track becomes 3 segments.
    return load_config("tiny", [f"data.segment_seconds={SEGMENT_S}", "data.crop_seconds=0.5",
                                "data.shard_target_mb=0.05"])


def write_tone(path: Path, seconds: float, rate: int, channels: int, freq: float,
               amp: float = 0.3, seed: int = 0) -> Path:
    """A sine plus a little noise, [T, C] as soundfile wants; the suffix picks wav or flac."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    wave = amp * np.sin(2 * np.pi * freq * t)[:, None] + 0.01 * rng.standard_normal((t.size, channels))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave.astype(np.float32), rate, subtype="PCM_16")
    return path


def all_segments(out_dir: Path):
    paths = [p for s in ("train", "val", "test") for p in sorted(out_dir.glob(f"{s}-*.tar"))]
    return list(iter_segments(paths))


def reasons(manifest) -> dict[str, str]:
    return {s["track"]: s["reason"] for s in manifest["skipped"]}


@pytest.fixture
def folders_tree(tmp_path):
    root = tmp_path / "stems"
    good = root / "artist" / "good song.v2"  # a dot in the name: keys must still hold none
    write_tone(good / "Bass_DI.wav", 3.0, 22050, 1, 55.0)
    write_tone(good / "drums.flac", 3.0, 44100, 2, 300.0, seed=1)
    write_tone(good / "guitar_L.wav", 3.0, 16000, 1, 440.0, amp=0.2, seed=2)
    write_tone(good / "guitar_R.wav", 3.0, 16000, 1, 660.0, amp=0.2, seed=3)
    write_tone(good / "mix.wav", 3.0, 16000, 2, 100.0)
    trim = root / "within_tolerance"  # 0.3 s apart (tolerance 0.5 s): kept, trimmed to shortest
    write_tone(trim / "bass.wav", 3.3, 8000, 1, 60.0)
    write_tone(trim / "piano.wav", 3.0, 16000, 2, 500.0)
    write_tone(root / "no_bass" / "drums.wav", 3.0, 16000, 2, 200.0)
    write_tone(root / "no_bass" / "vocals.wav", 3.0, 16000, 2, 800.0)
    write_tone(root / "unreadable" / "drums.wav", 3.0, 16000, 2, 200.0)
    (root / "unreadable" / "bass.wav").write_bytes(b"RIFF this is not audio" * 50)
    (root / "silent_bass").mkdir()
    sf.write(str(root / "silent_bass" / "bass.wav"), np.zeros((48000, 2), np.float32), 16000)
    write_tone(root / "silent_bass" / "drums.wav", 3.0, 16000, 2, 200.0)
    write_tone(root / "mismatched" / "bass.wav", 3.0, 16000, 2, 50.0)
    write_tone(root / "mismatched" / "drums.wav", 4.5, 16000, 2, 200.0)
    return root


def test_folders_layout_counts_reasons_and_format(folders_tree, tmp_path, config):
    out = tmp_path / "shards"
    manifest = ingest(folders_tree, out, layout="folders", config=config)
    counts = manifest["counts"]
    assert (counts["tracks_in"], counts["tracks_kept"], counts["tracks_skipped"]) == (6, 2, 4)
    why = reasons(manifest)
    assert manifest["skipped_count"] == 4 and set(why) == {"no_bass", "unreadable", "silent_bass",
                                                           "mismatched"}
    assert why["no_bass"] == "no bass stem"
    assert "unreadable file" in why["unreadable"] and "bass.wav" in why["unreadable"]
    assert "silent bass" in why["silent_bass"]
    assert "differ" in why["mismatched"]
    on_disk = json.loads((out / MANIFEST_NAME).read_text())
    assert on_disk["skipped_count"] == 4 and on_disk["sample_rate"] == 16000

    segments = all_segments(out)
    assert len(segments) == counts["segments"] == sum(s["segments"] for s in manifest["splits"].values())
    assert {s.track_id for s in segments} == {"artist_good_song_v2", "within_tolerance"}
    for seg in segments:
        assert "." not in seg.key and seg.key.startswith(seg.track_id + "-s")
        assert seg.sample_rate == config.audio.sample_rate
        assert set(seg.stems) <= set(VOCABULARY) and "bass" in seg.stems
        lengths = {w.shape for w in seg.stems.values()}
        assert len(lengths) == 1
        channels, samples = lengths.pop()
        assert channels == config.audio.channels
        assert samples <= SEGMENT_S * config.audio.sample_rate
        assert seg.meta["source"] == "folders" and seg.meta["track"] in ("artist/good song.v2",
                                                                          "within_tolerance")
    good = sorted((s for s in segments if s.track_id == "artist_good_song_v2"),
                  key=lambda s: s.meta["segment_index"])
    assert set(good[0].stems) == {"bass", "drums", "guitar"}  # mix.wav is not a stem
    assert [s.meta["segment_index"] for s in good] == [0, 1, 2]
    assert sum(s.stems["bass"].shape[1] for s in good) == 3 * 16000
    trimmed = [s for s in segments if s.track_id == "within_tolerance"]
    assert sum(s.stems["bass"].shape[1] for s in trimmed) == 3 * 16000  # shortest stem wins


def test_folders_round_trip_matches_conformed_sources(folders_tree, tmp_path, config):
    out = tmp_path / "shards"
    ingest(folders_tree, out, layout="folders", config=config)
    good_dir = folders_tree / "artist" / "good song.v2"
    rate, channels = config.audio.sample_rate, config.audio.channels
    expected = {
        "bass": load_audio(good_dir / "Bass_DI.wav", rate, channels),
        "drums": load_audio(good_dir / "drums.flac", rate, channels),
        "guitar": load_audio(good_dir / "guitar_L.wav", rate, channels)
        + load_audio(good_dir / "guitar_R.wav", rate, channels),  # two files, one name: summed
    }
    for seg in all_segments(out):
        if seg.track_id != "artist_good_song_v2":
            continue
        assert seg.meta["gain"] == 1.0
        start = round(seg.meta["start_seconds"] * rate)
        for name, audio in seg.stems.items():
            reference = expected[name][:, start:start + audio.shape[1]]
            assert np.max(np.abs(audio - reference)) <= QUANT, name


def test_musdb_layout_skips_mixture_and_keeps_musdb_split(tmp_path, config):
    root = tmp_path / "musdb18hq"
    for split, track, rate in (("train", "A - One", 44100), ("test", "B - Two", 22050)):
        for i, name in enumerate(("mixture", "drums", "bass", "vocals", "other")):
            write_tone(root / split / track / f"{name}.wav", 2.5, rate, 2, 80.0 * (i + 1), seed=i)
    manifest = ingest(root, tmp_path / "out", layout="musdb", config=config)
    assert manifest["counts"]["tracks_kept"] == 2 and manifest["skipped_count"] == 0
    assert manifest["stems"] == {"bass": 2, "drums": 2, "other": 2, "vocals": 2}
    segments = all_segments(tmp_path / "out")
    assert {s.meta["musdb_split"] for s in segments} == {"train", "test"}
    for seg in segments:
        assert set(seg.stems) == {"bass", "drums", "vocals", "other"}
        assert seg.stems["bass"].shape[0] == 2 and seg.meta["source"] == "musdb"


def write_slakh_track(root: Path, name: str, stems: dict[str, dict], on_disk: list[str],
                      seconds: float = 2.5) -> Path:
    folder = root / name
    for i, stem_id in enumerate(on_disk):
        write_tone(folder / "stems" / f"{stem_id}.flac", seconds, 44100, 1, 70.0 * (i + 1), seed=i)
    (folder / "metadata.yaml").write_text(yaml.safe_dump({"UUID": name, "stems": stems}))
    return folder


def slakh_stem(inst_class: str, program: int, is_drum: bool = False, rendered: bool = True) -> dict:
    return {"inst_class": inst_class, "program_num": program, "is_drum": is_drum,
            "audio_rendered": rendered, "midi_program_name": inst_class}


def test_slakh_layout_maps_inst_class_and_sums_duplicates(tmp_path, config):
    root = tmp_path / "slakh2100" / "train"
    write_slakh_track(root, "Track00001", {
        "S00": slakh_stem("Bass", 33), "S01": slakh_stem("Bass", 38),  # two basses -> one stem
        "S02": slakh_stem("Drums", 128, is_drum=True), "S03": slakh_stem("Guitar", 27),
        "S04": slakh_stem("Piano", 0),                        # listed, missing on disk: skipped quietly
        "S05": slakh_stem("Organ", 16, rendered=False),       # never rendered: ignored even if present
    }, on_disk=["S00", "S01", "S02", "S03", "S05"])
    write_slakh_track(root, "Track00002", {"S00": slakh_stem("Piano", 0), "S01": slakh_stem("Guitar", 25)},
                      on_disk=["S00", "S01"])
    bad = root / "Track00003"
    write_tone(bad / "stems" / "S00.flac", 2.5, 44100, 1, 50.0)
    (bad / "metadata.yaml").write_text("stems: [unclosed")
    manifest = ingest(tmp_path / "slakh2100", tmp_path / "out", layout="slakh", config=config)
    why = reasons(manifest)
    assert manifest["counts"]["tracks_kept"] == 1
    assert why["train/Track00002"] == "no bass stem"
    assert "metadata" in why["train/Track00003"]
    segments = all_segments(tmp_path / "out")
    assert segments and all(set(s.stems) == {"bass", "drums", "guitar"} for s in segments)
    assert all(s.stems["bass"].shape[0] == config.audio.channels for s in segments)  # mono -> stereo
    programs = [i["program_num"] for i in segments[0].meta["instruments"]["bass"]]
    assert sorted(programs) == [33, 38]

    # The stored bass is the sum of both bass stems (conformed), within FLAC quantisation.
    stems_dir = root / "Track00001" / "stems"
    rate, ch = config.audio.sample_rate, config.audio.channels
    summed = load_audio(stems_dir / "S00.flac", rate, ch) + load_audio(stems_dir / "S01.flac", rate, ch)
    first = min(segments, key=lambda s: s.meta["segment_index"])
    assert np.max(np.abs(first.stems["bass"] - summed[:, : first.stems["bass"].shape[1]])) <= QUANT


def test_loud_stems_get_one_gain_instead_of_clipping(tmp_path, config):
    root = tmp_path / "stems"
    write_tone(root / "t" / "bass_1.wav", 2.0, 16000, 2, 55.0, amp=0.8)
    write_tone(root / "t" / "bass_2.wav", 2.0, 16000, 2, 55.0, amp=0.8)  # in phase: sum peaks 1.6
    write_tone(root / "t" / "drums.wav", 2.0, 16000, 2, 300.0, amp=0.5)
    ingest(root, tmp_path / "out", layout="folders", config=config)
    segments = all_segments(tmp_path / "out")
    gain = segments[0].meta["gain"]
    assert 0.5 < gain < 0.7
    drums = load_audio(root / "t" / "drums.wav", 16000, 2)
    for seg in segments:
        assert np.abs(seg.stems["bass"]).max() < 1.0
        start = round(seg.meta["start_seconds"] * 16000)
        ref = gain * drums[:, start:start + seg.stems["drums"].shape[1]]
        assert np.max(np.abs(seg.stems["drums"] - ref)) <= QUANT


@pytest.mark.parametrize("seconds", [0.5, 1.2, 1.3, 3.0, 130.0])
def test_segment_bounds_cover_track_evenly(seconds):
    rate, length = 100, int(seconds * 100)
    bounds = segment_bounds(length, rate, 60.0 if seconds == 130.0 else SEGMENT_S)
    limit = 60.0 if seconds == 130.0 else SEGMENT_S
    assert bounds[0][0] == 0 and bounds[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [e - s for s, e in bounds]
    assert max(sizes) <= limit * rate and max(sizes) - min(sizes) <= 1
    if seconds == 130.0:
        assert len(bounds) == 3


def test_unknown_layout_and_empty_tree_fail_clearly(tmp_path, config):
    with pytest.raises(ValueError, match="layout"):
        ingest(tmp_path, tmp_path / "out", layout="stems", config=config)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tracks"):
        ingest(tmp_path / "empty", tmp_path / "out", layout="folders", config=config)


def test_interrupted_ingest_leaves_only_partials_and_rerun_is_clean(folders_tree, tmp_path, monkeypatch):
    # Shards far larger than the data: none is closed when the run dies, so nothing may look whole.
    config = load_config("tiny", [f"data.segment_seconds={SEGMENT_S}", "data.crop_seconds=0.5",
                                  "data.shard_target_mb=64"])
    out = tmp_path / "shards"
    out.mkdir()
    (out / "train-000042.tar").write_bytes(b"stale shard of an older run")
    real_load = ingest_module.load_track_stems
    calls = {"n": 0}

    def load_then_fail(source, cfg):
        calls["n"] += 1
        if calls["n"] == 3:  # after both good tracks have been handed to the writer
            raise KeyboardInterrupt("simulated interruption")
        return real_load(source, cfg)

    monkeypatch.setattr(ingest_module, "load_track_stems", load_then_fail)
    with pytest.raises(KeyboardInterrupt):
        ingest(folders_tree, out, layout="folders", config=config)
    assert not (out / MANIFEST_NAME).exists()
    assert not list(out.glob("*.tar"))  # the stale shard is gone, the open ones are *.partial
    assert list(out.glob("*.tar.partial"))

    monkeypatch.setattr(ingest_module, "load_track_stems", real_load)
    manifest = ingest(folders_tree, out, layout="folders", config=config)
    assert not list(out.glob("*.partial"))
    listed = sorted(p.name for p in out.glob("*.tar"))
    assert listed == sorted(n for names in manifest["shards"].values() for n in names)
    assert len(all_segments(out)) == manifest["counts"]["segments"] > 0


def segments_by_split(out_dir: Path) -> dict[str, set[str]]:
    return {s: {seg.meta["track"] for seg in iter_segments(sorted(out_dir.glob(f"{s}-*.tar")))}
            for s in ("train", "val", "test")}


def test_official_splits_are_kept_so_a_test_track_is_never_trained_on(tmp_path, config):
    """MUSDB18: its test folder is our test split and its validation tracks our val split; Slakh2100:
    train/validation/test folders, and its omitted duplicates are skipped. The hash split, which
    would scatter them, is not used for either."""
    musdb = tmp_path / "musdb18hq"
    tracks = (("train", "Leaf - Summerghost"), ("train", "Z - Trained"), ("test", "A - Held Out"),
              ("test", "B - Held Out Too"))
    for split, track in tracks:
        for i, name in enumerate(("mixture", "drums", "bass", "vocals", "other")):
            write_tone(musdb / split / track / f"{name}.wav", 1.0, 22050, 1, 80.0 * (i + 1), seed=i)
    # Every split fraction pushes the hash towards train: only the official split can make a test track.
    config.data.val_fraction, config.data.test_fraction = 0.0, 0.0
    manifest = ingest(musdb, tmp_path / "musdb-out", layout="musdb", config=config)
    assert segments_by_split(tmp_path / "musdb-out") == {
        "train": {"train/Z - Trained"}, "val": {"train/Leaf - Summerghost"},
        "test": {"test/A - Held Out", "test/B - Held Out Too"}}
    assert manifest["splits"]["test"]["official_split_tracks"] == 2

    slakh = tmp_path / "slakh2100"
    stems = {"S00": slakh_stem("Bass", 33), "S01": slakh_stem("Piano", 0)}
    for split, track in (("train", "Track00001"), ("validation", "Track01501"), ("test", "Track01876"),
                         ("omitted", "Track00049")):
        write_slakh_track(slakh / split, track, stems, on_disk=["S00", "S01"], seconds=1.0)
    manifest = ingest(slakh, tmp_path / "slakh-out", layout="slakh", config=config)
    assert segments_by_split(tmp_path / "slakh-out") == {
        "train": {"train/Track00001"}, "val": {"validation/Track01501"}, "test": {"test/Track01876"}}
    assert "omitted" in reasons(manifest)["omitted/Track00049"]
