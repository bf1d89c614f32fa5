"""Ray Data pipelines over audio shards (docs/design.md §1, §3): shards -> decoded segments -> several
random crops per segment -> training workers.

    read_webdataset(shuffle=files, seeded per epoch) -> flat_map(SegmentCropper)
        [-> randomize_block_order(), optional: it is a barrier, see _crop_dataset]

The consumer adds the last shuffle stage: ``iter_torch_batches(local_shuffle_buffer_size=...)``
(see :func:`torch_batches`). Crops are seeded by (seed, segment key, epoch): the same seed gives the
same crops whichever worker decodes a segment, and every epoch gets new crops.

Bad data never stops a run. Shards are checked up front (:func:`validate_shards`); unreadable ones
are dropped, logged and counted. Corrupt FLAC/JSON members are skipped and counted while decoding.
Counts go to a :class:`~bassray.distributed.pipeline_stats.PipelineStats` readable any time.
"""
from __future__ import annotations

import logging
import os
import tarfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import ray
import ray.data
import torch

from bassray.config import Config
from bassray.data.crops import autoencoder_crops, decode_row, is_silent, mix_target_pairs, segment_rng
from bassray.data.shards import data_dirs
from bassray.distributed.pipeline_stats import PipelineStats
from bassray.remote import filesystem, is_uri

log = logging.getLogger(__name__)

AUDIO_COLUMNS = ("audio",)
PAIR_COLUMNS = ("mix", "target")
# Read-time safety net for shards that pass validation but fail while streaming (a file changed
# or a remote read failed): Ray skips up to this many failed blocks, logging each.
MAX_ERRORED_BLOCKS = 8


def list_split_shards(data_dir: str | Path, split: str) -> list[str]:
    """Shard paths ``<split>-*.tar`` under a local folder or a URI (s3://, gs://), or several of
    them joined by commas, sorted per folder."""
    paths: list[str] = []
    for folder in data_dirs(data_dir):
        if not is_uri(folder):
            paths += sorted(str(p) for p in Path(folder).expanduser().glob(f"{split}-*.tar"))
            continue
        import pyarrow.fs as pafs
        fs, root = filesystem(folder)
        scheme = folder.split("://", 1)[0]
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=False))
        paths += sorted(f"{scheme}://{i.path}" for i in infos
                        if i.base_name.startswith(f"{split}-") and i.base_name.endswith(".tar"))
    if not paths:
        raise FileNotFoundError(f"no {split!r} shards ({split}-*.tar) in {data_dir}: run "
                                f"`bassray data synth` or `bassray data ingest` first, or check the path")
    return paths


def _open_binary(path: str) -> tuple[Any, int]:
    if not is_uri(path):
        return open(path, "rb"), os.path.getsize(path)
    fs, inner = filesystem(path)
    return fs.open_input_file(inner), fs.get_file_info(inner).size


def shard_problem(path: str) -> str | None:
    """Why a shard cannot be read (not a tar, truncated, empty), or None when it looks whole.
    Reads only the tar headers: cheap beside decoding."""
    try:
        handle, size = _open_binary(path)
        with handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            members = 0
            for member in tar:
                if member.offset_data + member.size > size:
                    return f"truncated in member {member.name}"
                members += member.isfile()
    except (tarfile.TarError, OSError, EOFError) as exc:
        return f"not a readable tar ({exc})"
    return None if members else "holds no members"


def validate_shards(paths: Sequence[str], stats: PipelineStats | None = None) -> list[str]:
    """The readable shards of ``paths``; unreadable ones are logged, counted and dropped.
    Raises when none is left, since a run on no data would only hang."""
    good = []
    for path in paths:
        problem = shard_problem(path)
        if problem is None:
            good.append(path)
        else:
            log.warning("skipping unreadable shard %s: %s", path, problem)
    if stats is not None:
        stats.add({"shards": len(good), "unreadable_shards": len(paths) - len(good)})
    if not good:
        raise FileNotFoundError(f"none of the {len(paths)} shards is readable (see the warnings "
                                f"above): rewrite them with `bassray data synth` / `bassray data ingest`")
    return good


