"""A small, fixed set of held-out crops for reconstruction metrics and examples (no Ray)."""
from __future__ import annotations

import numpy as np

from bassray.config import Config
from bassray.data.crops import autoencoder_crops, segment_rng
from bassray.data.shards import iter_segments, list_shards


def held_out_crops(config: Config, data_dir: str, kind: str, count: int = 8, split: str = "val",
                   seed: int = 0) -> np.ndarray:
    """``[count, C, crop_samples]`` non-silent crops of ``kind`` ('mix' or the target stem) from
    ``split``, the same every call for a seed. Fewer when the split is small; an error when none."""
    crop_samples = int(round(config.data.crop_seconds * config.audio.sample_rate))
    crops: list[np.ndarray] = []
    for segment in iter_segments(list_shards(data_dir, split)):
        crops += autoencoder_crops(segment.stems, kind, config.data.target_stem, crop_samples,
                                   n_crops=2, rng=segment_rng(seed, segment.key),
                                   silence_db=config.data.silence_db)
        if len(crops) >= count:
            break
    if not crops:
        raise FileNotFoundError(f"no non-silent {kind} crops in the {split} shards of {data_dir}")
    return np.stack(crops[:count]).astype(np.float32)
