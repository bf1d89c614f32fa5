"""A diffusion bundle of randomly initialised models: the real architecture with untrained weights.

Speed does not depend on the weights, and the serving path only needs a loadable bundle, so tests
and benchmarks use this instead of training first.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from bassray.config import Config
from bassray.data.latents import LatentStats


def write_untrained_bundle(out_dir: str | Path, config: Config, seed: int = 0) -> Path:
    """Write a diffusion bundle (with its two autoencoder bundles) of untrained models to ``out_dir``."""
    from bassray.models.autoencoder import Autoencoder
    from bassray.models.unet1d import unet_for
    from bassray.bundles.files import save_bundle
    from bassray.bundles.diffusion import save_diffusion_bundle

    torch.manual_seed(seed)
    mix_dim, target_dim = config.mix_autoencoder.latent_dim, config.bass_autoencoder.latent_dim
    unet = unet_for(config)
    # Identity statistics: untrained latents have no meaningful scale to normalise away.
    stats = LatentStats([0.0] * mix_dim, [1.0] * mix_dim, [0.0] * target_dim, [1.0] * target_dim)
    with tempfile.TemporaryDirectory(prefix="bassray-untrained-") as tmp:
        mix_bundle = save_bundle(Path(tmp) / "mix", "autoencoder", config,
                                 Autoencoder(config.mix_autoencoder, config.audio), metadata={"stem": "mix"})
        target_bundle = save_bundle(Path(tmp) / "target", "autoencoder", config,
                                    Autoencoder(config.bass_autoencoder, config.audio),
                                    metadata={"stem": config.data.target_stem})
        return save_diffusion_bundle(out_dir, config, unet, stats, mix_bundle, target_bundle,
                                     metadata={"untrained": True})
