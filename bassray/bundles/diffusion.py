"""The diffusion bundle: EMA U-Net weights + latent statistics + copies of the two autoencoder
bundles it belongs to, so one folder is everything generation needs."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from bassray.config import Config
from bassray.data.latents import LatentStats

MIX_DIR, TARGET_DIR = "mix_autoencoder", "target_autoencoder"


def weights_fingerprint(bundle_dir: str | Path) -> str:
    """sha256 of an autoencoder bundle's weights file: ties a diffusion model to its autoencoders."""
    digest = hashlib.sha256()
    with open(Path(bundle_dir) / "model.safetensors", "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_diffusion_bundle(out_dir: str | Path, config: Config, unet: torch.nn.Module,
                          stats: LatentStats, mix_bundle: str | Path, target_bundle: str | Path,
                          metadata: dict[str, Any] | None = None) -> Path:
    from bassray.bundles.files import save_bundle
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    meta = dict(metadata or {})
    meta["autoencoders"] = {}
    for role, source in ((MIX_DIR, mix_bundle), (TARGET_DIR, target_bundle)):
        meta["autoencoders"][role] = {"fingerprint": weights_fingerprint(source), "source": str(source)}
        note = Path(source) / "registry.json"
        if note.exists():
            meta["autoencoders"][role]["registry"] = json.loads(note.read_text())
    save_bundle(out_dir, "diffusion", config, unet, metadata=meta)
    shutil.copytree(mix_bundle, out_dir / MIX_DIR)
    shutil.copytree(target_bundle, out_dir / TARGET_DIR)
    stats.save(out_dir)
    return out_dir


def export_diffusion_checkpoint(checkpoint_dir: str | Path, state: dict[str, Any], config: Config,
                                out_dir: str | Path) -> Path:
    """Bundle the EMA weights of a diffusion training checkpoint."""
    from bassray.models.unet1d import unet_for
    from bassray.train.ema import EMA
    unet = unet_for(config)
    ema = EMA(unet, config.diffusion_training.ema_decay)
    ema.load_state_dict(torch.load(Path(checkpoint_dir) / "ema.pt", map_location="cpu"))
    ema.copy_to(unet)
    return save_diffusion_bundle(out_dir, config, unet, LatentStats.load(state["latent_dir"]),
                                 state["mix_bundle"], state["target_bundle"],
                                 metadata={"step": state["step"]})


def load_diffusion_bundle(bundle_dir: str | Path):
    """(unet, mix_autoencoder, target_autoencoder, stats, config) — all in eval mode on the CPU.
    ``bundle_dir`` may be a URI (s3://...): it is fetched once into the local bundle cache."""
    from bassray.models.unet1d import unet_for
    from bassray.bundles.files import BundleError, load_autoencoder, load_bundle_state, read_bundle_metadata
    from bassray.bundles.store import local_bundle
    bundle_dir = local_bundle(bundle_dir)
    meta = read_bundle_metadata(bundle_dir)
    if meta.get("kind") != "diffusion":
        raise BundleError(f"{bundle_dir} is a {meta.get('kind')!r} bundle, not a diffusion bundle: "
                          f"pass the folder written by jobs/train_ldm.py")
    for role in (MIX_DIR, TARGET_DIR):
        expected = meta.get("autoencoders", {}).get(role, {}).get("fingerprint")
        if not (bundle_dir / role).is_dir():
            raise BundleError(f"{bundle_dir} lacks its {role}/ folder: the bundle is incomplete")
        if expected and weights_fingerprint(bundle_dir / role) != expected:
            raise BundleError(f"{bundle_dir}/{role} is not the autoencoder this diffusion model was "
                             f"trained with (weights fingerprint differs): re-export the bundle")
    state = load_bundle_state(bundle_dir, expected_kind="diffusion")
    config = state.config
    unet = unet_for(config)
    unet.load_state_dict(state.state_dict)
    return (unet.eval(), load_autoencoder(bundle_dir / MIX_DIR), load_autoencoder(bundle_dir / TARGET_DIR),
            LatentStats.load(bundle_dir), config)