class SegmentCropper:
    """flat_map function: one shard row -> crops of one decoded segment.

    ``mode`` "autoencoder" gives rows {"audio": [C, T]} for ``kind`` ("mix" or the target stem);
    ``mode`` "pairs" gives rows {"mix": [C, T], "target": [C, T]};
    ``mode`` "segments" gives one row per segment {"mix": [T], "target": [T]}: mono, whole, the mix
    of all non-target stems (for consumers that crop for themselves, see :func:`segments_dataset`).
    """

    def __init__(self, mode: str, config: Config, crop_samples: int, seed: int,
                 stats: PipelineStats | None, kind: str | None = None):
        if mode not in ("autoencoder", "pairs", "segments"):
            raise ValueError(f"unknown crop mode {mode!r}: use 'autoencoder', 'pairs' or 'segments'")
        self.mode, self.kind, self.seed, self.stats = mode, kind, seed, stats
        self.crop_samples = int(crop_samples)
        self.target_stem = config.data.target_stem
        self.n_crops = config.data.crops_per_segment
        self.silence_db = config.data.silence_db
        self.sample_rate = config.audio.sample_rate
        self.channels = config.audio.channels
        self.data_cpus = config.distributed.data_cpus_per_task

    def _check_format(self, key: str, stems: dict[str, np.ndarray], rate: int | None) -> None:
        channels = {a.shape[0] for a in stems.values()}
        if rate != self.sample_rate or channels != {self.channels}:
            raise ValueError(f"segment {key} holds {rate} Hz, {sorted(channels)}-channel audio but the "
                             f"config expects {self.sample_rate} Hz, {self.channels} channels: use the "
                             f"config the shards were made with, or re-run the ingest with this one")

    def __call__(self, row: dict[str, Any]) -> list[dict[str, np.ndarray]]:
        wants_target = self.mode != "autoencoder" or self.kind != "mix"
        only = [self.target_stem] if self.mode == "autoencoder" and wants_target else None
        segment = decode_row(row, only=only)
        stems = segment.stems
        counts = {"segments": 1, "corrupt_members": len(segment.corrupt)}
        if stems:
            self._check_format(segment.key, stems, segment.sample_rate)
        usable = bool(stems)
        if wants_target and self.target_stem not in stems:
            counts["segments_without_target"], usable = 1, False
        elif self.mode != "autoencoder" and not set(stems) - {self.target_stem}:
            counts["segments_without_condition"], usable = 1, False  # nothing to condition on
        elif usable and next(iter(stems.values())).shape[1] < self.crop_samples:
            counts["segments_too_short"], usable = 1, False
        out: list[dict[str, np.ndarray]] = []
        if usable:
            rng = segment_rng(self.seed, segment.key, _epoch())
            if self.mode == "autoencoder":
                crops = autoencoder_crops(stems, self.kind, self.target_stem, self.crop_samples,
                                          self.n_crops, rng, self.silence_db)
                out = [{"audio": crop} for crop in crops]  # [C, crop_samples] each
            elif self.mode == "segments":
                target = stems[self.target_stem]
                if not is_silent(target, self.silence_db):
                    mix = sum(a for name, a in stems.items() if name != self.target_stem)
                    out = [{"mix": mix.mean(0).astype(np.float32), "target": target.mean(0).astype(np.float32)}]
            else:
                pairs = mix_target_pairs(stems, self.target_stem, self.crop_samples, self.n_crops,
                                         rng, self.silence_db)
                out = [{"mix": mix, "target": target} for mix, target in pairs]
            counts["crops_silent"] = (self.n_crops if self.mode != "segments" else 1) - len(out)
        counts["crops"] = len(out)
        if self.stats is not None:
            self.stats.add(counts)
        return out


def _epoch() -> int:
    """How many times this dataset has been iterated before (Ray Data's execution index, visible
    in its tasks; private API, hence the fallback to 0 = same crops every epoch)."""
    return int(getattr(ray.data.DataContext.get_current(), "_execution_idx", 0))


