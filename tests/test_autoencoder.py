"""Stage-1 models, losses and bundles: shapes, exact lengths, round trips and loss invariants."""
from __future__ import annotations

import json

import pytest
import torch

from bassray.config import AudioConfig, AutoencoderConfig, load_config
from bassray.models.autoencoder import Autoencoder, LatentAutoencoder, count_parameters
from bassray.models.critics import Critics
from bassray.train.autoencoder_losses import (critic_loss, generator_loss, hinge_critic_terms, log_mel_l1,
                                              mssd, reconstruction_l1)
from bassray.bundles.files import (BundleError, load_autoencoder, load_bundle_state, read_bundle_metadata,
                                  save_bundle)


@pytest.fixture(scope="module")
def tiny():
    return load_config("tiny")


@pytest.fixture(scope="module")
def tiny_ae(tiny):
    torch.manual_seed(0)
    return Autoencoder(tiny.mix_autoencoder, tiny.audio).eval()


def _tones(batch: int, channels: int, samples: int, rate: int) -> torch.Tensor:
    t = torch.arange(samples) / rate
    rows = [0.3 * torch.sin(2 * torch.pi * 55.0 * (i + 1) * t + i) for i in range(batch)]
    return torch.stack(rows)[:, None].repeat(1, channels, 1)  # [B, C, T]


def test_interface_properties(tiny_ae, tiny):
    assert isinstance(tiny_ae, LatentAutoencoder)
    assert tiny_ae.hop_samples == 4096
    assert tiny_ae.sample_rate == tiny.audio.sample_rate and tiny_ae.channels == tiny.audio.channels
    assert tiny_ae.latent_dim == tiny.mix_autoencoder.latent_dim
    assert tiny_ae.frame_rate == pytest.approx(tiny.audio.sample_rate / 4096)


