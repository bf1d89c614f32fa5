"""The contrastive (mix, bass) model, its crop reservoir and the matching metric, in process."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bassray.eval.matching import matching, soft_assignment, top1
from bassray.models.contrastive import ContrastiveConfig, MixBassContrastive, log_frequency_filterbank, windows

RATE = 8000
SMALL = ContrastiveConfig(sample_rate=RATE, crop_seconds=1.0, n_fft=2048, hop_length=256, mix_octaves=6,
                          bass_octaves=4, channels=32, embed_dim=32)


def _pair(rng: np.random.Generator, seconds: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A mix (a major triad around C4 pulsing on a random grid) and its bass (the root around C2,
    on the same pulses): what belongs together is the root's pitch class and the rhythm."""
    t = np.arange(int(seconds * RATE)) / RATE
    root = int(rng.integers(0, 12))
    period = float(rng.choice([0.125, 0.25, 0.5]))
    phase = float(rng.uniform(0, period))
    envelope = np.exp(-8 * ((t - phase) % period))
    hz = lambda midi: 440.0 * 2 ** ((midi - 69) / 12)  # noqa: E731
    mix = sum(0.2 * np.sin(2 * np.pi * hz(60 + root + k) * t) for k in (0, 4, 7)) * envelope
    bass = sum(0.4 / h * np.sin(2 * np.pi * h * hz(36 + root) * t) for h in (1, 2, 3)) * envelope
    return mix.astype(np.float32), bass.astype(np.float32)


def test_log_frequency_filterbank_covers_every_band():
    bank = log_frequency_filterbank(4096, 16000, 32.70, 12, 72)
    assert bank.shape == (72, 2049)
    torch.testing.assert_close(bank.sum(1), torch.ones(72))
    peaks = bank.argmax(1)
    assert bool((peaks[1:] >= peaks[:-1]).all())  # centres rise with the band index
    # the lowest band (C1, 32.7 Hz) sits on the FFT bins around 32.7 Hz
    assert abs(float(peaks[0]) * 16000 / 4096 - 32.7) < 16000 / 4096


def test_embeddings_are_unit_vectors_and_loss_is_finite():
    model = MixBassContrastive(SMALL)
    mix, bass = torch.randn(4, 2, RATE), torch.randn(4, 2, RATE)  # stereo is averaged to mono
    assert torch.allclose(model.embed_mix(mix).norm(dim=1), torch.ones(4), atol=1e-5)
    loss, metrics = model(mix, bass)
    assert torch.isfinite(loss) and 0 <= metrics["top1"] <= 1
    assert windows(torch.zeros(2, 100), 40, 20).shape == (4, 2, 40)
    assert windows(torch.zeros(10), 40, 20).shape == (1, 40)  # short clips are padded to one window


def test_contrastive_model_separates_matched_from_shuffled_pairs():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = MixBassContrastive(SMALL)
    optimizer = torch.optim.AdamW(model.parameters(), 3e-3)
    for _ in range(120):
        pairs = [_pair(rng) for _ in range(16)]
        loss, _ = model(torch.from_numpy(np.stack([p[0] for p in pairs])),
                        torch.from_numpy(np.stack([p[1] for p in pairs])))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    held_out = [_pair(np.random.default_rng(100 + i), seconds=2.0) for i in range(12)]
    mixes, basses = [p[0] for p in held_out], [p[1] for p in held_out]
    result = matching(model, mixes, {"true": basses})
    assert result["top1"]["true"] >= 0.5 > 1 / 12
    assert result["top1"]["shuffled"] <= 0.25
    assignment = soft_assignment(model, mixes, basses)
    np.testing.assert_allclose(assignment.sum(1), 1.0, rtol=1e-5)
    assert np.mean(np.diag(assignment)) > 3 * np.mean(assignment[~np.eye(12, dtype=bool)])


def test_top1_counts_the_diagonal():
    assert top1(np.eye(5)) == 1.0
    assert top1(np.roll(np.eye(5), 1, axis=1)) == 0.0


def test_crop_reservoir_takes_aligned_crops_from_many_segments():
    from bassray.distributed.train_contrastive import CropReservoir
    rows = iter([{"mix": np.arange(100, dtype=np.float32) + 1000 * i,
                  "target": 2 * (np.arange(100, dtype=np.float32) + 1000 * i)} for i in range(50)])
    reservoir = CropReservoir(rows, crop_samples=10, capacity=8, refresh=2, rng=np.random.default_rng(0))
    mix, target = reservoir.batch(6)
    assert mix.shape == target.shape == (6, 10)
    torch.testing.assert_close(target, 2 * mix)  # the same offset of the same segment
    assert bool((mix[:, 1:] - mix[:, :-1] == 1).all())  # contiguous crops
    for _ in range(10):
        reservoir.batch(6)
    assert len(reservoir.held) == 8  # capacity kept; old segments replaced
    assert min(int(m[0]) // 1000 for m, _ in reservoir.held) > 0


def test_contrastive_bundle_round_trip(tmp_path):
    from bassray.config import load_config
    from bassray.bundles.files import BundleError, save_bundle
    from bassray.bundles.contrastive import KIND, load_contrastive
    model = MixBassContrastive(SMALL)
    save_bundle(tmp_path / "c", KIND, load_config("tiny"), model, metadata={"contrastive": SMALL.to_dict(), "step": 1})
    loaded = load_contrastive(tmp_path / "c")
    audio = torch.randn(2, RATE)
    model.eval()
    torch.testing.assert_close(loaded.embed_bass(audio), model.embed_bass(audio))
    save_bundle(tmp_path / "other", "autoencoder", load_config("tiny"), torch.nn.Linear(1, 1),
                metadata={"stem": "mix"})
    with pytest.raises(BundleError, match="contrastive"):
        load_contrastive(tmp_path / "other")
