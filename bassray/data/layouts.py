"""Finding the tracks of a stem collection on disk, per layout, without reading any audio.

Each finder returns :class:`TrackSource` records (track name, stem files already mapped to the
vocabulary of :mod:`bassray.data.stems`); :mod:`bassray.data.ingest` loads them one at a time.

- ``musdb``:   MUSDB18-HQ, ``<split>/<track>/{mixture,drums,bass,vocals,other}.wav``.
- ``slakh``:   Slakh2100, ``<split>/TrackNNNNN/stems/SNN.flac`` described by ``metadata.yaml``.

MUSDB18's and Slakh2100's official splits are kept (``official_split`` in the meta); other
collections are split by a hash of the track name.
- ``folders``: one folder per track, one audio file per stem, the file name naming the stem.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from bassray.audio import READABLE_SUFFIXES
from bassray.data.stems import normalize_stem_name

log = logging.getLogger(__name__)

# File names (without suffix) that hold the full mix rather than a stem.
MIX_NAMES = frozenset({"mix", "mixture"})
MUSDB_SPLITS = frozenset({"train", "test"})
# MUSDB18's official validation tracks, a subset of its train folder (as the musdb package and the
# SiSEC/MDX evaluations use them).
MUSDB_VALIDATION = frozenset({
    "Actions - One Minute Smile", "Alexander Ross - Goodbye Bolero", "ANiMAL - Rockshow",
    "Clara Berry And Wooldog - Waltz For My Victims", "Fergessen - Nos Palpitants", "James May - On The Line",
    "Johnny Lokke - Promises & Lies", "Leaf - Summerghost", "Meaxic - Take A Step",
    "Patrick Talbot - A Reason To Leave", "Skelpolu - Human Mistakes", "Traffic Experiment - Sirens",
    "Triviul - Angelsaint", "Young Griffo - Pennies"})
# Slakh2100's split folders, in our split names; its "omitted" folder holds duplicates it drops.
SLAKH_SPLITS = {"train": "train", "validation": "val", "test": "test"}


@dataclass
class TrackSource:
    """One track found on disk; ``skip_reason`` is set when the layout already rules it out."""
    name: str                                  # path of the track relative to the collection root
    files: list[tuple[str, Path]] = field(default_factory=list)  # (vocabulary name, audio file)
    meta: dict[str, Any] = field(default_factory=dict)
    skip_reason: str | None = None


def _is_audio(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in READABLE_SUFFIXES and not path.name.startswith(".")


def _relative_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return rel if rel != "." else path.name


def _audio_folders(root: Path) -> list[Path]:
    """Every folder (root included) that directly holds audio files, sorted for a stable order."""
    folders = {p.parent for p in root.rglob("*") if _is_audio(p)}
    return sorted(folders)


def find_folder_tracks(root: Path) -> list[TrackSource]:
    """Generic layout: each folder holding audio files is a track; each file (not mix) a stem."""
    tracks = []
    for folder in _audio_folders(root):
        files = [(normalize_stem_name(p.stem), p) for p in sorted(folder.iterdir())
                 if _is_audio(p) and p.stem.strip().lower() not in MIX_NAMES]
        name = _relative_name(folder, root)
        tracks.append(TrackSource(name=name, files=files, meta={"track": name}))
    return tracks


def find_musdb_tracks(root: Path) -> list[TrackSource]:
    """MUSDB18-HQ: like the generic layout; keeps MUSDB's own split (its test folder is our test
    split, its validation tracks our val split), so an official test track is never trained on."""
    tracks = find_folder_tracks(root)
    for track in tracks:
        parts = Path(track.name).parts
        if len(parts) > 1 and parts[-2] in MUSDB_SPLITS:
            track.meta["musdb_split"] = parts[-2]
            track.meta["official_split"] = ("test" if parts[-2] == "test" else
                                            "val" if parts[-1] in MUSDB_VALIDATION else "train")
        unexpected = [p.name for name, p in track.files if p.stem not in ("drums", "bass", "vocals", "other")]
        if unexpected:
            log.warning("musdb track %s has files outside MUSDB's stem set %s; mapping them by name",
                        track.name, unexpected)
    return tracks


def _slakh_stem_name(info: dict[str, Any]) -> str:
    if info.get("is_drum"):
        return "drums"
    return normalize_stem_name(str(info.get("inst_class", "other")))


def _slakh_track(meta_path: Path, root: Path) -> TrackSource:
    folder = meta_path.parent
    name = _relative_name(folder, root)
    track = TrackSource(name=name, meta={"track": name})
    parts = Path(name).parts
    if len(parts) > 1 and parts[-2] == "omitted":
        track.skip_reason = "in Slakh2100's omitted folder (a duplicate of another track)"
        return track
    if len(parts) > 1 and parts[-2] in SLAKH_SPLITS:  # its official split: test tracks stay test
        track.meta.update(slakh_split=parts[-2], official_split=SLAKH_SPLITS[parts[-2]])
    try:
        metadata = yaml.safe_load(meta_path.read_text()) or {}
        stems = metadata["stems"]
        if not isinstance(stems, dict):
            raise TypeError("'stems' is not a mapping")
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        track.skip_reason = f"unreadable metadata {meta_path}: {exc}"
        return track
    instruments: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for stem_id, info in sorted(stems.items()):
        info = info or {}
        if info.get("audio_rendered") is False:
            continue  # Slakh lists stems it never rendered
        candidates = [folder / "stems" / f"{stem_id}{s}" for s in (".flac", ".wav")]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            log.debug("slakh %s: stem %s listed in metadata but not on disk", name, stem_id)
            continue  # Slakh omits some listed stems on disk; not an error
        vocab = _slakh_stem_name(info)
        track.files.append((vocab, path))
        instruments[vocab].append({k: info.get(k) for k in
                                   ("inst_class", "program_num", "is_drum", "midi_program_name")})
    track.meta["instruments"] = dict(instruments)
    return track


def find_slakh_tracks(root: Path) -> list[TrackSource]:
    """Slakh2100 (any of its split folders, or one track): every ``metadata.yaml`` beside ``stems/``."""
    metas = sorted(p for p in root.rglob("metadata.yaml") if (p.parent / "stems").is_dir())
    return [_slakh_track(p, root) for p in metas]


FINDERS: dict[str, Callable[[Path], list[TrackSource]]] = {
    "musdb": find_musdb_tracks, "slakh": find_slakh_tracks, "folders": find_folder_tracks,
}


def find_tracks(root: str | Path, layout: str) -> list[TrackSource]:
    """The tracks of a collection in ``layout``; clear errors for a wrong path, layout or empty tree."""
    root = Path(root)
    if layout not in FINDERS:
        raise ValueError(f"unknown layout {layout!r}: use one of {sorted(FINDERS)}")
    if not root.is_dir():
        raise FileNotFoundError(f"stem collection {root} is not a folder: check the path")
    tracks = FINDERS[layout](root)
    if not tracks:
        hint = {"slakh": "TrackNNNNN/metadata.yaml with a stems/ folder",
                "musdb": "<split>/<track>/{bass,drums,vocals,other}.wav",
                "folders": "one folder per track holding one audio file per stem"}[layout]
        raise FileNotFoundError(f"no tracks found in {root} for layout {layout!r}: expected {hint}")
    return tracks