@pytest.mark.parametrize("length", [1, 4095, 4096, 4097, 12345])
@torch.no_grad()
def test_exact_lengths(tiny_ae, length):
    wav = 0.1 * torch.randn(2, 2, length)
    z = tiny_ae.encode(wav)
    frames = -(-length // 4096)
    assert z.shape == (2, tiny_ae.latent_dim, frames)
    assert tiny_ae.decode(z, length=length).shape == (2, 2, length)
    assert tiny_ae.decode(z).shape == (2, 2, frames * 4096)
    out = tiny_ae(wav)
    assert out.wav.shape == wav.shape and out.latent.shape == z.shape
    assert out.log_mag.shape == out.input_log_mag.shape == (2, 2, 513, frames * 16)
    assert torch.isfinite(out.wav).all()


@torch.no_grad()
def test_bad_inputs_are_rejected(tiny_ae):
    with pytest.raises(ValueError, match="channels"):
        tiny_ae.encode(torch.zeros(1, 1, 4096))
    with pytest.raises(ValueError, match="latent"):
        tiny_ae.decode(torch.zeros(1, 7, 2))
    with pytest.raises(ValueError, match="decode length"):
        tiny_ae.decode(torch.zeros(1, tiny_ae.latent_dim, 2), length=3 * 4096)
    with pytest.raises(ValueError, match="len\\(downsample_factors\\)"):
        Autoencoder(AutoencoderConfig(channels=[8, 8]), AudioConfig())


def test_istft_path_reconstructs_true_spectrum(tiny_ae):
    """The decoder's iSTFT path (last centred frame dropped, unit phase) inverts the encoder's STFT."""
    wav = 0.2 * torch.randn(2, 2, 3 * 4096)
    window = torch.hann_window(1024)
    spec = torch.stft(wav.reshape(4, -1), 1024, 256, window=window, center=True, return_complex=True)
    spec = spec[..., : 3 * 16].reshape(2, 2, 513, -1)  # the frames the encoder sees
    phase = torch.stack([torch.cos(spec.angle()), torch.sin(spec.angle())], dim=2)  # [B, C, 2, F, N]
    recon = tiny_ae.spectrum_to_wave(spec.abs(), phase, wav.shape[-1])
    assert torch.allclose(recon, wav, atol=1e-5)
    # and the log-power the encoder reads maps back to the true magnitude up to the eps floor
    log_mag = tiny_ae.input_log_magnitude(wav)
    assert torch.allclose(tiny_ae.log_power_to_magnitude(log_mag), spec.abs(), atol=1e-2)


def test_losses_zero_on_identical_and_positive_otherwise(tiny):
    a = _tones(2, 2, 8000, 16000)
    b = a + 0.05 * torch.randn_like(a)
    hops = tiny.autoencoder_training.mssd_hops
    assert float(mssd(a, a, hops)) == 0.0 and float(mssd(a, b, hops)) > 0.0
    assert float(log_mel_l1(a, a, 16000)) == 0.0 and float(log_mel_l1(a, b, 16000)) > 0.0
    s = torch.randn(2, 2, 513, 10)
    assert float(reconstruction_l1(s, s)) == 0.0 and float(reconstruction_l1(s + 0.1, s)) > 0.0
    # hinge: zero once the critic separates by the margin, positive otherwise
    assert float(hinge_critic_terms(torch.full((2, 5), 1.5), torch.full((2, 5), -1.5))) == 0.0
    assert float(hinge_critic_terms(torch.zeros(2, 5), torch.zeros(2, 5))) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        mssd(a, a[..., :-1], hops)


def test_critics_shapes_and_losses(tiny):
    critics = Critics(tiny.critic, tiny.audio)
    wav = _tones(3, 2, 24000, 16000)
    score_spec, score_mel = critics(wav)
    assert score_spec.dim() == 2 and score_mel.dim() == 2
    assert score_spec.shape[0] == score_mel.shape[0] == 3
    frames = 24000 // 256 + 1
    assert score_spec.shape[1] == score_mel.shape[1] == -(-frames // 2 ** (len(tiny.critic.channels) - 1))
    loss, metrics = critic_loss(critics, wav, wav + 0.01 * torch.randn_like(wav))
    loss.backward()
    assert loss.item() >= 0 and {"critic/loss", "critic/spec", "critic/mel"} <= set(metrics)
    assert all(p.grad is not None for p in critics.parameters())


def test_adam_steps_reduce_reconstruction(tiny):
    torch.manual_seed(0)
    model = Autoencoder(tiny.mix_autoencoder, tiny.audio)
    critics = Critics(tiny.critic, tiny.audio).requires_grad_(False)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-4, betas=(0.5, 0.9))
    wav = _tones(2, 2, 8192, 16000)
    first = None
    for step in range(6):
        loss, metrics, fake = generator_loss(model, critics, wav, tiny.autoencoder_training,
                                             adversarial=step >= 3)
        assert fake.shape == wav.shape and torch.isfinite(loss)
        first = metrics["gen/rec"] if first is None else first
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert "gen/adv" in metrics
    assert all(p.grad is None for p in critics.parameters())  # frozen critics get no gradient
    with torch.no_grad():
        out = model(wav)
    assert float(reconstruction_l1(out.log_mag, out.input_log_mag)) < first


def test_paper_autoencoders_have_about_37m_parameters():
    paper = load_config("paper")
    for stem in ("mix", "bass"):
        n = count_parameters(Autoencoder(paper.autoencoder_for(stem), paper.audio))
        assert 0.9 * 37e6 <= n <= 1.1 * 37e6, f"{stem}: {n / 1e6:.1f}M parameters"


def test_bundle_round_trip(tiny_ae, tiny, tmp_path):
    path = save_bundle(tmp_path / "ae", "autoencoder", tiny, tiny_ae, metadata={"stem": "mix", "step": 7},
                       extra_tensors={"mean": torch.arange(4.0)})
    meta = read_bundle_metadata(path)
    assert meta["kind"] == "autoencoder" and meta["stem"] == "mix" and meta["step"] == 7
    assert json.loads((path / "config.json").read_text())["name"] == tiny.name
    loaded = load_autoencoder(path, stem="mix")
    assert not loaded.training
    wav = 0.1 * torch.randn(1, 2, 5000)
    with torch.no_grad():
        assert torch.equal(loaded.encode(wav), tiny_ae.encode(wav))
        assert torch.equal(loaded(wav).wav, tiny_ae(wav).wav)
    state = load_bundle_state(path)
    assert torch.equal(state.extra_tensors["mean"], torch.arange(4.0))
    assert state.config == tiny


def test_bundle_errors(tiny_ae, tiny, tmp_path):
    with pytest.raises(BundleError, match="no bundle directory"):
        load_autoencoder(tmp_path / "nothing")
    path = save_bundle(tmp_path / "ae", "autoencoder", tiny, tiny_ae, metadata={"stem": "mix"})
    with pytest.raises(BundleError, match="not 'bass'"):
        load_autoencoder(path, stem="bass")
    with pytest.raises(BundleError, match="not 'diffusion'"):
        load_bundle_state(path, expected_kind="diffusion")
    with pytest.raises(ValueError, match="stem kind"):
        save_bundle(tmp_path / "bad", "autoencoder", tiny, tiny_ae, metadata={"stem": "drums"})
    (path / "model.safetensors").unlink()
    with pytest.raises(BundleError, match="incomplete"):
        load_autoencoder(path)
    (path / "bundle.json").unlink()
    with pytest.raises(BundleError, match="bundle.json is missing"):
        read_bundle_metadata(path)


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_power_spectrogram_matches_torch_stft(pad_mode):
    from bassray.models.spectral import power_spectrogram
    wav = torch.randn(2, 2, 3000)
    spec = torch.stft(wav.reshape(4, -1), 256, 64, window=torch.hann_window(256), center=True,
                      pad_mode=pad_mode, return_complex=True).abs().square().reshape(2, 2, 129, -1)
    assert torch.allclose(power_spectrogram(wav, 256, 64, pad_mode=pad_mode), spec, rtol=1e-4, atol=1e-3)
