"""Ray Data over latent shards: random aligned (mix, target) crops, normalised with the stored
statistics, for the diffusion stage. Unreadable shards, corrupt members and tracks shorter than a
crop are skipped and counted in a :class:`~bassray.distributed.pipeline_stats.PipelineStats`."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import ray

from bassray.config import Config
from bassray.data.latents import LatentStats, latent_crop_pairs, list_latent_shards, npy_load
from bassray.data.time_stretch import TempoAugment
from bassray.distributed.datasets import validate_shards
from bassray.distributed.pipeline_stats import PipelineStats
from bassray.models.pitch_classes import pitch_class_parts

log = logging.getLogger(__name__)


# Counts rows seen by this process, so a track re-read in a later epoch gets other crops.
_ROWS_SEEN = {"n": 0}


class LatentCropper:
    """Row -> several normalised crops, seeded by (seed, key, rows this process has seen)."""

    def __init__(self, stats: LatentStats, crop_frames: int, crops_per_track: int, seed: int,
                 counts: PipelineStats | None = None, augment: TempoAugment | None = None,
                 class_parts: int = 0):
        self.stats = stats
        self.class_parts = class_parts  # the U-Net's view of the pitch (bassray/models/pitch_classes.py)
        self.augment = augment
        self.counts = counts
        self.crop_frames = crop_frames
        self.crops_per_track = crops_per_track
        self.seed = seed

    def __call__(self, row: dict) -> list[dict]:
        key = str(row.get("__key__", ""))
        digest = hashlib.sha256(f"{self.seed}:{key}:{_ROWS_SEEN['n']}".encode()).digest()
        _ROWS_SEEN["n"] += 1
        rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
        try:
            mix = npy_load(row["mix_latents.npy"])
            target = npy_load(row["target_latent.npy"])
            if mix.ndim != 3 or target.ndim != 2 or mix.shape[-1] != target.shape[-1]:
                raise ValueError(f"mix latents {mix.shape} and target latent {target.shape} do not align")
        except Exception as exc:  # a corrupt member loses one track, not the run
            log.warning("skipping corrupt latent sample %s: %s", key, exc)
            self._count(corrupt_members=1)
            return []
        pairs = latent_crop_pairs(mix, target, self.crop_frames, self.crops_per_track, rng, self.augment)
        self._count(tracks_read=1, crops=len(pairs), tracks_too_short=not pairs)
        return [{"mix": self.stats.normalize_mix(m).astype(np.float32),
                 "target": self.stats.diffused_target(t, self.class_parts).astype(np.float32)}
                for m, t in pairs]


    def _count(self, **counts: int) -> None:
        if self.counts is not None:
            self.counts.add(counts)


def latent_pairs_dataset(latent_dir: str | Path, split: str, config: Config, seed: int = 0,
                         crop_frames: int | None = None, counts: PipelineStats | None = None,
                         min_files_per_epoch: int = 1) -> ray.data.Dataset:
    """Crops of every track in ``split`` (the training split's with the config's tempo augmentation). Where there are fewer shards than ``min_files_per_epoch``,
    one epoch reads them several times over (each pass crops anew): every epoch restarts Ray
    Data's pipeline, and each restart stalls the trainer (0.4 s when measured at 62-step epochs,
    6.4 s in the quickstart's Ray Train worker at 1,000-step ones)."""
    stats = LatentStats.load(latent_dir)
    paths = validate_shards(list_latent_shards(latent_dir, split), counts)
    frames = crop_frames or config.diffusion_training.crop_frames
    cpus = config.distributed.data_cpus_per_task
    passes = -(-min_files_per_epoch // len(paths))  # validate_shards leaves at least one
    dataset = ray.data.read_webdataset(paths * passes, decoder=None, shuffle="files", num_cpus=cpus)
    augment = TempoAugment.of(config) if split == "train" else None
    cropper = LatentCropper(stats, frames, config.data.crops_per_segment, seed, counts, augment,
                            pitch_class_parts(config))
    return dataset.flat_map(cropper, num_cpus=cpus).randomize_block_order()
