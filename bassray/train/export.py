"""Turn a training checkpoint (DeepSpeed engine files + state.json) into a plain bundle that
inference loads. Reads DeepSpeed's files with torch alone: no Ray or DeepSpeed needed here."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from bassray.config import config_from_dict

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder whose newest ``checkpoint_*`` folder is taken."""
    path = Path(path)
    if (path / STATE_FILE).exists() or not path.is_dir():
        return path
    found = sorted(p for p in path.glob("checkpoint_*") if p.is_dir())
    return found[-1] if found else path


def read_checkpoint_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    path = Path(checkpoint_dir) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{checkpoint_dir} is not a bassray training checkpoint (no {STATE_FILE}); "
                                f"pass a checkpoint_* folder from the run's storage path")
    return json.loads(path.read_text())


def read_engine_module_state(engine_dir: str | Path, tag: str = "weights") -> dict[str, torch.Tensor]:
    """The full module weights of a DeepSpeed engine checkpoint (ZeRO 0-2 keep them whole on rank 0)."""
    files = sorted((Path(engine_dir) / tag).glob("mp_rank_*_model_states.pt"))
    if not files:
        raise FileNotFoundError(f"no DeepSpeed model states under {engine_dir}/{tag}: the checkpoint "
                                f"is incomplete or from ZeRO stage 3, which export does not support")
    saved = torch.load(files[0], map_location="cpu", weights_only=False)
    return {k: v.float() if v.is_floating_point() else v for k, v in saved["module"].items()}


def export_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the bundle of an autoencoder, diffusion or contrastive checkpoint (or a run's newest) to ``out_dir``."""
    from bassray.train.bundle import save_bundle

    checkpoint_dir = resolve_checkpoint(checkpoint_dir)
    state = read_checkpoint_state(checkpoint_dir)
    config = config_from_dict(state["config"])
    stage = state.get("stage")
    if stage == "autoencoder":
        from bassray.models.autoencoder import Autoencoder
        model = Autoencoder(config.autoencoder_for(state["stem"]), config.audio)
        model.load_state_dict(read_engine_module_state(Path(checkpoint_dir) / "autoencoder"))
        path = save_bundle(out_dir, "autoencoder", config, model,
                           metadata={"stem": state["stem"], "step": state["step"]})
    elif stage == "diffusion":
        from bassray.train.diffusion_bundle import export_diffusion_checkpoint
        path = export_diffusion_checkpoint(checkpoint_dir, state, config, out_dir)
    elif stage == "contrastive":
        from bassray.train.contrastive_bundle import export_contrastive_checkpoint
        path = export_contrastive_checkpoint(checkpoint_dir, state, out_dir)
    else:
        raise ValueError(f"checkpoint {checkpoint_dir} has unknown stage {stage!r}")
    log.info("exported %s checkpoint at step %s to %s", stage, state["step"], path)
    return Path(path)
