"""The one inference path and `bassray generate`, on an untrained tiny bundle (real architecture)."""
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from bassray.audio import rms_db
from bassray.bench.untrained_bundle import write_untrained_bundle
from bassray.cli import main
from bassray.config import load_config
from bassray.inference import BassGenerator, GenerationSettings, decode_chunked, encode_chunked
from bassray.models.autoencoder import Autoencoder
from bassray.bundles.files import BundleError


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    config = load_config("tiny", ["sampler.steps=2"])
    return write_untrained_bundle(tmp_path_factory.mktemp("b") / "diffusion", config)


def test_chunked_autoencoding_matches_whole_signal():
    torch.manual_seed(0)
    config = load_config("tiny")
    ae = Autoencoder(config.mix_autoencoder, config.audio).eval()
    audio = 0.1 * torch.randn(1, 2, 4096 * 300 + 77)  # longer than one chunk
    with torch.no_grad():
        whole = ae.encode(audio)
        chunked = encode_chunked(ae, audio)
        assert chunked.shape == whole.shape
        torch.testing.assert_close(chunked, whole, atol=1e-3 * whole.abs().max().item(), rtol=1e-3)
        decoded = decode_chunked(ae, whole)
        assert decoded.shape[-1] == whole.shape[-1] * 4096
        reference = ae.decode(whole)
        # Frames near chunk joins see the same context; allow tiny float differences.
        assert (decoded - reference).abs().max() < 1e-2 * reference.abs().max() + 1e-5


