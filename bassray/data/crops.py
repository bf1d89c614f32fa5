"""Per-segment transforms of the audio pipeline (docs/design.md §3 "Training mixes"), plain numpy.

A shard row (the dict WebDataset gives: ``json``, ``<stem>.flac`` bytes, ``__key__``) is decoded once
and cut into several crops, so decoding a whole segment is never wasted on one 1.5 s crop:

- autoencoder crops: ``kind == "mix"`` sums a random non-empty subset of all stems per crop;
  ``kind == <target stem>`` crops the target stem alone;
- diffusion pairs: the mix is a random non-empty subset of the non-target stems, the target is the
  target stem at the same offset.

Crops that are silent (mix crops) or whose target is silent (target and pair crops) are dropped.
Subset sums may exceed [-1, 1]; they are kept unclipped (the models see the true sum).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import soundfile as sf

log = logging.getLogger(__name__)

FLAC_SUFFIX = ".flac"


@dataclass
class DecodedSegment:
    """One decoded shard row; ``corrupt`` names the members that could not be decoded."""
    key: str
    sample_rate: int | None
    stems: dict[str, np.ndarray]            # stem name -> float32 [C, T], all the same T
    meta: dict[str, Any] = field(default_factory=dict)
    corrupt: list[str] = field(default_factory=list)


def _as_text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode()
    return str(value)


def parse_meta(value: Any) -> dict[str, Any]:
    """The ``json`` column as a dict: WebDataset gives a dict (decoder=True) or bytes (decoder=None)."""
    if isinstance(value, Mapping):
        return dict(value)
    return json.loads(_as_text(value))


def decode_flac(blob: Any) -> tuple[np.ndarray, int]:
    """FLAC bytes -> (float32 [C, T], sample rate); raises on corrupt, truncated or empty data."""
    with sf.SoundFile(io.BytesIO(bytes(blob))) as handle:
        declared, rate = handle.frames, handle.samplerate
        data = handle.read(dtype="float32", always_2d=True)  # [T, C]
    if data.shape[0] == 0:
        raise ValueError("no samples")
    if data.shape[0] < declared:
        raise ValueError(f"truncated: {data.shape[0]} of {declared} frames")
    return np.ascontiguousarray(data.T), int(rate)


def decode_row(row: Mapping[str, Any], only: Iterable[str] | None = None) -> DecodedSegment:
    """Decode a shard row into stems. Never raises for bad data: a member that fails to decode
    (corrupt or truncated FLAC, unreadable JSON, a rate unlike its siblings) is skipped and listed in
    ``corrupt``. ``only`` limits decoding to those stems (e.g. the target alone for its autoencoder)."""
    key = _as_text(row.get("__key__", "?"))
    wanted = set(only) if only is not None else None
    segment = DecodedSegment(key=key, sample_rate=None, stems={})
    if row.get("json") is not None:
        try:
            segment.meta = parse_meta(row["json"])
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("corrupt member %s.json: %s", key, exc)
            segment.corrupt.append("json")
    meta_rate = segment.meta.get("sample_rate")
    for column in sorted(row):
        blob = row[column]
        if not column.endswith(FLAC_SUFFIX) or not isinstance(blob, (bytes, bytearray, memoryview)):
            continue  # stems absent from this track are None (or NaN) in a block of mixed tracks
        name = column[: -len(FLAC_SUFFIX)]
        if wanted is not None and name not in wanted:
            continue
        try:
            audio, rate = decode_flac(blob)
            expected = segment.sample_rate or meta_rate
            if expected is not None and rate != int(expected):
                raise ValueError(f"sample rate {rate} Hz differs from the track's {expected} Hz")
        except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError...)
            log.warning("corrupt member %s.%s skipped: %s", key, column, exc)
            segment.corrupt.append(column)
            continue
        segment.sample_rate = rate
        segment.stems[name] = audio
    if segment.stems:
        # Stems of one track can differ by a few samples after ingest; crop offsets need one length.
        length = min(a.shape[1] for a in segment.stems.values())
        segment.stems = {k: a[:, :length] for k, a in segment.stems.items()}
    return segment


def segment_rng(seed: int, key: str, epoch: int = 0) -> np.random.Generator:
    """A generator seeded by (seed, segment key, epoch): crops are reproducible for a seed whatever
    worker decodes the segment, and differ between epochs."""
    digest = hashlib.sha256(f"{seed}:{key}:{epoch}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def is_silent(audio: np.ndarray, silence_db: float) -> bool:
    """RMS level below ``silence_db`` dBFS."""
    power = float(np.mean(np.square(audio, dtype=np.float64)))
    return 10.0 * np.log10(power + 1e-10) < silence_db


def random_subset(names: list[str], rng: np.random.Generator) -> list[str]:
    """A uniformly random non-empty subset of ``names`` (in their order)."""
    if not names:
        raise ValueError("cannot pick a non-empty subset of no stems")
    mask = int(rng.integers(1, 2 ** len(names)))  # 1 .. 2^n - 1: every non-empty subset equally
    return [name for i, name in enumerate(names) if mask >> i & 1]


def _length(stems: Mapping[str, np.ndarray]) -> int:
    return min(a.shape[1] for a in stems.values())


def _offsets(length: int, crop_samples: int, n_crops: int, rng: np.random.Generator) -> list[int]:
    if length < crop_samples:
        return []  # a segment shorter than a crop gives nothing
    return [int(o) for o in rng.integers(0, length - crop_samples + 1, size=n_crops)]


def _subset_sum(stems: Mapping[str, np.ndarray], names: list[str], start: int, crop_samples: int
                ) -> np.ndarray:
    crop = np.zeros_like(stems[names[0]][:, :crop_samples])
    for name in names:
        crop += stems[name][:, start:start + crop_samples]
    return crop  # [C, crop_samples], unclipped


def autoencoder_crops(stems: Mapping[str, np.ndarray], kind: str, target_stem: str, crop_samples: int,
                      n_crops: int, rng: np.random.Generator, silence_db: float) -> list[np.ndarray]:
    """Up to ``n_crops`` non-silent crops float32 [C, crop_samples] for the ``kind`` autoencoder:
    ``"mix"`` = random non-empty subsets of all stems summed, ``target_stem`` = that stem alone."""
    if kind == "mix":
        names = sorted(stems)
    elif kind == target_stem:
        names = [target_stem] if target_stem in stems else []
    else:
        raise ValueError(f"unknown autoencoder kind {kind!r}: use 'mix' or {target_stem!r}")
    if not names:
        return []
    crops = []
    for start in _offsets(_length(stems), crop_samples, n_crops, rng):
        chosen = random_subset(names, rng) if kind == "mix" else names
        crop = _subset_sum(stems, chosen, start, crop_samples)
        if not is_silent(crop, silence_db):
            crops.append(crop)
    return crops


def mix_target_pairs(stems: Mapping[str, np.ndarray], target_stem: str, crop_samples: int,
                     n_crops: int, rng: np.random.Generator, silence_db: float
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``n_crops`` aligned (mix, target) pairs, each float32 [C, crop_samples]: the mix sums a
    random non-empty subset of the non-target stems at the target's offset. Pairs whose target is
    silent are dropped; tracks without the target or without any other stem give none."""
    others = sorted(name for name in stems if name != target_stem)
    if target_stem not in stems or not others:
        return []
    pairs = []
    for start in _offsets(_length(stems), crop_samples, n_crops, rng):
        subset = random_subset(others, rng)  # drawn before the silence test: same draws per offset
        target = stems[target_stem][:, start:start + crop_samples].copy()
        if is_silent(target, silence_db):
            continue
        pairs.append((_subset_sum(stems, subset, start, crop_samples), target))
    return pairs
