"""MIDI rendering throughput of `bassray data render`: songs per core-minute on the current Ray.

    python jobs/benchmark.py render --songs 32 --seconds 30
    ray job submit --working-dir . -- python jobs/benchmark.py render --songs 512   # on a cluster

Writes ``--songs`` MIDI files composed like the synthetic songs (every part in one file, so the job
must split them), renders them with ``bassray data render``'s own job into a temporary folder and
prints files per second, songs per core-minute over the CPUs Ray gives the job, and seconds of
audio rendered per core-second.
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
    kept = manifest["counts"]["tracks_kept"]
    print(f"render: {kept}/{args.songs} songs of {args.seconds:g} s on {nodes} node(s), {cpus:g} CPUs, "
          f"{args.files_per_batch} files per task (Ray already started)")
    print("| songs/s | songs per core-minute | audio s per core-s | wall s |")
    print("|---:|---:|---:|---:|")
    print(f"| {kept / wall:.2f} | {kept / wall * 60 / cpus:.1f} | {kept * args.seconds / wall / cpus:.1f} | {wall:.1f} |")
