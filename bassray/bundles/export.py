"""Turn a training checkpoint (DeepSpeed engine files + state.json) into a plain bundle that
inference loads. Reads DeepSpeed's files with torch alone: no Ray or DeepSpeed needed here."""
from __future__ import annotations

import logging
from pathlib import Path

from bassray.bundles.checkpoints import read_checkpoint_state, read_engine_module_state, resolve_checkpoint
from bassray.config import config_from_dict

log = logging.getLogger(__name__)

def export_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the bundle of an autoencoder, diffusion or contrastive checkpoint (or a run's newest) to ``out_dir``."""
    from bassray.bundles.files import save_bundle

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
        from bassray.bundles.diffusion import export_diffusion_checkpoint
        path = export_diffusion_checkpoint(checkpoint_dir, state, config, out_dir)
    elif stage == "contrastive":
        from bassray.bundles.contrastive import export_contrastive_checkpoint
        path = export_contrastive_checkpoint(checkpoint_dir, state, out_dir)
    else:
        raise ValueError(f"checkpoint {checkpoint_dir} has unknown stage {stage!r}")
    log.info("exported %s checkpoint at step %s to %s", stage, state["step"], path)
    return Path(path)
