"""Encode audio shards into latent shards with both autoencoders: Ray Data batch inference in an
actor pool (each actor loads the bundles once), then per-channel statistics of the train split."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.data import ActorPoolStrategy, SaveMode

from bassray.audio import rms_db
from bassray.config import Config
from bassray.data.latents import compute_stats, npy_bytes, npy_load
from bassray.data.shards import SPLITS, iter_shard_members, list_shards
from bassray.inference import SILENT_DB

log = logging.getLogger(__name__)


def random_subsets(names: list[str], count: int, rng: np.random.Generator) -> list[list[str]]:
    """The full set first (what users give at inference), then distinct random non-empty subsets."""
    names = sorted(names)
    subsets = [names]
    total = 2 ** len(names) - 1
    while len(subsets) < min(count, total):
        mask = rng.random(len(names)) < 0.5
        pick = [n for n, m in zip(names, mask) if m]
        if pick and pick not in subsets:
            subsets.append(pick)
    return subsets


class LatentEncoder:
    """Ray Data callable class: one audio-shard row -> one latent-shard row (or none)."""

    def __init__(self, mix_bundle: str, target_bundle: str, config_dict: dict, seed: int, use_gpu: bool):
        from bassray.config import config_from_dict
        from bassray.bundles.files import load_autoencoder
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.mix_ae = load_autoencoder(mix_bundle).to(self.device)
        self.target_ae = load_autoencoder(target_bundle).to(self.device)
        self.config: Config = config_from_dict(config_dict)
        self.seed = seed

    @torch.no_grad()
    def _encode(self, autoencoder: torch.nn.Module, audio: np.ndarray) -> np.ndarray:
        from bassray.inference import encode_chunked
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)
        return encode_chunked(autoencoder, x).cpu().numpy().astype(np.float16)

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        from bassray.data.crops import decode_row
        segment = decode_row(row)
        key, stems, meta, corrupt = segment.key, segment.stems, segment.meta, len(segment.corrupt)
        target_stem = self.config.data.target_stem
        others = [n for n in stems if n != target_stem]
        if target_stem not in stems or not others:
            log.warning("skipping %s: needs a %s stem and at least one other (%d corrupt members)",
                        key, target_stem, corrupt)
            return []
        digest = hashlib.sha256(f"{self.seed}:{key}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
        subsets = random_subsets(others, self.config.data.latent_mixes_per_track, rng)
        mixes = np.stack([sum(stems[n] for n in subset) for subset in subsets])  # [K, C, T]
        target_db, mix_db = rms_db(stems[target_stem]), rms_db(mixes[0])
        silent = min(target_db, mix_db) < SILENT_DB  # a silent stem says nothing about the balance
        meta = {**meta, "subsets": subsets, "latent_frame_rate": self.mix_ae.frame_rate,
                "target_minus_mix_db": None if silent else target_db - mix_db}
        return [{"__key__": key, "json": json.dumps(meta).encode(),
                 "mix_latents.npy": npy_bytes(self._encode(self.mix_ae, mixes)),
                 "target_latent.npy": npy_bytes(self._encode(self.target_ae, stems[target_stem][None])[0])}]


def encode_latents(config: Config, data_dir: str | Path, out_dir: str | Path, mix_bundle: str | Path,
                   target_bundle: str | Path, *, use_gpu: bool = False, max_actors: int = 2,
                   seed: int = 0) -> dict[str, Any]:
    """Write ``out_dir/<split>/*.tar`` latent shards and ``out_dir/latent_stats.json``.
    Re-running overwrites (never appends)."""
    from bassray.distributed.runner import ensure_ray
    ensure_ray()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for split in SPLITS:
        try:
            paths = list_shards(data_dir, split)
        except FileNotFoundError:
            log.info("no %s shards: skipping that split", split)
            shutil.rmtree(out_dir / split, ignore_errors=True)
            continue
        dataset = ray.data.read_webdataset(paths, decoder=None).flat_map(
            LatentEncoder,
            fn_constructor_args=(str(Path(mix_bundle).resolve()), str(Path(target_bundle).resolve()),
                                 config.to_dict(), seed, use_gpu),
            compute=ActorPoolStrategy(min_size=1, max_size=max_actors),
            num_gpus=1 if use_gpu else 0, num_cpus=0 if use_gpu else 1)
        # encoder=None: the columns are already file bytes (Ray would otherwise np.save them again).
        dataset.write_webdataset(str(out_dir / split), mode=SaveMode.OVERWRITE, min_rows_per_file=64,
                                 encoder=None)
        counts[split] = sum(1 for p in (out_dir / split).glob("*.tar") for _ in iter_shard_members(p))
        log.info("%s: %d tracks encoded", split, counts[split])
    if not counts.get("train"):
        raise ValueError(f"no training latents were written from {data_dir}: are there train shards "
                         f"with a {config.data.target_stem} stem?")
    levels: list[float] = []

    def train_rows():  # one pass over the train shards: latents for the stats, levels on the side
        for p in sorted((out_dir / "train").glob("*.tar")):
            for _, cols in iter_shard_members(p):
                level = json.loads(cols["json"]).get("target_minus_mix_db")
                if level is not None:
                    levels.append(level)
                yield (npy_load(cols["mix_latents.npy"]).astype(np.float32),
                       npy_load(cols["target_latent.npy"]).astype(np.float32))

    stats = compute_stats(train_rows())
    stats.target_minus_mix_db = float(np.median(levels)) if levels else None
    stats.save(out_dir)
    return {"tracks": counts, "stats": str(out_dir / "latent_stats.json")}
