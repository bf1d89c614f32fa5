"""The U-Net's view of the bass pitch as twelve class channels (unet.pitch_classes): a lossless view
of a true latent, any point of it decodes, and the whole training and generation path uses it."""
import math

import numpy as np
import pytest
import torch

from bassray.bench.untrained_bundle import write_untrained_bundle
from bassray.config import load_config
from bassray.data.latents import LatentStats
from bassray.inference import BassGenerator, GenerationSettings
from bassray.models.harmonic_phase import code_of_latent, latent_with_code, pitch_code, pitch_from_code
from bassray.models.latent_layout import LatentLayout
from bassray.models.pitch_classes import (PITCH_CLASSES, diffused_dim, diffused_target_dim, from_pitch_classes,
                                          pitch_class_parts, pitch_class_slice, to_pitch_classes)
from bassray.models.unet1d import unet_for
from bassray.train.diffusion_step import code_channel_weight

CONFIG = ["unet.pitch_classes=true"]


def _true_latents(config, batch=3, frames=10, seed=0):
    """Normalised bass latents whose pitch code is a true one (some parts unpitched), with their
    mean and std."""
    g = torch.Generator().manual_seed(seed)
    layout, parts = LatentLayout.of(config.bass_autoencoder), config.bass_autoencoder.pitch_parts
    z = torch.randn(batch, layout.total, frames, generator=g)
    semitones = torch.rand(batch, frames * parts, generator=g) * 40
    pitched = torch.rand(batch, frames * parts, generator=g) > 0.3
    raw = latent_with_code(z, pitch_code(semitones, pitched), parts)
    mean = torch.randn(layout.total, generator=g) * 0.3
    std = torch.rand(layout.total, generator=g) + 0.5
    return (raw - mean[:, None]) / std[:, None], mean, std, semitones, pitched


def test_a_true_latent_round_trips_and_its_classes_are_one_hot():
    config = load_config("tiny", CONFIG)
    parts = pitch_class_parts(config)
    z, mean, std, semitones, pitched = _true_latents(config)
    zd = to_pitch_classes(z, parts, mean, std)
    assert zd.shape[1] == diffused_target_dim(config) == z.shape[1] + 10 * parts
    classes = zd[:, z.shape[1] - 3 * parts: z.shape[1] - 3 * parts + PITCH_CLASSES * parts]
    assert set(classes.unique().tolist()) <= {-1.0, 1.0}
    per_part = (classes.reshape(z.shape[0], PITCH_CLASSES, parts, -1) > 0).sum(1)      # [B, P, L]
    expected = pitched.reshape(z.shape[0], -1, parts).transpose(1, 2)                 # [B, P, L]
    assert torch.equal(per_part, expected.long())
    torch.testing.assert_close(from_pitch_classes(zd, parts, mean, std), z, atol=1e-5, rtol=1e-5)
    # The decoded pitch is the true one, to the semitone, where pitched.
    back = pitch_from_code(code_of_latent(from_pitch_classes(zd, parts, mean, std) * std[:, None] + mean[:, None], parts))
    midi = semitones[pitched]
    assert torch.allclose(back[pitched], midi, atol=1e-3)


def test_an_estimate_unsure_between_two_classes_lands_on_one_of_them():
    """Half C, half A (three fifths apart): the circle's average is a class between them, the class
    channels' strongest is one of the two."""
    mean, std = torch.zeros(3), torch.ones(3)
    c, a = (torch.tensor([[[math.cos(k * math.pi / 6)], [math.sin(k * math.pi / 6)], [0.5]]]) for k in (0, 3))
    circle_average = (c + a) / 2
    fifths = lambda code: round(math.degrees(math.atan2(code[0, 1, 0], code[0, 0, 0])) / 30) % 12  # noqa: E731
    assert fifths(circle_average) not in (0, 3)
    average = (to_pitch_classes(c, 1, mean, std) + to_pitch_classes(a, 1, mean, std)) / 2
    assert fifths(from_pitch_classes(average, 1, mean, std)) in (0, 3)
    # A part whose classes all sit near -1 decodes unpitched (radius under 0.5), as a rest does.
    rest = torch.full((1, PITCH_CLASSES + 1, 1), -0.9)
    code = from_pitch_classes(rest, 1, mean, std)
    assert float(code[0, 0] ** 2 + code[0, 1] ** 2) < 0.25


def test_loss_weights_and_unet_follow_the_class_view():
    config = load_config("tiny", CONFIG)
    layout, parts = LatentLayout.of(config.bass_autoencoder), pitch_class_parts(config)
    weight = code_channel_weight(config)
    assert weight.shape == (diffused_dim(layout, parts),)
    pitch = pitch_class_slice(layout, parts)
    assert (weight[pitch] == config.diffusion_training.pitch_loss_weight).all()
    assert (weight[layout.rhythm_slice] == config.diffusion_training.rhythm_loss_weight).all()
    assert (weight[layout.learnt_slice] == 1).all()
    unet = unet_for(config)
    assert unet.target_dim == weight.shape[0] and unet.cond_dim == config.mix_autoencoder.latent_dim
    assert unet_for(load_config("tiny")).target_dim == layout.total


def test_pitch_classes_need_a_pitch_code():
    config = load_config("tiny", CONFIG + ["bass_autoencoder.phase=learned"])
    with pytest.raises(ValueError, match="pitch code"):
        unet_for(config)


def test_latent_stats_give_the_diffused_view_of_crops():
    config = load_config("tiny", CONFIG)
    z, mean, std, _, _ = _true_latents(config, batch=2)
    raw = (z * std[:, None] + mean[:, None]).numpy()
    stats = LatentStats([0.0], [1.0], mean.tolist(), std.tolist())
    parts = pitch_class_parts(config)
    np.testing.assert_allclose(stats.diffused_target(raw[0]), z[0].numpy(), atol=1e-5)
    view = stats.diffused_target(raw, parts)
    assert view.shape == (2, diffused_target_dim(config), z.shape[-1])
    np.testing.assert_allclose(view, to_pitch_classes(z, parts, mean, std).numpy(), atol=1e-5)


def test_a_class_view_bundle_generates_and_styles(tmp_path):
    config = load_config("tiny", CONFIG + ["sampler.steps=2"])
    generator = BassGenerator.from_bundle(write_untrained_bundle(tmp_path / "d", config))
    rate = generator.sample_rate
    mix = np.random.default_rng(0).normal(0, 0.1, (2, 3 * rate)).astype(np.float32)
    style = np.random.default_rng(1).normal(0, 0.1, (2, rate)).astype(np.float32)
    assert generator.style_mean(style).shape == (diffused_target_dim(config),)
    cond = generator.encode_mix(mix)[None]
    latents = generator.sample_latents(cond, steps=2, cfg_weight=[3.0], rescale_phi=[0.0], seeds=[0])
    assert latents.shape == (1, config.bass_autoencoder.latent_dim, cond.shape[-1])
    out = generator.generate([mix], [GenerationSettings(steps=2, seed=0, style_audio=style)])[0]
    assert out.shape == mix.shape and np.isfinite(out).all()
