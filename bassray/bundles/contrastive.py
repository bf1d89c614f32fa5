"""The contrastive (mix, bass) model's bundle: written from a training checkpoint, loaded for
evaluation (matching, FAD embedding, style distances). Plain torch, no Ray."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bassray.config import config_from_dict
from bassray.models.contrastive import ContrastiveConfig, MixBassContrastive
from bassray.bundles.files import load_bundle_state, save_bundle

KIND = "contrastive"
ENGINE = "contrastive"  # the engine's folder in a checkpoint


def export_contrastive_checkpoint(checkpoint_dir: str | Path, state: dict[str, Any], out_dir: str | Path) -> Path:
    from bassray.bundles.checkpoints import read_engine_module_state
    model = MixBassContrastive(ContrastiveConfig(**state["contrastive"]))
    model.load_state_dict(read_engine_module_state(Path(checkpoint_dir) / ENGINE))
    return save_bundle(out_dir, KIND, config_from_dict(state["config"]), model,
                       metadata={"contrastive": state["contrastive"], "step": state["step"],
                                 "val_top1": state.get("val_top1")})


def load_contrastive(bundle_dir: str | Path, device: str = "cpu") -> MixBassContrastive:
    """The model of a contrastive bundle (from jobs/train_contrastive.py), in eval mode."""
    state = load_bundle_state(bundle_dir, map_location=device, expected_kind=KIND)
    model = MixBassContrastive(ContrastiveConfig(**state.metadata["contrastive"]))
    model.load_state_dict(state.state_dict)
    return model.eval().to(device)
