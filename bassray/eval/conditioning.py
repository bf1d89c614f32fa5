"""Does the diffusion model use its condition? v-loss on held-out pairs with the true mix, the null
condition and a mismatched mix (another crop's), under identical noise and times."""
from __future__ import annotations

import torch

from bassray.diffusion.schedule import v_loss


@torch.no_grad()
def conditioning_losses(model: torch.nn.Module, mix: torch.Tensor, target: torch.Tensor,
                        repeats: int = 8, seed: int = 0) -> dict[str, float]:
    """Mean v-loss over ``repeats`` draws of (t, noise) per crop for each condition. ``mix`` [N, Dx, L]
    and ``target`` [N, Dy, L] are normalised latents; the mismatched mix rolls the crops by one."""
    if mix.shape[0] < 2:
        raise ValueError("need at least two held-out crops to build a mismatched condition")
    was_training = model.training
    model.eval()
    conditions = {"true": "true", "null": "null", "mismatched": torch.roll(mix, 1, dims=0)}
    totals = dict.fromkeys(conditions, 0.0)
    for r in range(repeats):
        for name, condition in conditions.items():
            gen = torch.Generator(device=mix.device).manual_seed(seed * 1000 + r)  # same t, noise for all three
            loss, _ = v_loss(model, target, mix, generator=gen, cond_dropout=0.0, condition=condition)
            totals[name] += float(loss) / repeats
    model.train(was_training)
    return {f"v_loss_{name}_mix": value for name, value in totals.items()}


def conditioning_report(bundle_dir: str, latent_dir: str, split: str = "val", crop_frames: int | None = None,
                        limit: int = 64) -> dict[str, float]:
    """The three losses for a diffusion bundle's EMA weights on a latent split."""
    from bassray.data.latents import load_latent_pairs
    from bassray.train.diffusion_bundle import load_diffusion_bundle
    unet, _, _, _, config = load_diffusion_bundle(bundle_dir)
    frames = crop_frames or config.diffusion_training.crop_frames
    mix, target = load_latent_pairs(latent_dir, split, frames, limit)
    return {**conditioning_losses(unet, torch.from_numpy(mix), torch.from_numpy(target)),
            "crops": int(mix.shape[0]), "split": split}
