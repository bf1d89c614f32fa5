"""Harmony snap: a generated pitch class moves at most one step round the circle of fifths, towards
a class the mix's chroma plays; off leaves the code untouched; height and radius are kept."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bassray.bench.untrained_bundle import write_untrained_bundle
from bassray.config import load_config
from bassray.inference import BassGenerator, GenerationSettings
from bassray.models.harmonic_phase import PITCH_SEMITONES
from bassray.models.harmony import snap_to_harmony

C, F, G, D, E = 0, 5, 7, 2, 4  # pitch classes


def _code(fifths_positions: list[float], height: float = 20.0 / PITCH_SEMITONES, radius: float = 0.9) -> torch.Tensor:
    """[1, 3, P] codes at the given positions on the circle of fifths (C = 0, G = 1, F = -1)."""
    angle = torch.tensor(fifths_positions) * 2 * math.pi / 12
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle),
                        torch.full_like(angle, height)])[None]


def _chroma(classes: list[int], frames: int) -> torch.Tensor:
    chroma = torch.zeros(1, 12, frames)
    chroma[0, classes] = 1.0
    return chroma


def _pitch_class_of(code: torch.Tensor) -> list[int]:
    fifths = torch.round(torch.atan2(code[:, 1], code[:, 0]) * 12 / (2 * math.pi))
    return [int(v) for v in torch.remainder(7 * fifths, 12)[0].tolist()]


def test_an_unsure_note_goes_to_the_neighbour_the_mix_plays():
    code = _code([-0.6, -0.6])  # between F (-1) and C (0), nearer F
    snapped = snap_to_harmony(code, torch.cat([_chroma([C, E, G], 1), _chroma([F, 9, C], 1)], dim=-1), 0.5)
    assert _pitch_class_of(snapped) == [C, F]  # C major: the root; F major: F stays
    assert _pitch_class_of(code) == [F, F]


def test_a_note_moves_at_most_one_step_round_the_circle():
    code = _code([2.0])  # D, two fifths from C
    assert _pitch_class_of(snap_to_harmony(code, _chroma([C], 1), 4.0)) == [D]


def test_off_and_silence_keep_the_note():
    code = _code([-0.6, 0.3, 1.4])
    assert torch.equal(snap_to_harmony(code, _chroma([C, E, G], 3), 0.0), code)  # off: untouched
    silent = snap_to_harmony(code, torch.zeros(1, 12, 3), 1.0)
    assert _pitch_class_of(silent) == _pitch_class_of(code)  # no chroma: the nearest class


def test_height_and_radius_are_kept_and_widths_are_per_example():
    code = torch.cat([_code([-0.6], radius=0.7), _code([-0.6], radius=0.7)])
    snapped = snap_to_harmony(code, _chroma([C, E, G], 1).expand(2, -1, -1), torch.tensor([1.0, 0.0]))
    assert torch.allclose(snapped[:, 2], code[:, 2])
    assert torch.allclose(snapped[:, :2].square().sum(1).sqrt(), torch.full((2, 1), 0.7))
    assert _pitch_class_of(snapped[:1]) == [C] and torch.equal(snapped[1], code[1])


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    config = load_config("tiny", ["sampler.steps=2"])
    return BassGenerator.from_bundle(write_untrained_bundle(tmp_path_factory.mktemp("b") / "d", config))


def test_generator_snap_touches_only_the_pitch_classes(generator):
    torch.manual_seed(0)
    ae = generator.target_ae
    latents = torch.randn(2, ae.latent_dim, 6)
    cond = torch.randn(2, generator.mix_ae.latent_dim, 6)
    snapped = generator.snap_to_harmony(latents, cond, [1.0, 0.0])
    pitch = 3 * ae.pitch_parts
    torch.testing.assert_close(snapped[:, :-pitch], latents[:, :-pitch])  # learnt channels untouched
    torch.testing.assert_close(snapped[1], latents[1])                    # width 0: as sampled
    assert not torch.allclose(snapped[0], latents[0])
    with pytest.raises(ValueError, match="harmony"):
        generator.snap_to_harmony(latents, cond, [5.0, 0.0])


def test_generate_honours_the_per_request_harmony_width(generator):
    mix = np.random.default_rng(0).normal(0, 0.1, (2, generator.sample_rate * 2)).astype(np.float32)
    both = generator.generate([mix, mix], [GenerationSettings(steps=2, seed=3, harmony=0.0),
                                           GenerationSettings(steps=2, seed=3, harmony=2.0)])
    alone = generator.generate([mix], [GenerationSettings(steps=2, seed=3, harmony=2.0)])[0]
    assert both[0].shape == mix.shape and np.isfinite(both[1]).all()
    np.testing.assert_allclose(alone, both[1], atol=1e-4)  # batched like any other setting


def test_with_and_without_snap_come_from_one_sampling_run(generator):
    mix = np.random.default_rng(1).normal(0, 0.1, (2, generator.sample_rate * 2)).astype(np.float32)
    settings = [GenerationSettings(steps=2, seed=4, harmony=2.0)]
    snapped, unsnapped = generator.generate_with_and_without_snap([mix], settings)
    np.testing.assert_allclose(snapped[0], generator.generate([mix], settings)[0], atol=1e-5)
    plain = generator.generate([mix], [GenerationSettings(steps=2, seed=4, harmony=0.0)])[0]
    np.testing.assert_allclose(unsnapped[0], plain, atol=1e-5)
