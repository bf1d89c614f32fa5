"""Audio shards: WebDataset tars ``<split>-NNNNNN.tar`` holding, per track segment,
``<key>.json`` and one ``<key>.<stem>.flac`` per stem (docs/design.md §3).

Shards are written to ``*.tar.partial`` and renamed when complete, so an interrupted run never
leaves a shard that looks whole; a re-run clears the output folder and rewrites it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import webdataset as wds

from bassray.audio import AudioReadError, encode_flac, read_audio

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# ``prefix`` names a batch of a job that writes its shards in parts (the MIDI render), else "".
SHARD_PATTERN = "{split}-{prefix}{index:06d}.tar"
MANIFEST_NAME = "manifest.json"
# Several shard folders may be given as one data argument, "synth,rendered-midi": each split is the
# union of theirs (a URI holds no comma; a local path with one must be renamed).
DATA_DIR_SEPARATOR = ","
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass
class TrackSegment:
    """One sample of a shard: a track, or a segment of at most ``segment_seconds`` of one."""
    key: str                       # unique, no dots (WebDataset cuts keys at the first dot)
    track_id: str                  # segments of one track share it; splits are made by track
    sample_rate: int
    stems: dict[str, np.ndarray]   # stem name -> float32 [channels, samples]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _KEY_RE.match(self.key):
            raise ValueError(f"shard key {self.key!r} may hold only letters, digits, '_' and '-'")


def safe_key(text: str) -> str:
    """A WebDataset-safe key from any track name."""
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", text).strip("_") or "track"


def data_dirs(spec: str | Path) -> list[str]:
    """The shard folders (or URIs) a data argument names: one, or several joined by commas."""
    dirs = [d.strip() for d in str(spec).split(DATA_DIR_SEPARATOR) if d.strip()]
    if not dirs:
        raise ValueError(f"no shard folder in the data argument {str(spec)!r}")
    return dirs


def resolve_data_dirs(spec: str | Path) -> str:
    """The data argument with each local folder made absolute (for workers on other paths)."""
    from bassray.remote import is_uri
    return DATA_DIR_SEPARATOR.join(d if is_uri(d) else str(Path(d).expanduser().resolve()) for d in data_dirs(spec))


def split_for(track_id: str, val_fraction: float, test_fraction: float, seed: int) -> str:
    """Deterministic split of a track from a hash of its id and the seed; never per segment."""
    digest = hashlib.sha256(f"{seed}:{track_id}".encode()).digest()
    return split_at(int.from_bytes(digest[:8], "big") / 2**64, val_fraction, test_fraction)


def split_at(u: float, val_fraction: float, test_fraction: float) -> str:
    """The split of a track placed at ``u`` in [0, 1): test below ``test_fraction``, val next."""
    if u < test_fraction:
        return "test"
    return "val" if u < test_fraction + val_fraction else "train"


def segment_metadata(segment: TrackSegment) -> dict[str, Any]:
    first = next(iter(segment.stems.values()))
    meta = dict(segment.meta)
    meta.update(
        key=segment.key, track_id=segment.track_id, sample_rate=segment.sample_rate,
        channels=int(first.shape[0]), stems=sorted(segment.stems),
        duration=float(first.shape[1] / segment.sample_rate),
    )
    return meta


class ShardWriter:
    """Writes segments of one split into tars of about ``target_bytes`` each."""

    def __init__(self, out_dir: str | Path, split: str, target_bytes: int, prefix: str = ""):
        self.out_dir = Path(out_dir)
        self.split, self.prefix = split, prefix
        self.target_bytes = int(target_bytes)
        self.index = 0
        self.paths: list[Path] = []
        self._tar: wds.TarWriter | None = None
        self._file = None
        self._partial: Path | None = None
        self._bytes = 0

    def _open(self) -> None:
        final = self.out_dir / SHARD_PATTERN.format(split=self.split, prefix=self.prefix, index=self.index)
        self._partial = final.with_suffix(".tar.partial")
        self._file = open(self._partial, "wb")
        self._tar = wds.TarWriter(self._file)
        self._bytes = 0

    def _finish(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._file.close()
        final = self._partial.with_suffix("")  # drop ".partial"
        self._partial.rename(final)
        self.paths.append(final)
        self._tar = None
        self.index += 1

    def write(self, segment: TrackSegment) -> None:
        if self._tar is None:
            self._open()
        sample: dict[str, Any] = {"__key__": segment.key,
                                  "json": json.dumps(segment_metadata(segment)).encode()}
        for stem, audio in segment.stems.items():
            sample[f"{stem}.flac"] = encode_flac(audio, segment.sample_rate)
        self._tar.write(sample)
        self._bytes += sum(len(v) for k, v in sample.items() if k != "__key__")
        if self._bytes >= self.target_bytes:
            self._finish()

    def close(self) -> list[Path]:
        self._finish()
        return self.paths


def clear_shards(out_dir: str | Path) -> None:
    """Remove shards, partial shards and the manifest of an earlier (maybe interrupted) run."""
    out_dir = Path(out_dir)
    for pattern in ("*.tar", "*.tar.partial", MANIFEST_NAME):
        for path in out_dir.glob(pattern):
            path.unlink()


def write_shards(segments: Iterable[TrackSegment], out_dir: str | Path, *, shard_target_mb: float,
                 val_fraction: float, test_fraction: float, split_seed: int, prefix: str = ""
                 ) -> dict[str, Any]:
    """Write segments into per-split shards; returns counts per split (tracks, segments, seconds).
    Without ``prefix`` the folder is cleared first; with one, only that batch's shards are written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not prefix:
        clear_shards(out_dir)
    writers = {s: ShardWriter(out_dir, s, int(shard_target_mb * 2**20), prefix) for s in SPLITS}
    stats = {s: {"tracks": set(), "official": set(), "segments": 0, "seconds": 0.0} for s in SPLITS}
    for segment in segments:
        # A collection's own split when it has one (MUSDB18, Slakh2100), else a hash of the track.
        split = segment.meta.get("official_split") or split_for(segment.track_id, val_fraction, test_fraction,
                                                                split_seed)
        if split not in writers:
            raise ValueError(f"segment {segment.key}: unknown split {split!r} (splits are {', '.join(SPLITS)})")
        writers[split].write(segment)
        first = next(iter(segment.stems.values()))
        stats[split]["tracks"].add(segment.track_id)
        if segment.meta.get("official_split"):
            stats[split]["official"].add(segment.track_id)
        stats[split]["segments"] += 1
        stats[split]["seconds"] += first.shape[1] / segment.sample_rate
    shards = {s: [p.name for p in writers[s].close()] for s in SPLITS}
    return {s: {"tracks": len(v["tracks"]), "official_split_tracks": len(v["official"]), "segments": v["segments"],
                "hours": v["seconds"] / 3600.0, "shards": shards[s]} for s, v in stats.items()}


