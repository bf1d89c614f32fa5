import numpy as np
import pytest

from bassray.data.latents import (LatentStats, RunningChannelStats, compute_stats, latent_crop_pairs,
                                  npy_bytes, npy_load)
from bassray.distributed.encode_latents import random_subsets


def test_npy_round_trip_keeps_dtype_and_shape():
    a = np.random.default_rng(0).normal(size=(3, 64, 17)).astype(np.float16)
    b = npy_load(npy_bytes(a))
    assert b.dtype == np.float16 and np.array_equal(a, b)


def test_running_stats_match_numpy_over_channels():
    rng = np.random.default_rng(1)
    chunks = [rng.normal(loc=np.arange(4)[:, None], scale=2.0, size=(4, n)) for n in (5, 11, 30)]
    stats = RunningChannelStats()
    for chunk in chunks:
        stats.add(chunk)
    mean, std = stats.mean_std()
    whole = np.concatenate(chunks, axis=1)
    np.testing.assert_allclose(mean, whole.mean(1), rtol=1e-9)
    np.testing.assert_allclose(std, whole.std(1) + 1e-5, rtol=1e-6)


def test_normalised_latents_have_unit_statistics(tmp_path):
    rng = np.random.default_rng(2)
    rows = [(rng.normal(3.0, 5.0, size=(2, 8, 40)), rng.normal(-1.0, 0.5, size=(4, 40))) for _ in range(20)]
    stats = compute_stats(rows)
    stats.save(tmp_path)
    loaded = LatentStats.load(tmp_path)
    mixes = np.concatenate([loaded.normalize_mix(m) for m, _ in rows], axis=0)  # [2*20, 8, 40]
    targets = np.stack([loaded.normalize_target(t) for _, t in rows])
    assert abs(mixes.mean()) < 1e-6 and abs(mixes.std() - 1) < 1e-3
    assert abs(targets.mean()) < 1e-6 and abs(targets.std() - 1) < 1e-3


def test_stats_keep_the_level_offset_and_read_older_files(tmp_path):
    stats = LatentStats([0.0], [1.0], [0.0], [1.0], target_minus_mix_db=-4.5)
    stats.save(tmp_path)
    assert LatentStats.load(tmp_path).target_minus_mix_db == -4.5
    (tmp_path / "latent_stats.json").write_text(
        '{"mix_mean": [0], "mix_std": [1], "target_mean": [0], "target_std": [1]}')
    assert LatentStats.load(tmp_path).target_minus_mix_db is None


def test_missing_stats_say_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="encode_latents"):
        LatentStats.load(tmp_path)


def test_latent_crops_are_aligned_and_pick_one_of_the_mixes():
    length = 50
    mixes = np.stack([np.tile(np.arange(length), (3, 1)) + 100 * k for k in range(4)]).astype(np.float16)
    target = np.tile(np.arange(length), (2, 1)).astype(np.float16)
    pairs = latent_crop_pairs(mixes, target, 16, 20, np.random.default_rng(0))
    assert len(pairs) == 20
    seen = set()
    for mix, tgt in pairs:
        assert mix.shape == (3, 16) and tgt.shape == (2, 16) and mix.dtype == np.float32
        k = int(mix[0, 0] // 100)
        seen.add(k)
        np.testing.assert_array_equal(mix[0] - 100 * k, tgt[0])  # same time offset
    assert len(seen) > 1
    assert latent_crop_pairs(mixes, target, length + 1, 3, np.random.default_rng(0)) == []


def test_random_subsets_start_with_the_full_mix_and_are_distinct():
    rng = np.random.default_rng(0)
    subsets = random_subsets(["piano", "drums", "guitar"], 5, rng)
    assert subsets[0] == ["drums", "guitar", "piano"]
    assert len(subsets) == 5 and len({tuple(s) for s in subsets}) == 5 and all(subsets)
    assert len(random_subsets(["drums"], 4, rng)) == 1  # only one non-empty subset exists


def test_learnt_mix_dropout_keeps_chroma_and_drops_whole_examples():
    import torch
    from bassray.train.diffusion_step import drop_learnt_mix_channels
    mix = torch.randn(256, 20, 5)
    out = drop_learnt_mix_channels(mix, 0.5, 12, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, -12:], mix[:, -12:])  # chroma always kept
    dropped = (out[:, :-12] == 0).flatten(1).all(1)
    kept = torch.equal(out[~dropped], mix[~dropped])
    assert kept and 0.3 < dropped.float().mean() < 0.7  # whole examples, about half of them
    assert drop_learnt_mix_channels(mix, 0.0, 12, torch.Generator()) is mix
