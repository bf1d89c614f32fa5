import numpy as np
import pytest
import soundfile as sf

from bassray.audio import (AudioReadError, conform, convert_channels, encode_flac, load_audio, read_audio,
                           resample, rms_db, write_audio)


def sine(freq=220.0, rate=16000, seconds=1.0, channels=2):
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * freq * t)] * channels).astype(np.float32)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
def test_formats_read_back_as_float32_channels_first(tmp_path, suffix):
    audio = sine()
    path = write_audio(tmp_path / f"a{suffix}", audio, 16000)
    back, rate = read_audio(path)
    assert rate == 16000 and back.dtype == np.float32 and back.shape[0] == 2
    assert abs(back.shape[1] - audio.shape[1]) < 2000  # lossy codecs pad a little
    if suffix in (".wav", ".flac"):
        np.testing.assert_allclose(back, audio, atol=1e-4)


def test_resample_keeps_duration_and_pitch():
    audio = sine(440.0, 44100, 1.0, 1)
    out = resample(audio, 44100, 16000)
    assert out.shape == (1, 16000)
    spectrum = np.abs(np.fft.rfft(out[0]))
    assert abs(np.argmax(spectrum) - 440) <= 1


def test_channel_conversion():
    stereo = np.stack([np.ones(10), -np.ones(10)]).astype(np.float32)
    assert convert_channels(stereo, 1).shape == (1, 10)
    assert np.allclose(convert_channels(stereo, 1), 0.0)
    mono = np.ones((1, 10), np.float32)
    assert np.array_equal(convert_channels(mono, 2), np.ones((2, 10)))
    assert conform(sine(rate=8000, channels=1), 8000, 16000, 2).shape == (2, 16000)


def test_load_audio_conforms(tmp_path):
    sf.write(tmp_path / "m.wav", sine(rate=22050, channels=1).T, 22050)
    assert load_audio(tmp_path / "m.wav", 16000, 2).shape == (2, 16000)


def test_unreadable_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.flac"
    bad.write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioReadError, match="broken.flac"):
        read_audio(bad)
    with pytest.raises(AudioReadError, match="member-x"):
        read_audio(encode_flac(sine(), 16000)[:40], name="member-x")


def test_rms_db():
    assert rms_db(np.zeros((1, 100))) < -90
    assert -10 < rms_db(sine()) < 0