def test_generate_keeps_length_for_odd_lengths_and_mixed_settings(bundle):
    generator = BassGenerator.from_bundle(bundle)
    rate = generator.sample_rate
    mixes = [np.random.default_rng(i).normal(0, 0.1, (2, n)).astype(np.float32)
             for i, n in enumerate([rate // 3, 5 * rate + 1, 5 * rate + 1])]
    style = np.random.default_rng(9).normal(0, 0.1, (2, rate)).astype(np.float32)
    settings = [GenerationSettings(steps=2, seed=0), GenerationSettings(steps=2, cfg_weight=3.0, rescale_phi=0.7, seed=1),
                GenerationSettings(steps=2, seed=2, style_audio=style)]
    outs = generator.generate(mixes, settings)
    for mix, out in zip(mixes, outs):
        assert out.shape == mix.shape and np.isfinite(out).all()
    # Each request alone gives what it gave inside the batch.
    alone = generator.generate([mixes[1]], [settings[1]])[0]
    np.testing.assert_allclose(alone, outs[1], atol=1e-4)


def test_a_held_pitch_changes_only_where_the_rhythm_code_attacks(bundle):
    """With ``sampler.hold_pitch`` (tiny ships it) the decoded latent's pitch changes only at parts
    where its rhythm code's onsets peak; the other channels are untouched."""
    from bassray.models.harmonic_phase import code_of_latent, pitch_from_code
    from bassray.models.rhythm_code import code_attacks
    generator = BassGenerator.from_bundle(bundle)
    assert generator.config.sampler.hold_pitch > 0
    ae = generator.target_ae
    latents = torch.randn(2, ae.latent_dim, 12, generator=torch.Generator().manual_seed(0))
    held = generator.smooth_pitch(latents)
    raw = held * generator._tgt_std + generator._tgt_mean
    pitch = torch.round(pitch_from_code(code_of_latent(raw, ae.pitch_parts)))
    attacks = code_attacks(raw[:, ae.layout.rhythm_slice], ae.rhythm_parts, generator.config.sampler.hold_pitch)
    changes = pitch[:, 1:] != pitch[:, :-1]
    assert not (changes & ~attacks[:, 1:]).any()
    before_pitch = ae.latent_dim - 3 * ae.pitch_parts
    torch.testing.assert_close(held[:, :before_pitch], latents[:, :before_pitch])


def test_generated_bass_sits_at_the_training_bass_to_mix_level(bundle):
    """match_level scales each request's bass to its mix's level plus the training median offset;
    without the statistic, or with match_level off, the model's own level stays."""
    generator = BassGenerator.from_bundle(bundle)
    rate = generator.sample_rate
    quiet, loud = (np.random.default_rng(3).normal(0, s, (2, 2 * rate)).astype(np.float32) for s in (0.01, 0.3))
    raw = generator.generate([loud], [GenerationSettings(steps=2, seed=4, match_level=False)])[0]
    assert generator.stats.target_minus_mix_db is None
    np.testing.assert_array_equal(generator.generate([loud], [GenerationSettings(steps=2, seed=4)])[0], raw)
    generator.stats.target_minus_mix_db = -6.0
    for mix in (quiet, loud):
        out = generator.generate([mix], [GenerationSettings(steps=2, seed=4)])[0]
        assert abs(rms_db(out) - (rms_db(mix) - 6.0)) < 0.05
    again = generator.generate([loud], [GenerationSettings(steps=2, seed=4, match_level=False)])[0]
    np.testing.assert_array_equal(again, raw)


def test_bundle_with_foreign_autoencoder_is_refused(bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    other = write_untrained_bundle(tmp_path / "other", load_config("tiny"), seed=1)
    shutil.rmtree(broken / "target_autoencoder")
    shutil.copytree(other / "target_autoencoder", broken / "target_autoencoder")
    with pytest.raises(BundleError, match="not the autoencoder"):
        BassGenerator.from_bundle(broken)
    with pytest.raises(BundleError, match="not a diffusion bundle"):
        BassGenerator.from_bundle(bundle / "mix_autoencoder")


def test_cli_generate_writes_input_rate_and_length(bundle, tmp_path):
    mix_path = tmp_path / "mix.wav"
    rate, n = 44100, 44100 * 2 + 123
    sf.write(mix_path, np.random.default_rng(0).normal(0, 0.1, (n, 1)), rate)
    out = tmp_path / "bass.wav"
    assert main(["generate", str(mix_path), "-o", str(out), "--bundle", str(bundle), "--steps", "2",
                 "--num-samples", "2", "--with-mix", str(tmp_path / "both.wav"), "--midi", str(tmp_path / "bass.mid")]) == 0
    for name in ("bass-0.wav", "bass-1.wav", "both-0.wav"):
        info = sf.info(tmp_path / name)
        assert info.samplerate == rate and info.frames == n and info.channels == 1
    a, _ = sf.read(tmp_path / "bass-0.wav")
    b, _ = sf.read(tmp_path / "bass-1.wav")
    assert not np.allclose(a, b)  # different seeds, different variations
    import pretty_midi
    for name in ("bass-0.mid", "bass-1.mid"):  # one bass track each (its notes: tests/test_transcribe.py)
        [track] = pretty_midi.PrettyMIDI(str(tmp_path / name)).instruments
        assert track.program == 33


def test_cli_errors_are_clear(bundle, tmp_path, caplog):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00" * 100)
    assert main(["generate", str(bad), "-o", str(tmp_path / "o.wav"), "--bundle", str(bundle)]) == 2
    assert "bad.mp3" in caplog.text
    assert main(["generate", str(bad), "-o", str(tmp_path / "o.wav"), "--bundle", str(tmp_path / "none")]) == 2
    assert "no bundle directory" in caplog.text


def test_cli_reconstruct_round_trips_a_file(bundle, tmp_path):
    path = tmp_path / "in.flac"
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, (16000 * 3 + 5, 2)), 16000)
    assert main(["reconstruct", str(bundle / "mix_autoencoder"), str(path), "-o", str(tmp_path / "out.wav")]) == 0
    info = sf.info(tmp_path / "out.wav")
    assert info.frames == 16000 * 3 + 5 and info.samplerate == 16000
    assert json.loads((bundle / "bundle.json").read_text())["kind"] == "diffusion"


def test_a_bundle_uri_is_fetched_once_into_the_cache(bundle, tmp_path, monkeypatch):
    from bassray.inference import BassGenerator
    from bassray.bundles.files import BundleError
    from bassray.bundles.store import local_bundle
    uri = bundle.resolve().as_uri()  # file://... goes through the same pyarrow path as s3://
    cache = tmp_path / "cache"
    first = local_bundle(uri, cache)
    assert first.parent == cache and (first / "bundle.json").exists()
    assert sorted(p.name for p in first.rglob("*")) == sorted(p.name for p in bundle.rglob("*"))
    marker = first / "bundle.json"
    mtime = marker.stat().st_mtime_ns
    assert local_bundle(uri + "/", cache) == first and marker.stat().st_mtime_ns == mtime  # no re-fetch
    assert [p.name for p in cache.iterdir()] == [first.name]  # no staging folder left behind
    monkeypatch.setenv("BASSRAY_BUNDLE_CACHE", str(cache))
    assert BassGenerator.from_bundle(uri).sample_rate == load_config("tiny").audio.sample_rate
    assert local_bundle(bundle) == bundle  # a local path is used in place
    with pytest.raises(BundleError, match="no bundle at"):
        local_bundle((tmp_path / "nowhere").as_uri(), cache)


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")),
                    reason="torch.compile on the CPU needs a C++ compiler (apt-get install g++)")
def test_compiled_unet_generates_what_the_eager_one_does(bundle):
    """torch.compile of the U-Net (BassGenerator.compile) changes speed, not the result."""
    mix = np.random.default_rng(3).normal(0, 0.1, size=(2, 16000)).astype(np.float32)
    settings = [GenerationSettings(steps=2, cfg_weight=2.0, seed=4, sampler="dpmpp-2m")]
    eager = BassGenerator.from_bundle(bundle).generate([mix], settings)[0]
    compiled = BassGenerator.from_bundle(bundle).compile().generate([mix], settings)[0]
    np.testing.assert_allclose(compiled, eager, atol=1e-4, rtol=1e-3)
