"""Ingest of real stem collections (MUSDB18-HQ, Slakh2100, folders of stems) into audio shards.

Tracks stream one at a time: find (paths only) -> check headers -> load and conform to the
config's rate/channels -> sum stems per vocabulary name -> cut into segments -> shards. A track
that cannot be used is skipped with a reason in the manifest; the run goes on.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bassray.audio import AudioReadError, audio_info, load_audio, rms_db
from bassray.config import Config
from bassray.data.layouts import TrackSource, find_tracks
from bassray.data.shards import TrackSegment, safe_key, write_manifest, write_shards

log = logging.getLogger(__name__)

# Stored stems are 16-bit FLAC, which clips at full scale: tracks whose stems peak above this get
# one gain for all their stems (relative levels, hence every stem-subset mix, stay right).
_MAX_PEAK = 0.999


class TrackSkipped(Exception):
    """A track that cannot become training data; the message is the reason in the manifest."""


def check_headers(source: TrackSource, tolerance_s: float) -> None:
    """Reject unreadable files and disagreeing stem lengths before decoding any audio."""
    durations = {}
    for _, path in source.files:
        try:
            rate, _, frames = audio_info(path)
        except AudioReadError as exc:
            raise TrackSkipped(f"unreadable file {path}: {exc}") from exc
        if frames <= 0:
            raise TrackSkipped(f"unreadable file {path}: it holds no samples")
        durations[path.name] = frames / rate
    spread = max(durations.values()) - min(durations.values())
    if spread > tolerance_s:
        listing = ", ".join(f"{n} {d:.2f}s" for n, d in sorted(durations.items()))
        raise TrackSkipped(f"stem lengths differ by {spread:.2f}s (tolerance {tolerance_s}s): {listing}")


def load_track_stems(source: TrackSource, config: Config) -> dict[str, np.ndarray]:
    """Stems of one track at the config's rate/channels, summed per vocabulary name, trimmed to
    the shortest; raises :class:`TrackSkipped` with the reason when the track is unusable."""
    data, audio = config.data, config.audio
    target = data.target_stem
    if source.skip_reason:
        raise TrackSkipped(source.skip_reason)
    if not any(name == target for name, _ in source.files):
        raise TrackSkipped(f"no {target} stem")
    if not any(name != target for name, _ in source.files):
        raise TrackSkipped(f"no stems besides {target} (nothing to condition on)")
    check_headers(source, data.stem_length_tolerance_s)

    stems: dict[str, np.ndarray] = {}
    for name, path in source.files:
        try:
            wave = load_audio(path, audio.sample_rate, audio.channels)  # [C, T]
        except AudioReadError as exc:
            raise TrackSkipped(f"unreadable file {path}: {exc}") from exc
        if name in stems:  # several files of one vocabulary name (e.g. two guitars): sum them
            n = min(stems[name].shape[1], wave.shape[1])
            stems[name] = stems[name][:, :n] + wave[:, :n]
        else:
            stems[name] = wave
    length = min(w.shape[1] for w in stems.values())
    stems = {name: np.ascontiguousarray(w[:, :length]) for name, w in stems.items()}

    seconds = length / audio.sample_rate
    if seconds < data.crop_seconds:
        raise TrackSkipped(f"track is {seconds:.2f}s long, shorter than one training crop "
                           f"({data.crop_seconds}s)")
    level = rms_db(stems[target])
    if level < data.silence_db:
        raise TrackSkipped(f"silent {target} stem (rms {level:.1f} dBFS < {data.silence_db} dBFS)")
    return stems


def limit_peak(stems: dict[str, np.ndarray]) -> float:
    """Scale all stems by one gain so none clips in 16-bit FLAC; returns the gain (1.0 if none)."""
    peak = max(float(np.abs(w).max()) for w in stems.values())
    if peak <= _MAX_PEAK:
        return 1.0
    gain = _MAX_PEAK / peak
    for name in stems:
        stems[name] *= gain
    return gain


def segment_bounds(length: int, sample_rate: int, segment_seconds: float) -> list[tuple[int, int]]:
    """Evenly sized [start, end) sample ranges of at most ``segment_seconds`` covering ``length``."""
    max_len = max(1, int(segment_seconds * sample_rate))
    count = max(1, math.ceil(length / max_len))
    edges = [round(i * length / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


def track_segments(source: TrackSource, track_key: str, stems: dict[str, np.ndarray],
                   config: Config, layout: str, gain: float) -> Iterator[TrackSegment]:
    rate = config.audio.sample_rate
    length = next(iter(stems.values())).shape[1]
    bounds = segment_bounds(length, rate, config.data.segment_seconds)
    for index, (start, end) in enumerate(bounds):
        meta = dict(source.meta, source=layout, segment_index=index, segment_count=len(bounds),
                    start_seconds=start / rate, gain=gain)
        yield TrackSegment(key=f"{track_key}-s{index:03d}", track_id=track_key, sample_rate=rate,
                           stems={n: np.ascontiguousarray(w[:, start:end]) for n, w in stems.items()},
                           meta=meta)


def unique_track_keys(sources: list[TrackSource]) -> list[str]:
    """WebDataset-safe keys from track names, made unique when two names collapse to one key."""
    keys, seen = [], set()
    for source in sources:
        key = base = safe_key(source.name)
        n = 1
        while key in seen:
            key = f"{base}_{n}"
            n += 1
        seen.add(key)
        keys.append(key)
    return keys


class _IngestRun:
    """Streams segments track by track and records what was kept and skipped (for the manifest)."""

    def __init__(self, sources: list[TrackSource], config: Config, layout: str):
        self.sources, self.config, self.layout = sources, config, layout
        self.skipped: list[dict[str, str]] = []
        self.kept = 0
        self.stem_counts: dict[str, int] = {}

    def segments(self) -> Iterator[TrackSegment]:
        total = len(self.sources)
        log_every = max(1, total // 20)
        for i, (source, key) in enumerate(zip(self.sources, unique_track_keys(self.sources)), 1):
            try:
                stems = load_track_stems(source, self.config)
            except TrackSkipped as exc:
                log.info("skipping track %s: %s", source.name, exc)
                self.skipped.append({"track": source.name, "reason": str(exc)})
            else:
                self.kept += 1
                for name in stems:
                    self.stem_counts[name] = self.stem_counts.get(name, 0) + 1
                gain = limit_peak(stems)
                yield from track_segments(source, key, stems, self.config, self.layout, gain)
                del stems  # only one track's audio is alive at a time
            if i % log_every == 0 or i == total:
                log.info("ingest: %d/%d tracks done (%d kept, %d skipped)",
                         i, total, self.kept, len(self.skipped))


def ingest(src: str | Path, out_dir: str | Path, layout: str, config: Config) -> dict[str, Any]:
    """Turn the stem collection at ``src`` (``layout``: musdb, slakh or folders) into audio shards
    in ``out_dir`` plus ``manifest.json``; returns the manifest."""
    sources = find_tracks(src, layout)
    log.info("ingest: %d tracks found in %s (layout %s)", len(sources), src, layout)
    run = _IngestRun(sources, config, layout)
    data = config.data
    splits = write_shards(run.segments(), out_dir, shard_target_mb=data.shard_target_mb,
                          val_fraction=data.val_fraction, test_fraction=data.test_fraction,
                          split_seed=data.split_seed)
    manifest = {
        "kind": "audio", "layout": layout, "source": str(Path(src).resolve()),
        "sample_rate": config.audio.sample_rate, "channels": config.audio.channels,
        "target_stem": data.target_stem, "segment_seconds": data.segment_seconds,
        "counts": {
            "tracks_in": len(sources), "tracks_kept": run.kept, "tracks_skipped": len(run.skipped),
            "segments": sum(s["segments"] for s in splits.values()),
            "hours": {name: s["hours"] for name, s in splits.items()},
        },
        "stems": dict(sorted(run.stem_counts.items())),  # tracks holding each stem name
        "splits": splits,
        "shards": {name: s["shards"] for name, s in splits.items()},
        "skipped": run.skipped, "skipped_count": len(run.skipped),
    }
    path = write_manifest(out_dir, manifest)
    log.info("ingest: %d of %d tracks kept, %d segments; manifest %s",
             run.kept, len(sources), manifest["counts"]["segments"], path)
    if run.kept == 0:
        log.warning("ingest: no track of %s was usable; see 'skipped' in %s", src, path)
    return manifest
