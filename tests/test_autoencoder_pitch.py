"""The bass autoencoder keeps pitch: a short training on a sine-bass fixture passes the
reconstruction-fidelity check with the harmonic phase, and the paper's direct phase, trained the
same way, does not."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bassray.config import AudioConfig, AutoencoderConfig, AutoencoderTrainConfig
from bassray.eval.musical_fit import reconstruction_fidelity
from bassray.models.autoencoder import Autoencoder
from bassray.models.harmonic_phase import pitch_code, pitch_from_code
from bassray.train.autoencoder_losses import generator_loss

RATE = 16000


def sine_bass(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A bass line of random notes (E1-E3), a quarter to a half second each: decaying partials."""
    t_all = np.arange(int(seconds * RATE)) / RATE
    out = np.zeros_like(t_all)
    start = 0.0
    while start < seconds:
        length = float(rng.uniform(0.25, 0.5))
        f0 = 440.0 * 2 ** ((int(rng.integers(28, 53)) - 69) / 12)
        on = (t_all >= start) & (t_all < start + length)
        t = t_all[on] - start
        out[on] = np.exp(-3 * t) * sum(0.3 / h * np.sin(2 * np.pi * h * f0 * t) for h in range(1, 6))
        start += length
    return out[None].astype(np.float32)  # [1, T]


def train(phase: str, steps: int = 120, seed: int = 0) -> Autoencoder:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = AutoencoderConfig(latent_dim=16, channels=[48, 48, 48, 48, 48], blocks_per_stage=1, phase=phase,
                            pitch_parts=4)
    model = Autoencoder(cfg, AudioConfig(sample_rate=RATE, channels=1))
    train_cfg = AutoencoderTrainConfig(batch_size=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.9))
    for _ in range(steps):
        batch = torch.from_numpy(np.stack([sine_bass(1.0, rng) for _ in range(8)]))
        loss, _, _ = generator_loss(model, None, batch, train_cfg, adversarial=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def held_out():
    return sine_bass(6.0, np.random.default_rng(123))


def _fidelity(model: Autoencoder, audio: np.ndarray) -> dict[str, float]:
    with torch.no_grad():
        x = torch.from_numpy(audio)[None]
        recon = model.decode(model.encode(x), length=x.shape[-1])[0].numpy()
    return reconstruction_fidelity(audio, recon, RATE)


def test_harmonic_phase_autoencoder_keeps_pitch_after_a_short_training(held_out):
    fid = _fidelity(train("harmonic"), held_out)
    assert fid["pitch_accuracy"] >= 0.7, fid
    assert fid["chroma_cosine"] >= 0.8, fid


def test_direct_phase_autoencoder_loses_pitch_in_the_same_training(held_out):
    fid = _fidelity(train("direct"), held_out)
    assert fid["pitch_accuracy"] <= 0.3, fid


def test_pitch_parts_carry_the_input_f0(held_out):
    """The latent's last channels hold the input's f0 per quarter of a latent frame, and decode to
    it: a 110 Hz tone (A2) is pitch class A, three fifths from C on the circle of fifths, and height
    12 log2(110 / 30) / 45."""
    cfg = AutoencoderConfig(latent_dim=16, channels=[16] * 5, blocks_per_stage=1, phase="harmonic", pitch_parts=4)
    model = Autoencoder(cfg, AudioConfig(sample_rate=RATE, channels=1)).eval()
    t = np.arange(RATE * 2) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 110.0 * t) + 0.1 * np.sin(2 * np.pi * 220.0 * t))[None, None].astype(np.float32)
    with torch.no_grad():
        z = model.encode(torch.from_numpy(tone))
    code = z[0, -12:, 1:-1].reshape(3, 4, -1)  # inner frames (the edges see padding)
    a_angle = 2 * np.pi * 3 / 12
    assert torch.allclose(code[0], torch.full_like(code[0], np.cos(a_angle)), atol=0.02)
    assert torch.allclose(code[1], torch.full_like(code[1], np.sin(a_angle)), atol=0.02)
    assert torch.allclose(code[2] * 45, torch.full_like(code[2], 12 * np.log2(110 / 30)), atol=0.1)
    decoded = pitch_from_code(code.reshape(3, -1))
    assert torch.allclose(decoded, torch.full_like(decoded, 12 * np.log2(110 / 30)), atol=0.1)
    silent = model.encode(torch.zeros(1, 1, RATE))
    assert torch.all(silent[0, -12:] == 0)


def test_pitch_code_round_trips_and_ignores_octaves():
    semitones = torch.tensor([0.5, 7.3, 19.0, 31.0, 44.0])
    decoded = pitch_from_code(pitch_code(semitones, torch.ones(5, dtype=torch.bool)))
    assert torch.allclose(decoded, semitones, atol=1e-4)
    octave_up = pitch_code(semitones[:2] + 12, torch.ones(2, dtype=torch.bool))
    same = pitch_code(semitones[:2], torch.ones(2, dtype=torch.bool))
    assert torch.allclose(octave_up[:2], same[:2], atol=1e-5)  # same point on the pitch-class circle


def test_pitch_code_puts_a_fifth_next_to_its_root():
    """On the circle of fifths C and G are 30 degrees apart and C and F# opposite; a code between
    root and fifth (what an unsure model outputs) decodes to one of them, not to a third note."""
    c2, g2, fs2 = (torch.tensor([s]) for s in (12 * np.log2(65.41 / 30), 12 * np.log2(98.0 / 30),
                                              12 * np.log2(92.5 / 30)))
    on = torch.ones(1, dtype=torch.bool)
    code_c, code_g, code_fs = pitch_code(c2, on), pitch_code(g2, on), pitch_code(fs2, on)
    cosine = lambda a, b: float((a[:2, 0] * b[:2, 0]).sum())  # noqa: E731
    assert abs(cosine(code_c, code_g) - np.cos(np.pi / 6)) < 1e-4
    assert abs(cosine(code_c, code_fs) + 1) < 1e-4
    between = 0.55 * code_c + 0.45 * code_g
    assert torch.allclose(pitch_from_code(between), c2, atol=0.5)


def test_the_decoders_f0_keeps_the_last_pitch_through_unpitched_parts():
    """A note's decaying tail and a rest carry no pitch (a zero code; near zero when generated); the
    decoder's f0 must not jump there to the lowest pitch or to a random class."""
    from bassray.models.harmonic_phase import pitch_through_rests
    semitones = torch.tensor([[10.0, 10.0, 0.0, 0.0, 17.0, 0.0, 0.0]])
    pitched = torch.tensor([[0, 1, 1, 0, 1, 0, 0]], dtype=torch.bool)
    code = pitch_code(semitones, pitched)
    code[:, :2, 3] = 0.1                      # a generated rest: near, not at, zero
    held = pitch_through_rests(pitch_from_code(code), code)
    assert held.tolist() == [[10.0, 10.0, 0.0, 0.0, 17.0, 17.0, 17.0]]
    # Pitched parts are kept; a code with no pitched part at all is left as it is.
    assert torch.equal(held[pitched], pitch_from_code(code)[pitched])
    silent = torch.zeros(2, 3, 5)
    assert torch.equal(pitch_through_rests(pitch_from_code(silent), silent), pitch_from_code(silent))
