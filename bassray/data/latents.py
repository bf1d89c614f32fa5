"""Latent shards (docs/design.md §3): per track, up to K mix latents ``[K, Dx, L]`` (each the encoding of
a random non-empty subset of the non-target stems) and the target-stem latent ``[Dy, L]``, fp16,
as WebDataset members ``<key>.mix_latents.npy``, ``<key>.target_latent.npy``, ``<key>.json``.
Beside them ``latent_stats.json`` holds per-channel mean and std over the training split, and the
median target-minus-mix level."""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

if TYPE_CHECKING:
    from bassray.data.time_stretch import TempoAugment

STATS_FILE = "latent_stats.json"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_load(blob: bytes | np.ndarray) -> np.ndarray:
    if isinstance(blob, np.ndarray):
        return blob
    return np.load(io.BytesIO(blob), allow_pickle=False)


@dataclass
class LatentStats:
    """Per-channel statistics; the diffusion model sees ``(latent - mean) / std``."""
    mix_mean: list[float]
    mix_std: list[float]
    target_mean: list[float]
    target_std: list[float]
    # Median level of the target stem minus its full mix over the training split (dB): the level
    # at which generation places the bass (GenerationSettings.match_level). None in older stats.
    target_minus_mix_db: float | None = None

    def normalize_mix(self, x: np.ndarray) -> np.ndarray:   # [..., Dx, L]
        return (x - np.asarray(self.mix_mean, np.float32)[:, None]) / np.asarray(self.mix_std, np.float32)[:, None]

    def normalize_target(self, y: np.ndarray) -> np.ndarray:  # [..., Dy, L]
        return (y - np.asarray(self.target_mean, np.float32)[:, None]) / np.asarray(self.target_std, np.float32)[:, None]

    def diffused_target(self, y: np.ndarray, class_parts: int = 0) -> np.ndarray:
        """:meth:`normalize_target`, then, for a U-Net that diffuses the pitch of ``class_parts`` > 0
        parts as classes, that view of it (bassray/models/pitch_classes.py): ``[..., Dy', L]``."""
        y = self.normalize_target(y)
        if not class_parts:
            return y
        import torch

        from bassray.models.pitch_classes import to_pitch_classes
        flat = torch.from_numpy(np.ascontiguousarray(y, np.float32)).reshape(-1, *y.shape[-2:])
        out = to_pitch_classes(flat, class_parts, torch.tensor(self.target_mean), torch.tensor(self.target_std))
        return out.reshape(*y.shape[:-2], *out.shape[-2:]).numpy()

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / STATS_FILE
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "LatentStats":
        path = Path(directory) / STATS_FILE
        if not path.exists():
            raise FileNotFoundError(f"no {STATS_FILE} in {directory}: run jobs/encode_latents.py first")
        return cls(**json.loads(path.read_text()))


class RunningChannelStats:
    """Streaming per-channel mean/std (sums in float64) over ``[D, L]`` arrays."""

    def __init__(self) -> None:
        self.count = 0
        self.total: np.ndarray | None = None
        self.total_sq: np.ndarray | None = None

    def add(self, latent: np.ndarray) -> None:  # [..., D, L]
        x = np.asarray(latent, np.float64)
        x = np.moveaxis(x, -2, 0).reshape(x.shape[-2], -1)  # [D, N]
        if self.total is None:
            self.total, self.total_sq = np.zeros(x.shape[0]), np.zeros(x.shape[0])
        self.total += x.sum(1)
        self.total_sq += np.square(x).sum(1)
        self.count += x.shape[1]

    def mean_std(self) -> tuple[list[float], list[float]]:
        if not self.count:
            raise ValueError("no latents seen: the training split is empty")
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.total_sq / self.count - mean**2, 0.0)) + 1e-5
        return mean.tolist(), std.tolist()


def compute_stats(rows: Iterable[tuple[np.ndarray, np.ndarray]]) -> LatentStats:
    """Stats over (mix_latents [K, Dx, L], target_latent [Dy, L]) rows."""
    mix, target = RunningChannelStats(), RunningChannelStats()
    for mix_latents, target_latent in rows:
        mix.add(mix_latents)
        target.add(target_latent)
    mix_mean, mix_std = mix.mean_std()
    target_mean, target_std = target.mean_std()
    return LatentStats(mix_mean, mix_std, target_mean, target_std)


def latent_crop_pairs(mix_latents: np.ndarray, target_latent: np.ndarray, crop_frames: int,
                      n_crops: int, rng: np.random.Generator,
                      augment: "TempoAugment | None" = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random aligned crops: each picks one of the K mixes, and is stretched in time where
    ``augment`` (bassray/data/time_stretch.py) draws it. Tracks shorter than a crop are skipped."""
    length = target_latent.shape[-1]
    if length < crop_frames:
        return []
    pairs = []
    for _ in range(n_crops):
        k = int(rng.integers(mix_latents.shape[0]))
        factor = augment.draw_factor(length, crop_frames, rng) if augment is not None else 1.0
        if factor != 1.0:
            mix, target = augment.crop(mix_latents[k], target_latent, crop_frames, factor, rng)
        else:
            start = int(rng.integers(0, length - crop_frames + 1))
            mix, target = mix_latents[k, :, start:start + crop_frames], target_latent[:, start:start + crop_frames]
        pairs.append((mix.astype(np.float32), target.astype(np.float32)))
    return pairs


def list_latent_shards(latent_dir: str | Path, split: str) -> list[str]:
    paths = sorted(str(p) for p in (Path(latent_dir) / split).glob("*.tar"))
    if not paths:
        raise FileNotFoundError(f"no {split!r} latent shards under {latent_dir}/{split}: "
                                f"run jobs/encode_latents.py first")
    return paths


def load_latent_pairs(latent_dir: str | Path, split: str, crop_frames: int, limit: int,
                      seed: int = 0, crops_per_track: int = 8, with_tracks: bool = False,
                      class_parts: int = 0):
    """A fixed set of up to ``limit`` normalised held-out crops, several per track at random offsets
    (so a one-track split still yields distinct, mismatchable crops), without Ray. Returns
    ``(mix [N, Dx, L], target [N, Dy, L])``, plus each crop's track index when ``with_tracks``; the
    target as the U-Net diffuses it (:meth:`LatentStats.diffused_target` of ``class_parts``)."""
    from bassray.data.shards import iter_shard_members
    stats = LatentStats.load(latent_dir)
    rng = np.random.default_rng(seed)
    mixes, targets, tracks = [], [], []
    members = (columns for path in list_latent_shards(latent_dir, split)
               for _, columns in iter_shard_members(path))
    for track, columns in enumerate(members):
        pairs = latent_crop_pairs(npy_load(columns["mix_latents.npy"]),
                                  npy_load(columns["target_latent.npy"]), crop_frames,
                                  crops_per_track, rng)
        for m, t in pairs:
            mixes.append(stats.normalize_mix(m))
            targets.append(stats.diffused_target(t, class_parts))
            tracks.append(track)
        if len(mixes) >= limit:
            break
    if len(mixes) < 2:
        raise ValueError(f"fewer than two {split} latent crops of {crop_frames} frames: add data or "
                         f"lower the crop length")
    out = (np.stack(mixes[:limit]), np.stack(targets[:limit]))
    return (*out, np.asarray(tracks[:limit])) if with_tracks else out
