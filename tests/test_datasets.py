"""Ray Data audio pipelines over real shards with a corrupt member and a garbage shard."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch

from bassray.config import load_config
from bassray.data.crops import is_silent
from bassray.data.shards import write_shards
from bassray.data.sine_stems import sine_segments

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local(ray_session):
    """The session's local Ray (another ray.init here fails when an earlier module started it)."""
    ray_session.data.DataContext.get_current().enable_progress_bars = False
    return ray_session


def corrupt_one_member(shard: str) -> None:
    """Rewrite ``shard`` with the first track's drums FLAC cut to a third (a truncated member)."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar if m.isfile()]
    victim = next(m.name for m, _ in members if m.name.endswith(".drums.flac"))
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            if member.name == victim:
                data = data[: len(data) // 3]
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    config = load_config("tiny", ["audio.sample_rate=8000", "data.crops_per_segment=4"])
    out = tmp_path_factory.mktemp("shards")
    segments = sine_segments(6, 3.0, 8000, 2, stems=("drums", "bass", "piano"), seed=1)
    report = write_shards(segments, out, shard_target_mb=0.05, val_fraction=0.0, test_fraction=0.0,
                          split_seed=0)
    shards = report["train"]["shards"]
    assert len(shards) >= 3
    corrupt_one_member(str(out / shards[0]))
    (out / "train-000900.tar").write_bytes(b"\x00garbage, not a tar" * 64)   # unreadable shard
    good = (out / shards[1]).read_bytes()
    (out / "train-000901.tar").write_bytes(good[: len(good) // 2])           # truncated shard
    return out, config, len(segments)


def collect(batches) -> dict[str, torch.Tensor]:
    got: dict[str, list[torch.Tensor]] = {}
    for batch in batches:
        for key, value in batch.items():
            got.setdefault(key, []).append(value)
    return {key: torch.cat(values) for key, values in got.items()}


def test_autoencoder_dataset_counts_bad_data_and_keeps_going(ray_local, shard_dir):
    from bassray.distributed.datasets import autoencoder_dataset, torch_batches
    from bassray.distributed.pipeline_stats import PipelineStats
    data_dir, config, n_tracks = shard_dir
    crop = int(round(config.data.crop_seconds * config.audio.sample_rate))
    for kind in ("mix", "bass"):
        stats = PipelineStats()
        dataset = autoencoder_dataset(data_dir, "train", kind, config, seed=3, stats=stats)
        crops = collect(torch_batches(dataset, 4, shuffle_buffer=8, drop_last=False))["audio"]
        assert crops.dtype == torch.float32 and crops.shape[1:] == (2, crop)
        counts = stats.snapshot()
        assert counts["unreadable_shards"] == 2
        assert counts["segments"] == n_tracks  # every track once; the broken copies gave nothing
        assert counts["crops"] == crops.shape[0] > 0
        assert counts.get("corrupt_members", 0) == (1 if kind == "mix" else 0)  # bass crops never decode drums
        assert all(not is_silent(c.numpy(), config.data.silence_db) for c in crops)


def test_pairs_dataset_aligned_columns_no_silent_targets(ray_local, shard_dir):
    from bassray.distributed.datasets import PAIR_COLUMNS, pairs_dataset, torch_batches
    from bassray.distributed.pipeline_stats import PipelineStats
    data_dir, _, _ = shard_dir
    config = load_config("tiny", ["audio.sample_rate=8000", "data.crops_per_segment=4",
                                  "data.target_stem=drums"])  # nothing hard-codes bass
    stats = PipelineStats(name="test-pairs")
    dataset = pairs_dataset(data_dir, "train", config, crop_samples=1000, seed=0, stats=stats,
                            randomize_blocks=True)
    epochs = [collect(torch_batches(dataset, 3, columns=PAIR_COLUMNS, drop_last=False))
              for _ in range(2)]
    for batch in epochs:
        assert batch["mix"].shape == batch["target"].shape and batch["mix"].shape[1:] == (2, 1000)
        assert all(not is_silent(t.numpy(), config.data.silence_db) for t in batch["target"])
        assert not torch.equal(batch["mix"], batch["target"])
    # Each epoch draws new crops; the counters accumulate across both.
    assert {tuple(t.flatten()[:4].tolist()) for t in epochs[0]["target"]} != \
        {tuple(t.flatten()[:4].tolist()) for t in epochs[1]["target"]}
    counts = PipelineStats(name="test-pairs").snapshot()  # a second handle sees the same counters
    assert counts["corrupt_members"] == 2 and counts["unreadable_shards"] == 2
    assert counts["crops"] == sum(b["target"].shape[0] for b in epochs)


def test_same_seed_same_first_epoch(ray_local, shard_dir):
    from bassray.distributed.datasets import autoencoder_dataset
    data_dir, config, _ = shard_dir

    def first_epoch(seed: int) -> list[bytes]:
        dataset = autoencoder_dataset(data_dir, "train", "mix", config, seed=seed)
        return sorted(np.asarray(row["audio"]).tobytes() for row in dataset.iter_rows())

    assert first_epoch(5) == first_epoch(5)
    assert first_epoch(5) != first_epoch(6)


def test_no_readable_shard_is_a_clear_error(ray_local, tmp_path):
    from bassray.distributed.datasets import autoencoder_dataset
    config = load_config("tiny")
    (tmp_path / "train-000000.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(FileNotFoundError, match="none of the 1 shards is readable"):
        autoencoder_dataset(tmp_path, "train", "mix", config)
    with pytest.raises(FileNotFoundError, match="no 'val' shards"):
        autoencoder_dataset(tmp_path, "val", "mix", config)
    with pytest.raises(ValueError, match="unknown stem kind"):
        autoencoder_dataset(tmp_path, "train", "vocals", config)


def write_latent_shard(path, tracks: dict[str, tuple[bytes, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, (mix, target) in tracks.items():
            for name, data in ((f"{key}.mix_latents.npy", mix), (f"{key}.target_latent.npy", target)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_latent_dataset_counts_bad_tracks_and_keeps_going(ray_local, tmp_path):
    from bassray.data.latents import LatentStats, npy_bytes
    from bassray.distributed.latent_datasets import latent_pairs_dataset
    from bassray.distributed.pipeline_stats import PipelineStats
    config = load_config("tiny", ["diffusion_training.crop_frames=8", "data.crops_per_segment=3",
                                  "diffusion_training.tempo_stretch_probability=0"])  # latents of no real layout
    rng = np.random.default_rng(0)
    track = lambda length: (npy_bytes(rng.normal(size=(2, 64, length)).astype(np.float16)),  # noqa: E731
                            npy_bytes(rng.normal(size=(32, length)).astype(np.float16)))
    (tmp_path / "train").mkdir()
    good_mix, good_target = track(20)
    write_latent_shard(tmp_path / "train" / "a.tar", {"t0": (good_mix, good_target), "t1": track(20),
                                                      "short": track(5)})
    write_latent_shard(tmp_path / "train" / "b.tar", {"t2": track(20), "broken": (good_mix[:40], good_target)})
    (tmp_path / "train" / "c.tar").write_bytes(b"\x00not a tar" * 64)
    LatentStats([0.0] * 64, [1.0] * 64, [0.0] * 32, [1.0] * 32).save(tmp_path)
    counts = PipelineStats()
    rows = latent_pairs_dataset(tmp_path, "train", config, counts=counts).take_all()
    assert len(rows) == 3 * 3 and all(r["mix"].shape == (64, 8) and r["target"].shape == (32, 8) for r in rows)
    got = counts.snapshot()
    assert got["unreadable_shards"] == 1 and got["shards"] == 2
    assert got["corrupt_members"] == 1 and got["tracks_too_short"] == 1 and got["crops"] == 9


def test_latent_dataset_reads_a_small_collection_several_times_per_epoch(ray_local, tmp_path):
    """Two shards and min_files_per_epoch=4: one epoch is two passes, each cropping anew."""
    from bassray.data.latents import LatentStats, npy_bytes
    from bassray.distributed.latent_datasets import latent_pairs_dataset
    from bassray.distributed.pipeline_stats import PipelineStats
    config = load_config("tiny", ["diffusion_training.crop_frames=8", "data.crops_per_segment=3",
                                  "diffusion_training.tempo_stretch_probability=0"])  # latents of no real layout
    rng = np.random.default_rng(1)
    track = lambda: (npy_bytes(rng.normal(size=(2, 64, 40)).astype(np.float16)),  # noqa: E731
                     npy_bytes(rng.normal(size=(32, 40)).astype(np.float16)))
    (tmp_path / "train").mkdir()
    write_latent_shard(tmp_path / "train" / "a.tar", {"t0": track()})
    write_latent_shard(tmp_path / "train" / "b.tar", {"t1": track()})
    LatentStats([0.0] * 64, [1.0] * 64, [0.0] * 32, [1.0] * 32).save(tmp_path)
    counts = PipelineStats()
    rows = latent_pairs_dataset(tmp_path, "train", config, counts=counts, min_files_per_epoch=4).take_all()
    got = counts.snapshot()
    assert got["shards"] == 2 and got["tracks_read"] == 4 and len(rows) == 4 * 3
    crops = {r["target"].tobytes() for r in rows}
    assert len(crops) > 2 * 3  # the second pass took other crops, not copies of the first


def test_latent_dataset_stretches_the_training_crops_in_time_and_not_the_others(ray_local, tmp_path):
    """With every crop stretched twofold, the target's rhythm-code attacks (one every 12 parts) come
    every 24 parts in the training split's crops, and every 12 in the validation split's."""
    from bassray.data.latents import LatentStats, npy_bytes
    from bassray.distributed.latent_datasets import latent_pairs_dataset
    from bassray.models.latent_layout import LatentLayout
    from bassray.models.rhythm_code import code_attacks
    config = load_config("tiny", ["diffusion_training.crop_frames=16", "data.crops_per_segment=4",
                                  "diffusion_training.tempo_stretch_probability=1.0",
                                  "diffusion_training.tempo_stretch_range=[2.0,2.0]"])
    mix_layout, target_layout = (LatentLayout.of(config.mix_autoencoder), LatentLayout.of(config.bass_autoencoder))
    parts, length = config.bass_autoencoder.rhythm_parts, 40
    target = np.zeros((target_layout.total, length))
    onset = np.zeros(length * parts)
    onset[5::12] = 4.0
    target[target_layout.rhythm_slice][parts:2 * parts] = onset.reshape(length, parts).T  # the onset channels
    mix = np.random.default_rng(0).normal(size=(2, mix_layout.total, length))
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        write_latent_shard(tmp_path / split / "a.tar", {"t0": (npy_bytes(mix.astype(np.float16)),
                                                               npy_bytes(target.astype(np.float16)))})
    LatentStats([0.0] * mix_layout.total, [1.0] * mix_layout.total,
                [0.0] * target_layout.total, [1.0] * target_layout.total).save(tmp_path)
    for split, gap in (("train", 24), ("val", 12)):
        rows = latent_pairs_dataset(tmp_path, split, config).take_all()
        assert len(rows) == 4
        for row in rows:
            assert row["mix"].shape == (mix_layout.total, 16) and row["target"].shape == (target_layout.total, 16)
            code = torch.from_numpy(row["target"][target_layout.rhythm_slice][None]).float()
            attacks = np.flatnonzero(code_attacks(code, parts, threshold=0.5)[0].numpy())
            assert len(attacks) >= 2 and set(np.diff(attacks)) == {gap}


def test_latent_dataset_gives_the_pitch_as_classes_to_a_class_view_unet(ray_local, tmp_path):
    """With unet.pitch_classes the training crops' targets carry twelve ±1 class channels per pitch
    part (bassray/models/pitch_classes.py), one +1 per pitched part."""
    from bassray.data.latents import LatentStats, npy_bytes
    from bassray.distributed.latent_datasets import latent_pairs_dataset
    from bassray.models.harmonic_phase import latent_with_code, pitch_code
    from bassray.models.latent_layout import LatentLayout
    from bassray.models.pitch_classes import PITCH_CLASSES, diffused_target_dim
    config = load_config("tiny", ["unet.pitch_classes=true", "diffusion_training.crop_frames=8",
                                  "data.crops_per_segment=2", "diffusion_training.tempo_stretch_probability=0"])
    mix_layout, layout = LatentLayout.of(config.mix_autoencoder), LatentLayout.of(config.bass_autoencoder)
    parts, length = config.bass_autoencoder.pitch_parts, 20
    code = pitch_code(torch.linspace(0, 30, length * parts)[None], torch.ones(1, length * parts, dtype=torch.bool))
    target = latent_with_code(torch.randn(1, layout.total, length), code, parts)[0].numpy()
    mix = np.random.default_rng(0).normal(size=(1, mix_layout.total, length))
    (tmp_path / "train").mkdir()
    write_latent_shard(tmp_path / "train" / "a.tar", {"t0": (npy_bytes(mix.astype(np.float16)),
                                                             npy_bytes(target.astype(np.float16)))})
    LatentStats([0.0] * mix_layout.total, [1.0] * mix_layout.total, [0.0] * layout.total, [1.0] * layout.total).save(tmp_path)
    rows = latent_pairs_dataset(tmp_path, "train", config).take_all()
    assert len(rows) == 2
    start = layout.total - layout.pitch
    for row in rows:
        assert row["target"].shape == (diffused_target_dim(config), 8)
        classes = row["target"][start:start + PITCH_CLASSES * parts].reshape(PITCH_CLASSES, parts, 8)
        assert ((classes > 0).sum(0) == 1).all()
