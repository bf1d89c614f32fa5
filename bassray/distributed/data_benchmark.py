"""Audio pipeline throughput: Ray Data crops/s beside raw FLAC decoding (the ceiling).

Three pipelines are timed: mix-autoencoder crops (decodes every stem), target-autoencoder crops
(decodes only the target stem) and (mix, target) pairs (every stem). Figures per CPU core divide by
the Ray cluster's CPUs; the raw decode runs in this one process, so it is per core already.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from bassray.config import Config, load_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny", help="preset (tiny, paper) or a YAML path")
    parser.add_argument("--data", default=None, help="folder of audio shards (default: make a small set)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--seconds", type=float, default=20.0, help="time per pipeline (at least one epoch)")
    parser.add_argument("--tracks", type=int, default=24, help="tracks to make when --data is not given")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: autoencoder_training.batch_size of the config")


def make_shards(config: Config, out_dir: Path, n_tracks: int) -> str:
    """Synthetic songs when the generator works here, else sine stems; returns what was used."""
    try:
        from bassray.data.synth import synthesize_dataset
        synthesize_dataset(out_dir, config, num_tracks=n_tracks)
        if list(out_dir.glob("train-*.tar")):
            return "synthetic songs (bassray.data.synth)"
    except Exception as exc:  # absent or unfinished generator: the fixture measures the same pipeline
        log.info("synthetic song generator unavailable (%s): using sine stems", exc)
    from bassray.data.shards import write_shards
    from bassray.data.sine_stems import sine_segments
    segments = sine_segments(n_tracks, config.data.synth_song_seconds, config.audio.sample_rate,
                             config.audio.channels, seed=0)
    # Small shards (a few segments each) so even a few tracks spread over every CPU; with one
    # segment per shard, Ray's per-task overhead (~0.1 s) would dominate the figures.
    write_shards(segments, out_dir, shard_target_mb=4.0, val_fraction=0.0, test_fraction=0.0,
                 split_seed=0)
    return "sine stems (bassray.data.sine_stems)"


def raw_decode(paths: list[str]) -> dict[str, float]:
    """Decode every FLAC member with soundfile, one process: the pipeline's ceiling."""
    from bassray.data.crops import decode_flac
    from bassray.data.shards import iter_shard_members
    start = time.perf_counter()
    segments, segment_seconds, stem_seconds = 0, 0.0, 0.0
    for path in paths:
        for _, columns in iter_shard_members(path):
            longest = 0.0
            for column, blob in columns.items():
                if column.endswith(".flac"):
                    audio, rate = decode_flac(blob)
                    stem_seconds += audio.shape[1] / rate
                    longest = max(longest, audio.shape[1] / rate)
            segments += 1
            segment_seconds += longest
    elapsed = time.perf_counter() - start
    return {"segments": segments, "segment_seconds": segment_seconds, "elapsed": elapsed,
            "segments_per_s": segments / elapsed, "track_s_per_s": segment_seconds / elapsed,
            "stem_s_per_s": stem_seconds / elapsed}


def in_process_crops(paths: list[str], config: Config) -> dict[str, float]:
    """The mix cropper called in this process, without Ray: decoding plus cropping, no scheduling."""
    from bassray.data.shards import iter_shard_members
    from bassray.distributed.datasets import SegmentCropper
    crop_samples = int(round(config.data.crop_seconds * config.audio.sample_rate))
    cropper = SegmentCropper("autoencoder", config, crop_samples, seed=0, stats=None, kind="mix")
    start = time.perf_counter()
    crops = sum(len(cropper(dict(columns, __key__=key)))
                for path in paths for key, columns in iter_shard_members(path))
    return {"crops_per_s": crops / (time.perf_counter() - start)}


