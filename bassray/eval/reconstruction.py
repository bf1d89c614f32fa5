"""Reconstruction quality of an autoencoder bundle on held-out crops, beside the same
architecture untrained (a floor that shows how much training bought)."""
from __future__ import annotations

from pathlib import Path

import torch

from bassray.data.eval_crops import held_out_crops
from bassray.models.autoencoder import Autoencoder
from bassray.train.autoencoder_losses import log_mel_l1, mssd
from bassray.bundles.files import load_bundle_state, load_autoencoder


@torch.no_grad()
def reconstruction_metrics(model: torch.nn.Module, crops: torch.Tensor, hops: list[int]) -> dict[str, float]:
    recon = model.decode(model.encode(crops), length=crops.shape[-1])
    return {"log_mel_l1": float(log_mel_l1(crops, recon, model.sample_rate)),
            "mssd": float(mssd(crops, recon, hops))}


def reconstruction_report(bundle_dir: str | Path, data_dir: str | Path, split: str = "test",
                          count: int = 16, seed: int = 0) -> dict[str, dict[str, float]]:
    """{"trained": metrics, "untrained": metrics} on ``count`` held-out crops of the bundle's stem."""
    state = load_bundle_state(bundle_dir, expected_kind="autoencoder")
    config, stem = state.config, state.metadata["stem"]
    crops = torch.from_numpy(held_out_crops(config, str(data_dir), stem, count=count, split=split, seed=seed))
    hops = config.autoencoder_training.mssd_hops
    torch.manual_seed(seed)
    untrained = Autoencoder(config.autoencoder_for(stem), config.audio).eval()
    return {"trained": reconstruction_metrics(load_autoencoder(bundle_dir), crops, hops),
            "untrained": reconstruction_metrics(untrained, crops, hops),
            "crops": int(crops.shape[0]), "split": split, "stem": stem}
