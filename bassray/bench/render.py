"""MIDI rendering throughput of `bassray data render`: songs per core-minute on the current Ray.

    python jobs/benchmark.py render --songs 32 --seconds 30
    ray job submit --working-dir . -- python jobs/benchmark.py render --songs 512   # on a cluster

Writes ``--songs`` MIDI files composed like the synthetic songs (every part in one file, so the job
must split them), renders them with ``bassray data render``'s own job into a temporary folder and
prints files per second, songs per core-minute over the CPUs Ray gives the job, seconds of
audio rendered per core-second and the shards' bytes per hour of audio. With ``--plan-files`` and
``--plan-seconds`` it also projects those rates onto a whole collection (for the Lakh MIDI dataset:
core-hours, wall hours on ``--plan-cores`` cores, storage and shard count); the projection assumes
the collection's files render at the same rate per second of audio as the benchmark's songs.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def write_midi_songs(folder: Path, songs: int, seconds: float) -> None:
    import pretty_midi

    from bassray.data.compose import compose_song
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(songs):
        song = compose_song(10_000 + i, seconds)
        midi = pretty_midi.PrettyMIDI(initial_tempo=song.tempo)
        for stem in song.stems:
            midi.instruments += song.stem_midi(stem).instruments
        midi.write(str(folder / f"song-{i:05d}.mid"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--songs", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each song")
    parser.add_argument("--files-per-batch", type=int, default=4)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--plan-files", type=int, default=0,
                        help="project onto a collection of this many usable files (0: no plan)")
    parser.add_argument("--plan-seconds", type=float, default=240.0,
                        help="mean rendered length of the collection's files (render cuts at --max-seconds, 300)")
    parser.add_argument("--plan-cores", type=int, default=256, help="cluster cores for the plan's wall time")


def shard_stats(shards: Path) -> tuple[int, int]:
    """(total bytes, count) of the finished shards under ``shards``."""
    files = list(shards.rglob("*.tar"))
    return sum(f.stat().st_size for f in files), len(files)


def print_plan(args: argparse.Namespace, audio_s_per_core_s: float, bytes_per_audio_hour: float,
               shard_bytes: float) -> None:
    audio_hours = args.plan_files * args.plan_seconds / 3600.0
    core_hours = audio_hours / audio_s_per_core_s
    print(f"plan: {args.plan_files} files x {args.plan_seconds:g} s = {audio_hours:,.0f} h of audio")
    print("| core-hours | wall hours on %d cores | storage | shards |" % args.plan_cores)
    print("|---:|---:|---:|---:|")
    print(f"| {core_hours:,.0f} | {core_hours / args.plan_cores:,.1f} | "
          f"{audio_hours * bytes_per_audio_hour / 1e12:,.2f} TB | "
          f"{audio_hours * bytes_per_audio_hour / shard_bytes:,.0f} of {shard_bytes / 2**20:g} MiB |")


def run(args: argparse.Namespace) -> None:
    import ray

    from bassray.config import load_config
    from bassray.distributed.render_midi import render_midi_collection
    from bassray.distributed.runner import ensure_ray
    with tempfile.TemporaryDirectory(prefix="bassray-render-bench-") as folder:
        work = Path(folder)
        write_midi_songs(work / "midi", args.songs, args.seconds)
        ensure_ray()
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
        started = time.perf_counter()
        manifest = render_midi_collection(work / "midi", work / "shards", load_config(args.config),
                                          files_per_batch=args.files_per_batch)
        wall = time.perf_counter() - started
        shard_bytes, shard_count = shard_stats(work / "shards")
    kept = manifest["counts"]["tracks_kept"]
    audio_s = kept * args.seconds
    if not kept:
        raise SystemExit(f"render: no song was kept ({manifest['counts']}); nothing to measure")
    print(f"render: {kept}/{args.songs} songs of {args.seconds:g} s on {nodes} node(s), {cpus:g} CPUs, "
          f"{args.files_per_batch} files per task (Ray already started)")
    per_hour = shard_bytes / (audio_s / 3600.0)
    print("| songs/s | songs per core-minute | audio s per core-s | wall s | shard GB per audio hour | shards |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {kept / wall:.2f} | {kept / wall * 60 / cpus:.1f} | {audio_s / wall / cpus:.1f} | {wall:.1f} "
          f"| {per_hour / 1e9:.3f} | {shard_count} |")
    if args.plan_files:
        # Each task writes its own shard series, so a benchmark's few songs leave shards far below
        # the configured size; at scale a task's files fill them, and the plan counts full shards.
        print_plan(args, audio_s / wall / cpus, per_hour, load_config(args.config).data.shard_target_mb * 2**20)
