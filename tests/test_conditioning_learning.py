"""The stage-2 objective teaches the U-Net to use its condition in a way that carries over to tracks
it never saw: latent pairs whose target follows the mix through a fixed rule, plus a per-track
offset and noise the mix cannot explain (as a bass's timbre and level cannot be heard in the mix)."""
import numpy as np
import pytest
import torch

from bassray.config import UNetConfig
from bassray.diffusion.schedule import v_loss
from bassray.eval.conditioning import conditioning_losses
from bassray.models.unet1d import UNet1d
from bassray.train.ema import EMA

pytestmark = pytest.mark.slow  # ~10 s of CPU training

MIX_DIM, TARGET_DIM, FRAMES = 8, 4, 16


def make_tracks(n: int, rng: np.random.Generator, rule: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    tracks = []
    for _ in range(n):
        steps = rng.normal(size=(MIX_DIM, 48)).astype(np.float32)
        mix = np.repeat(steps[:, ::4], 4, axis=1)  # piecewise constant, like chords over bars
        target = np.tanh(rule @ mix) + 0.5 * rng.normal(size=(TARGET_DIM, 1)) + 0.3 * rng.normal(size=(TARGET_DIM, 48))
        tracks.append((mix, target.astype(np.float32)))
    return tracks


def crops(tracks, rng, count):
    picks = [(tracks[i], rng.integers(0, 48 - FRAMES + 1)) for i in rng.integers(len(tracks), size=count)]
    mix = np.stack([m[:, s:s + FRAMES] for (m, _), s in picks])
    target = np.stack([t[:, s:s + FRAMES] for (_, t), s in picks])
    return torch.from_numpy(mix), torch.from_numpy(target)


def test_true_mix_beats_null_and_mismatched_on_unseen_tracks():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    rule = rng.normal(size=(TARGET_DIM, MIX_DIM)).astype(np.float32) / np.sqrt(MIX_DIM)
    train, held_out = make_tracks(40, rng, rule), make_tracks(12, rng, rule)
    cfg = UNetConfig(base_channels=32, channel_mults=[1, 2], blocks_per_level=1, attention_levels=[1],
                     num_heads=2, time_embed_dim=16, dpb_hidden=16)
    model = UNet1d(cfg, TARGET_DIM, MIX_DIM)
    ema = EMA(model, 0.98)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        mix, target = crops(train, rng, 32)
        loss, _ = v_loss(model, target, mix, generator=gen, cond_dropout=0.15, cond_noise=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
    ema.copy_to(model)
    mix = torch.from_numpy(np.stack([m[:, s:s + FRAMES] for m, _ in held_out for s in (0, 16, 32)]))
    target = torch.from_numpy(np.stack([t[:, s:s + FRAMES] for _, t in held_out for s in (0, 16, 32)]))
    losses = conditioning_losses(model, mix, target, groups=np.repeat(np.arange(len(held_out)), 3))
    assert losses["v_loss_true_mix"] < losses["v_loss_null_mix"]
    assert losses["v_loss_true_mix"] < losses["v_loss_mismatched_mix"]
    assert losses["z_null"] > 3 and losses["z_mismatched"] > 3, losses
