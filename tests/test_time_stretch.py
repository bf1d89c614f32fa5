import numpy as np
import pytest
import torch

from bassray.config import load_config
from bassray.data.latents import latent_crop_pairs
from bassray.data.time_stretch import LatentStretcher, TempoAugment, stretch_peaks
from bassray.models.rhythm_code import code_attacks, _frames

CONFIG = load_config("tiny")
TARGET = LatentStretcher.of(CONFIG.bass_autoencoder)
MIX = LatentStretcher.of(CONFIG.mix_autoencoder)
PARTS = CONFIG.bass_autoencoder.rhythm_parts


def _bass_latent(length: int, attack_parts: list[int], rng: np.random.Generator) -> np.ndarray:
    """A bass latent whose rhythm code attacks at ``attack_parts`` (with a weaker spill into the next
    part, as a real attack has) and whose pitch code holds one pitch per note."""
    lay = TARGET.layout
    z = rng.normal(size=(lay.total, length))
    fine = np.zeros((3, length * PARTS))
    fine[0] = -0.5
    pitch = np.zeros((3, length * PARTS))
    for n, part in enumerate(attack_parts):
        fine[1, part], fine[1, part + 1] = 3.0 + n % 3, 1.0
        fine[2, part] = 4.0
        fine[0, part:part + 6] = 1.0
        pitch[:, part:] = np.array([np.cos(n), np.sin(n), 0.3 + 0.01 * n])[:, None]
    z[lay.rhythm_slice] = fine.reshape(3, length, PARTS).transpose(0, 2, 1).reshape(3 * PARTS, length)
    z[lay.pitch_slice] = pitch.reshape(3, length, PARTS).transpose(0, 2, 1).reshape(3 * PARTS, length)
    return z


def _attacks(z: np.ndarray) -> np.ndarray:
    code = torch.from_numpy(z[TARGET.layout.rhythm_slice][None]).float()
    return np.flatnonzero(code_attacks(code, PARTS, threshold=0.5)[0].numpy())


def test_a_factor_of_one_from_a_whole_frame_is_the_plain_crop():
    rng = np.random.default_rng(0)
    for stretcher in (MIX, TARGET):
        z = rng.normal(size=(stretcher.layout.total, 40))
        np.testing.assert_allclose(stretcher(z, 1.0, 7.0, 16), z[:, 7:23], atol=1e-12)


@pytest.mark.parametrize("factor", [0.7, 1.3, 1.5, 2.0])
def test_stretched_attacks_keep_their_number_and_height_and_move_with_the_tempo(factor):
    attack_parts = [8, 30, 52, 74, 96]
    z = _bass_latent(40, attack_parts, np.random.default_rng(1))
    n_out = 24
    out = TARGET(z, factor, 1.0, n_out)
    expected = [round((p - PARTS + 0.5) * factor - 0.5) for p in attack_parts]
    expected = [e for e in expected if 0 <= e < n_out * PARTS - 1]
    assert expected and list(_attacks(out)) == expected
    onsets = _frames(torch.from_numpy(out[TARGET.layout.rhythm_slice][None]), 1, PARTS)[0].numpy()
    np.testing.assert_allclose(sorted(onsets[expected]), sorted(
        3.0 + n % 3 for n, p in enumerate(attack_parts) if round((p - PARTS + 0.5) * factor - 0.5) in expected))


@pytest.mark.parametrize("factor", [0.7, 1.5])
def test_the_pitch_code_changes_only_at_the_stretched_attacks(factor):
    z = _bass_latent(40, [8, 30, 52, 74, 96], np.random.default_rng(2))
    out = TARGET(z, factor, 1.0, 24)
    pitch = _frames(torch.from_numpy(out[TARGET.layout.pitch_slice][None]), 0, PARTS)[0].numpy()
    changes = np.flatnonzero(np.diff(pitch)) + 1
    assert set(changes) <= set(_attacks(out)) and len(changes) >= 2
    source_values = set(np.round(np.cos(np.arange(5)), 6)) | {0.0}
    assert set(np.round(pitch, 6)) <= source_values


def test_onset_peaks_at_the_crop_edges_are_not_doubled():
    x = np.zeros((1, 30))
    x[0, [3, 10, 20]] = 4.0
    for factor in (1.3, 1.7, 2.0):
        for start in np.linspace(0.0, 12.0, 25):
            y = stretch_peaks(x, factor, start, 16)[0]
            peaks = np.flatnonzero((y > 0) & (y >= np.maximum(np.roll(y, 1), np.roll(y, -1))))
            assert np.all(y[peaks] == 4.0) and np.all(np.diff(peaks) > 1)


def test_tempo_augment_draws_stretches_within_its_range_and_keeps_shapes():
    config = load_config("tiny", ["diffusion_training.tempo_stretch_probability=1.0"])
    augment = TempoAugment.of(config)
    rng = np.random.default_rng(3)
    mixes = rng.normal(size=(2, MIX.layout.total, 47))
    target = _bass_latent(47, list(range(8, 180, 12)), rng)
    pairs = latent_crop_pairs(mixes, target, 32, 30, rng, augment)
    assert all(m.shape == (MIX.layout.total, 32) and t.shape == (TARGET.layout.total, 32) for m, t in pairs)
    gaps = [np.median(np.diff(_attacks(t))) for _, t in pairs]
    assert min(gaps) < 12 * 0.85 and max(gaps) > 12 * 1.2      # some compressed, some stretched
    assert min(gaps) >= 12 * 0.6 and max(gaps) <= 12 * 1.6
    assert TempoAugment.of(load_config("tiny", ["diffusion_training.tempo_stretch_probability=0"])) is None
    assert all(augment.draw_factor(32, 32, rng) >= 1.0 for _ in range(50))   # too short to compress


def test_a_latent_of_another_layout_is_refused_and_bad_settings_are_named():
    with pytest.raises(ValueError, match="encode the latents with this config"):
        TARGET(np.zeros((32, 40)), 1.5, 0.0, 16)
    with pytest.raises(ValueError, match="tempo_stretch"):
        load_config("tiny", ["diffusion_training.tempo_stretch_range=[1.5,0.7]"])
    with pytest.raises(ValueError, match="tempo_stretch"):
        load_config("tiny", ["diffusion_training.tempo_stretch_range=[0.7,1.0,1.5]"])
