"""Per-segment crop transforms (no Ray): shapes, mix/target alignment, silence, seeding, bad members."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from bassray.audio import encode_flac
from bassray.data.crops import (autoencoder_crops, decode_row, is_silent, mix_target_pairs,
                                random_subset, segment_rng)

RATE = 8000
CROP = 800
SILENCE_DB = -45.0


def sine_track(names: tuple[str, ...], seconds: float = 2.0, silent_head: str | None = None
               ) -> dict[str, np.ndarray]:
    """Distinct sines per stem (so subset sums are identifiable); ``silent_head`` is silent for
    its first half."""
    t = np.arange(int(seconds * RATE)) / RATE
    stems = {}
    for i, name in enumerate(names):
        wave = 0.3 * np.sin(2 * np.pi * (97.31 * (i + 1) + 7.13 * i * i) * t)
        audio = np.stack([wave, 0.5 * wave]).astype(np.float32)  # [2, T]
        if name == silent_head:
            audio[:, : audio.shape[1] // 2] = 0.0
        stems[name] = audio
    return stems


def window_starts(crop: np.ndarray, signal: np.ndarray) -> list[int]:
    """Offsets where ``crop`` [C, L] equals a window of ``signal`` [C, T]."""
    length = crop.shape[1]
    heads = np.lib.stride_tricks.sliding_window_view(signal[0], 16)[: signal.shape[1] - length + 1]
    candidates = np.flatnonzero(np.abs(heads - crop[0, :16]).max(axis=1) < 1e-6)
    return [int(s) for s in candidates if np.allclose(signal[:, s:s + length], crop, atol=1e-6)]


def matching_subset(crop: np.ndarray, stems: dict[str, np.ndarray], names: list[str]) -> tuple[str, ...] | None:
    """The non-empty subset of ``names`` whose sum over some window equals ``crop``, if any."""
    for size in range(1, len(names) + 1):
        for subset in itertools.combinations(names, size):
            if window_starts(crop, sum(stems[n] for n in subset)):
                return subset
    return None


def test_pairs_are_aligned_subsets_of_the_other_stems():
    stems = sine_track(("drums", "bass", "piano", "guitar"), seconds=0.3)
    rng = np.random.default_rng(0)
    pairs = mix_target_pairs(stems, "drums", CROP, 6, rng, SILENCE_DB)
    assert len(pairs) == 6
    others = ["bass", "guitar", "piano"]
    for mix, target in pairs:
        assert mix.shape == target.shape == (2, CROP) and mix.dtype == target.dtype == np.float32
        starts = window_starts(target, stems["drums"])
        assert starts, "target is not a window of the target stem"
        sums = [sum(stems[n][:, start:start + CROP] for n in subset) for start in starts
                for size in range(1, 4) for subset in itertools.combinations(others, size)]
        assert any(np.allclose(mix, s, atol=1e-6) for s in sums), \
            "mix is not a non-empty subset sum of the non-target stems at the target's offset"


def test_pairs_drop_silent_targets_and_keep_the_rest():
    stems = sine_track(("bass", "drums", "piano"), seconds=2.0, silent_head="bass")
    pairs = mix_target_pairs(stems, "bass", CROP, 40, np.random.default_rng(1), SILENCE_DB)
    assert 0 < len(pairs) < 40  # half the offsets fall on the silent head
    assert all(not is_silent(target, SILENCE_DB) for _, target in pairs)


def test_subsets_vary_and_are_never_empty():
    names = ["a", "b", "c"]
    rng = np.random.default_rng(3)
    drawn = {tuple(random_subset(names, rng)) for _ in range(300)}
    assert () not in drawn
    assert len(drawn) == 7  # every non-empty subset of 3 stems appears


def test_mix_crops_are_subset_sums_of_all_stems():
    stems = sine_track(("bass", "drums", "piano"), seconds=0.2)
    crops = autoencoder_crops(stems, "mix", "bass", CROP, 5, np.random.default_rng(2), SILENCE_DB)
    assert len(crops) == 5
    subsets = set()
    for crop in crops:
        assert crop.shape == (2, CROP) and crop.dtype == np.float32
        subset = matching_subset(crop, stems, sorted(stems))
        assert subset, "mix crop is not a subset sum of the track's stems"
        subsets.add(subset)
    assert len(subsets) > 1, "every crop used the same stem subset"


def test_target_crops_use_the_configured_stem_and_drop_silence():
    stems = sine_track(("bass", "drums"), seconds=2.0, silent_head="drums")
    crops = autoencoder_crops(stems, "drums", "drums", CROP, 30, np.random.default_rng(4), SILENCE_DB)
    assert 0 < len(crops) < 30
    for crop in crops:
        assert not is_silent(crop, SILENCE_DB)
        assert matching_subset(crop, {"drums": stems["drums"]}, ["drums"]) == ("drums",)
    with pytest.raises(ValueError, match="unknown autoencoder kind"):
        autoencoder_crops(stems, "bass", "drums", CROP, 1, np.random.default_rng(0), SILENCE_DB)


def test_short_segments_and_missing_stems_give_nothing():
    short = sine_track(("bass", "drums"), seconds=0.05)  # 400 samples < one crop
    rng = np.random.default_rng(0)
    assert autoencoder_crops(short, "mix", "bass", CROP, 4, rng, SILENCE_DB) == []
    assert mix_target_pairs(short, "bass", CROP, 4, rng, SILENCE_DB) == []
    only_target = sine_track(("bass",), seconds=1.0)
    assert mix_target_pairs(only_target, "bass", CROP, 4, rng, SILENCE_DB) == []
    no_target = sine_track(("drums", "piano"), seconds=1.0)
    assert mix_target_pairs(no_target, "bass", CROP, 4, rng, SILENCE_DB) == []


def test_same_seed_same_crops_other_epoch_other_crops():
    stems = sine_track(("bass", "drums", "piano"), seconds=2.0)

    def draw(epoch: int):
        return mix_target_pairs(stems, "bass", CROP, 4, segment_rng(7, "track1", epoch), SILENCE_DB)

    first, again, later = draw(0), draw(0), draw(1)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, later))


def shard_row(stems: dict[str, np.ndarray], key: str = "track1") -> dict:
    row = {"__key__": key, "json": json.dumps({"sample_rate": RATE, "stems": sorted(stems)}).encode()}
    for name, audio in stems.items():
        row[f"{name}.flac"] = encode_flac(audio, RATE)
    return row


def test_decode_row_round_trips_and_skips_corrupt_members():
    stems = sine_track(("bass", "drums", "piano"), seconds=0.5)
    row = shard_row(stems)
    row["piano.flac"] = row["piano.flac"][: len(row["piano.flac"]) // 3]  # truncated FLAC
    row["drums.flac"] = b"not a flac file at all"
    decoded = decode_row(row)
    assert sorted(decoded.corrupt) == ["drums.flac", "piano.flac"]
    assert list(decoded.stems) == ["bass"]
    assert decoded.sample_rate == RATE and decoded.meta["stems"] == ["bass", "drums", "piano"]
    assert decoded.stems["bass"].shape == stems["bass"].shape
    assert np.abs(decoded.stems["bass"] - stems["bass"]).max() < 1e-3  # 16-bit FLAC


def test_decode_row_accepts_dict_json_and_limits_stems():
    row = shard_row(sine_track(("bass", "drums"), seconds=0.3))
    row["json"] = json.loads(row["json"])  # decoder=True gives a dict
    decoded = decode_row(row, only=["drums"])
    assert list(decoded.stems) == ["drums"] and decoded.corrupt == []
    bad_json = dict(row, json=b"{not json")
    assert decode_row(bad_json).corrupt == ["json"]


def test_stems_absent_from_a_track_are_not_counted_as_corrupt():
    # In a block of tracks with different stems, Ray fills the missing columns with None or NaN.
    from bassray.audio import encode_flac
    from bassray.data.crops import decode_row
    audio = np.zeros((2, 1600), np.float32)
    row = {"__key__": "t", "json": b'{"sample_rate": 16000}', "bass.flac": encode_flac(audio, 16000),
           "guitar.flac": float("nan"), "piano.flac": None, "drums.flac": b"garbage"}
    segment = decode_row(row)
    assert set(segment.stems) == {"bass"}
    assert segment.corrupt == ["drums.flac"]
