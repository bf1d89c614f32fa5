"""Read bassray's training checkpoints (DeepSpeed engine files + state.json) with torch alone: no
Ray or DeepSpeed needed here. bassray/bundles/export.py turns them into bundles."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

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