def time_pipeline(make_dataset, columns: tuple[str, ...], batch_size: int, seconds: float
                  ) -> dict[str, float]:
    """Iterate epochs for ``seconds`` (at least one); times from the first batch, so start-up
    (scheduling the first read tasks) is reported apart."""
    import torch

    from bassray.distributed.datasets import torch_batches
    from bassray.distributed.pipeline_stats import PipelineStats
    stats = PipelineStats()
    dataset = make_dataset(stats)
    started = time.perf_counter()
    first = None
    crops = segments_at_first = 0
    while first is None or time.perf_counter() - first < seconds:
        for batch in torch_batches(dataset, batch_size, columns=columns, shuffle_buffer=4 * batch_size,
                                   device=torch.device("cpu")):
            if first is None:
                first, segments_at_first = time.perf_counter(), stats.snapshot().get("segments", 0)
                continue
            crops += batch[columns[0]].shape[0]
    elapsed = time.perf_counter() - first
    counts = stats.snapshot()
    return {"startup_s": first - started, "elapsed": elapsed, "crops": crops,
            "crops_per_s": crops / elapsed,
            "segments_per_s": (counts.get("segments", 0) - segments_at_first) / elapsed,
            "silent_fraction": counts.get("crops_silent", 0) / max(1, counts.get("crops", 0)
                                                                  + counts.get("crops_silent", 0))}


def run(args: argparse.Namespace) -> None:
    import os

    import ray

    from bassray.distributed.datasets import (AUDIO_COLUMNS, PAIR_COLUMNS, autoencoder_dataset,
                                              list_split_shards, pairs_dataset)
    config = load_config(args.config)
    batch_size = args.batch_size or config.autoencoder_training.batch_size
    with tempfile.TemporaryDirectory(prefix="bassray-bench-") as tmp:
        data_dir, source = args.data, f"shards in {args.data}"
        if data_dir is None:
            data_dir = tmp
            source = make_shards(config, Path(tmp), args.tracks)
        paths = list_split_shards(data_dir, args.split)
        ceiling = raw_decode(paths)
        local = in_process_crops(paths, config)
        seg_s = ceiling["segment_seconds"] / max(1, ceiling["segments"])
        if not ray.is_initialized():
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        cpus = float(ray.cluster_resources().get("CPU", 1))
        target = config.data.target_stem
        pipelines = {
            "autoencoder mix": (lambda s: autoencoder_dataset(data_dir, args.split, "mix", config, stats=s),
                                AUDIO_COLUMNS),
            f"autoencoder {target}": (lambda s: autoencoder_dataset(data_dir, args.split, target, config,
                                                                    stats=s), AUDIO_COLUMNS),
            "pairs (mix, target)": (lambda s: pairs_dataset(data_dir, args.split, config, stats=s),
                                    PAIR_COLUMNS),
        }
        results = {name: time_pipeline(make, cols, batch_size, args.seconds)
                   for name, (make, cols) in pipelines.items()}

    crop_s = config.data.crop_seconds
    n = config.data.crops_per_segment
    print(f"data: {source}; {ceiling['segments']} segments of {seg_s:.1f} s, {len(paths)} shards, "
          f"{config.audio.sample_rate} Hz x {config.audio.channels} ch; config {config.name}, "
          f"{crop_s} s crops, {n} per segment, batch {batch_size}; Ray CPUs {cpus:g}")
    print(f"{'':26s}{'crops/s':>10s}{'crops/s/core':>14s}{'crop-audio s/s/core':>21s}"
          f"{'track s/s/core':>16s}{'silent':>8s}{'start s':>9s}")
    print(f"{'raw FLAC decode (ceiling)':26s}{ceiling['segments_per_s'] * n:10.1f}"
          f"{ceiling['segments_per_s'] * n:14.1f}{ceiling['segments_per_s'] * n * crop_s:21.1f}"
          f"{ceiling['track_s_per_s']:16.1f}{'':>8s}{'':>9s}")
    local_crops = local["crops_per_s"]
    print(f"{'mix crops, no Ray':26s}{local_crops:10.1f}{local_crops:14.1f}{local_crops * crop_s:21.1f}"
          f"{'':>16s}{'':>8s}{'':>9s}")
    for name, r in results.items():
        per_core = r["crops_per_s"] / cpus
        print(f"{name:26s}{r['crops_per_s']:10.1f}{per_core:14.1f}{per_core * crop_s:21.1f}"
              f"{r['segments_per_s'] * seg_s / cpus:16.1f}{r['silent_fraction']:8.0%}{r['startup_s']:9.1f}")
    print(f"(raw decode and 'no Ray': one process, so per core already; raw decode reads all stems at "
          f"{ceiling['stem_s_per_s']:.0f} stem-audio s/s and its crops/s assume {n} kept crops per "
          f"segment. Ray rows: Ray CPUs shared with the driver that consumes the batches)")
