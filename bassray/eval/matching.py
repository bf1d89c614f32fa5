"""The paper's Fig. 3 on our data: can the contrastive model tell which mix a bass belongs to?
For N held-out mixes (25 by default) and one bass per mix, the soft assignment is a softmax over
the basses of each mix's scaled cosine similarities; top-1 is how often a mix's own bass wins.
Done for the generated basses, the true basses (ceiling) and shuffled true basses (each mix given
another song's bass: chance, 1/N). Plain functions; no Ray.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


@torch.no_grad()
def clip_embeddings(encode: Callable[[torch.Tensor], torch.Tensor], clips: list[np.ndarray], window: int
                    ) -> torch.Tensor:
    """One unit vector per clip: the mean of its half-overlapping windows' embeddings."""
    from bassray.models.contrastive import windows
    out = []
    for clip in clips:
        mono = np.asarray(clip, np.float32)
        mono = mono.mean(0) if mono.ndim == 2 else mono
        out.append(encode(windows(torch.from_numpy(np.ascontiguousarray(mono)), window, window // 2)).mean(0))
    return torch.nn.functional.normalize(torch.stack(out), dim=-1)


@torch.no_grad()
def soft_assignment(model, mixes: list[np.ndarray], basses: list[np.ndarray]) -> np.ndarray:
    """``[N, N]``: row i is mix i's softmax over the basses."""
    window = int(model.cfg.crop_seconds * model.cfg.sample_rate)
    logits = model.similarity(clip_embeddings(model.embed_mix, mixes, window),
                              clip_embeddings(model.embed_bass, basses, window))
    return torch.softmax(logits, dim=1).numpy()


def top1(assignment: np.ndarray) -> float:
    return float(np.mean(assignment.argmax(1) == np.arange(len(assignment))))


def matching(model, mixes: list[np.ndarray], basses: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """Top-1 and the assignment matrix per kind of bass; ``shuffled`` is derived from ``true``."""
    kinds = dict(basses)
    if "true" in kinds:
        kinds["shuffled"] = kinds["true"][1:] + kinds["true"][:1]  # a derangement: nobody gets their own
    out: dict[str, Any] = {"mixes": len(mixes), "chance": 1.0 / len(mixes), "top1": {}, "matrices": {}}
    for kind, clips in kinds.items():
        matrix = soft_assignment(model, mixes, clips)
        out["top1"][kind] = top1(matrix)
        out["matrices"][kind] = matrix.tolist()
    return out


def plot_assignment(matrices: dict[str, list], path: Path, chance: float, top1s: dict[str, float]) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(matrices), figsize=(4 * len(matrices), 4), squeeze=False)
    for ax, (kind, matrix) in zip(axes[0], matrices.items()):
        image = ax.imshow(np.asarray(matrix), cmap="viridis", vmin=0)
        ax.set_title(f"{kind}: top-1 {top1s[kind]:.2f} (chance {chance:.2f})", fontsize=9)
        ax.set_xlabel("bass")
        ax.set_ylabel("mix")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
