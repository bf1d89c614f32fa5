"""Does the diffusion model use its condition? v-loss on held-out pairs with the true mix, the null
condition and a mismatched mix (another track's), under identical noise and times.

The three losses share every (t, noise) draw, so their differences are paired: besides the means we
report how far each alternative lies above the true mix in standard errors, taken over tracks
(crops of one track are not independent)."""
from __future__ import annotations

import numpy as np
import torch

from bassray.diffusion.schedule import v_loss_per_example


def mismatched_order(groups: np.ndarray) -> np.ndarray:
    """A permutation that gives every crop a crop of another track where there is one: the crops
    sorted by track, then rolled by the largest track's size (falls back to a roll by one when a
    single track holds more than half the crops)."""
    order = np.argsort(groups, kind="stable")
    largest = int(np.bincount(np.unique(groups, return_inverse=True)[1]).max())
    shift = largest if largest <= len(groups) // 2 else 1
    perm = np.empty_like(order)
    perm[order] = np.roll(order, shift)
    return perm


@torch.no_grad()
def conditioning_losses(model: torch.nn.Module, mix: torch.Tensor, target: torch.Tensor,
                        repeats: int = 8, seed: int = 0, groups: np.ndarray | None = None
                        ) -> dict[str, float]:
    """Mean v-loss over ``repeats`` draws of (t, noise) per crop for each condition. ``mix`` [N, Dx, L]
    and ``target`` [N, Dy, L] are normalised latents; ``groups`` [N] names each crop's track (default:
    every crop its own). The mismatched mix is another track's crop (:func:`mismatched_order`).
    Also returns ``gap_null`` / ``gap_mismatched`` (mean loss above the true mix's) and their
    ``z_null`` / ``z_mismatched``: the gap over its standard error across tracks."""
    groups, conditions = _conditions(mix, groups)
    was_training = model.training
    model.eval()
    per_crop = {name: torch.zeros(mix.shape[0], dtype=torch.float64) for name in conditions}
    for r in range(repeats):
        for name, condition in conditions.items():
            gen = torch.Generator(device=mix.device).manual_seed(seed * 1000 + r)  # same t, noise for all three
            losses, _ = v_loss_per_example(model, target, mix, generator=gen, cond_dropout=0.0,
                                           condition=condition)
            per_crop[name] += losses.double().cpu() / repeats
    model.train(was_training)
    out = {f"v_loss_{name}_mix": float(values.mean()) for name, values in per_crop.items()}
    for name in ("null", "mismatched"):
        gap, stderr = _paired_gap(per_crop[name] - per_crop["true"], groups)
        out[f"gap_{name}"], out[f"z_{name}"] = gap, gap / stderr if stderr > 0 else float("nan")
    return out


# Noise levels for the by-time breakdown: the mix should matter most where z_t says least (t near 1).
BREAKDOWN_TIMES = (0.05, 0.2, 0.4, 0.6, 0.8, 0.95)


@torch.no_grad()
def conditioning_losses_by_time(model: torch.nn.Module, mix: torch.Tensor, target: torch.Tensor,
                                times: tuple[float, ...] = BREAKDOWN_TIMES, repeats: int = 2,
                                seed: int = 0, groups: np.ndarray | None = None) -> dict[str, float]:
    """The three v-losses at fixed noise levels: ``{"t0.80/v_loss_true_mix": ..., ...}``. Where the
    true mix helps (and where it hurts, e.g. by recalling training songs at low noise) shows here
    before it shows in the average."""
    _, conditions = _conditions(mix, groups)
    was_training = model.training
    model.eval()
    out = {}
    for t in times:
        for name, condition in conditions.items():
            total = 0.0
            for r in range(repeats):
                gen = torch.Generator(device=mix.device).manual_seed(seed * 1000 + r)
                losses, _ = v_loss_per_example(model, target, mix, generator=gen, cond_dropout=0.0,
                                               condition=condition, t=t)
                total += float(losses.mean()) / repeats
            out[f"t{t:.2f}/v_loss_{name}_mix"] = total
    model.train(was_training)
    return out


def _conditions(mix: torch.Tensor, groups: np.ndarray | None
                ) -> tuple[np.ndarray, dict[str, str | torch.Tensor]]:
    """Checked track labels (default: every crop its own track) and the three conditions."""
    if mix.shape[0] < 2:
        raise ValueError("need at least two held-out crops to build a mismatched condition")
    groups = np.arange(mix.shape[0]) if groups is None else np.asarray(groups)
    if groups.shape != (mix.shape[0],):
        raise ValueError(f"groups must name one track per crop ({mix.shape[0]}), got shape {groups.shape}")
    perm = torch.from_numpy(mismatched_order(groups)).to(mix.device)
    return groups, {"true": "true", "null": "null", "mismatched": mix[perm]}


def _paired_gap(diff: torch.Tensor, groups: np.ndarray) -> tuple[float, float]:
    """Mean paired difference and its standard error over per-track means."""
    _, index = np.unique(groups, return_inverse=True)
    track_means = np.bincount(index, weights=diff.numpy()) / np.bincount(index)
    n = len(track_means)
    stderr = float(track_means.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return float(diff.mean()), stderr


def conditioning_report(bundle_dir: str, latent_dir: str, split: str = "val", crop_frames: int | None = None,
                        limit: int = 256, crops_per_track: int = 4) -> dict[str, float]:
    """The three losses (and the paired gaps) for a diffusion bundle's EMA weights on a latent split."""
    from bassray.data.latents import load_latent_pairs
    from bassray.bundles.diffusion import load_diffusion_bundle
    from bassray.models.pitch_classes import pitch_class_parts
    unet, _, _, _, config = load_diffusion_bundle(bundle_dir)
    frames = crop_frames or config.diffusion_training.crop_frames
    mix, target, tracks = load_latent_pairs(latent_dir, split, frames, limit, crops_per_track=crops_per_track,
                                            with_tracks=True, class_parts=pitch_class_parts(config))
    return {**conditioning_losses(unet, torch.from_numpy(mix), torch.from_numpy(target), groups=tracks),
            "crops": int(mix.shape[0]), "tracks": int(len(np.unique(tracks))), "split": split}