def write_manifest(out_dir: str | Path, manifest: dict[str, Any]) -> Path:
    path = Path(out_dir) / MANIFEST_NAME
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.rename(path)
    return path


def list_shards(data_dir: str | Path, split: str) -> list[str]:
    """Complete shard paths of a split, sorted, from one local folder or several joined by commas;
    a clear error when there are none."""
    paths = []
    for folder in data_dirs(data_dir):
        if any(Path(folder).glob("*.tar.partial")):
            # Shards finished before an interruption look whole, but the set is not: refuse it.
            raise ValueError(f"{folder} holds partial shards from an interrupted write: run the "
                             f"`bassray data synth` / `bassray data ingest` command again to rewrite it")
        paths += sorted(str(p) for p in Path(folder).glob(f"{split}-*.tar"))
    if not paths:
        raise FileNotFoundError(f"no {split!r} shards in {data_dir}: run `bassray data synth` or "
                                f"`bassray data ingest` first, or check the path")
    return paths


def iter_shard_members(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {column: bytes}) per sample of one tar, without Ray; columns as WebDataset names them."""
    current_key, columns = None, {}
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = Path(member.name).name
            key, _, column = name.partition(".")
            if key != current_key and current_key is not None:
                yield current_key, columns
                columns = {}
            current_key = key
            columns[column] = tar.extractfile(member).read()
    if current_key is not None:
        yield current_key, columns


def iter_segments(paths: Iterable[str | Path]) -> Iterator[TrackSegment]:
    """Decode whole segments from shards (for evaluation and tests; training uses Ray Data)."""
    for path in paths:
        for key, columns in iter_shard_members(path):
            meta = json.loads(columns["json"])
            stems = {}
            for column, blob in columns.items():
                if column.endswith(".flac"):
                    try:
                        stems[column[: -len(".flac")]] = read_audio(blob, name=f"{path}:{key}.{column}")[0]
                    except AudioReadError as exc:
                        log.warning("skipping member: %s", exc)
            yield TrackSegment(key=key, track_id=meta.get("track_id", key),
                               sample_rate=int(meta["sample_rate"]), stems=stems, meta=meta)