def _crop_dataset(data_dir: str | Path, split: str, cropper: SegmentCropper,
                  stats: PipelineStats | None, validate: bool, randomize_blocks: bool
                  ) -> ray.data.Dataset:
    paths = list_split_shards(data_dir, split)
    if validate:
        paths = validate_shards(paths, stats)
    # File order is seeded and re-drawn every epoch (Ray reseeds with its execution index).
    shuffle = ray.data.FileShuffleConfig(seed=cropper.seed)
    cpus = cropper.data_cpus
    dataset = ray.data.read_webdataset(paths, decoder=None, shuffle=shuffle, num_cpus=cpus)
    dataset = dataset.flat_map(cropper, num_cpus=cpus)
    if randomize_blocks:
        # An all-to-all barrier: nothing comes out until the whole epoch is cropped and held in the
        # object store. Blocks are about one shard each, so the file shuffle above already gives
        # the same order mixing; kept as an option for datasets made of few, large blocks.
        dataset = dataset.randomize_block_order()
    dataset.context.max_errored_blocks = MAX_ERRORED_BLOCKS
    return dataset


def autoencoder_dataset(data_dir: str | Path, split: str, kind: str, config: Config, seed: int = 0,
                        stats: PipelineStats | None = None, validate: bool = True,
                        randomize_blocks: bool = False) -> ray.data.Dataset:
    """Crops for the ``kind`` autoencoder ("mix" or ``config.data.target_stem``): one column
    "audio", float32 [C, crop_samples], ``config.data.crops_per_segment`` tries per segment."""
    config.autoencoder_for(kind)  # a clear error for an unknown kind, before any reading
    crop_samples = int(round(config.data.crop_seconds * config.audio.sample_rate))
    cropper = SegmentCropper("autoencoder", config, crop_samples, seed, stats, kind=kind)
    return _crop_dataset(data_dir, split, cropper, stats, validate, randomize_blocks)


def pairs_dataset(data_dir: str | Path, split: str, config: Config, crop_samples: int | None = None,
                  seed: int = 0, stats: PipelineStats | None = None, validate: bool = True,
                  randomize_blocks: bool = False) -> ray.data.Dataset:
    """Aligned (mix, target) crops: columns "mix" and "target", float32 [C, crop_samples]; the mix
    is a random non-empty subset of the non-target stems. ``crop_samples`` defaults to the
    config's crop length."""
    crop_samples = crop_samples or int(round(config.data.crop_seconds * config.audio.sample_rate))
    cropper = SegmentCropper("pairs", config, crop_samples, seed, stats)
    return _crop_dataset(data_dir, split, cropper, stats, validate, randomize_blocks)


def segments_dataset(data_dir: str | Path, split: str, config: Config, min_samples: int, seed: int = 0,
                     stats: PipelineStats | None = None, validate: bool = True) -> ray.data.Dataset:
    """Whole segments as mono (mix of all non-target stems, target) rows of at least ``min_samples``:
    a twentieth of the bytes that stereo crops of them would move through the object store when the
    consumer takes many short crops per segment (the contrastive model does)."""
    cropper = SegmentCropper("segments", config, min_samples, seed, stats)
    return _crop_dataset(data_dir, split, cropper, stats, validate, randomize_blocks=False)


def torch_batches(source: Any, batch_size: int, columns: Sequence[str] = AUDIO_COLUMNS,
                  shuffle_buffer: int | None = None, device: torch.device | str | None = None,
                  drop_last: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """float32 batches {column: [B, C, T]} from a Dataset or a worker's
    ``ray.train.get_dataset_shard(name)``; ``shuffle_buffer`` rows are mixed locally before batching."""
    if hasattr(source, "select_columns"):  # a Dataset; a DataIterator has only the given columns
        source = source.select_columns(list(columns))
    yield from source.iter_torch_batches(batch_size=batch_size,
                                         dtypes={c: torch.float32 for c in columns},
                                         device=device if device is not None else "auto",
                                         drop_last=drop_last,
                                         local_shuffle_buffer_size=shuffle_buffer or None)
