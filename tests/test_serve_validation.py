"""Request checks of the serving app, without Ray: parameters, sizes, audio decoding, format round trip."""
from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf


from bassray.serving.validation import (Limits, RequestError, check_declared_size, decode_upload,
                                        parse_params, to_input_format, wav_bytes)

DEFAULTS = {"steps": 16, "cfg_weight": 1.0, "rescale_phi": 0.0}
LIMITS = Limits(max_upload_bytes=1_000_000, max_seconds=2.0)


def _wav(audio: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio.T, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def test_params_defaults_and_values():
    p = parse_params({}, DEFAULTS)
    assert (p.steps, p.cfg_weight, p.rescale_phi, p.with_mix) == (16, 1.0, 0.0, False)
    assert 0 <= p.seed < 2**31  # random when absent
    p = parse_params({"steps": "4", "cfg": "2.5", "rescale": "0.7", "seed": "", "with_mix": "on"}, DEFAULTS)
    assert (p.steps, p.cfg_weight, p.rescale_phi, p.with_mix) == (4, 2.5, 0.7, True)
    assert p.sampler == "ddim" and parse_params({"sampler": "dpmpp-2m"}, DEFAULTS).sampler == "dpmpp-2m"
    assert parse_params({}, {**DEFAULTS, "method": "dpmpp-2m"}).sampler == "dpmpp-2m"  # the bundle's default
    # Each sampler's own default step count; an explicit count wins.
    with_dpm = {**DEFAULTS, "dpmpp_steps": 6}
    assert parse_params({"sampler": "dpmpp-2m"}, with_dpm).steps == 6
    assert parse_params({"sampler": "ddim"}, with_dpm).steps == 16
    assert parse_params({"sampler": "dpmpp-2m", "steps": "9"}, with_dpm).steps == 9
    # The harmony snap width: the bundle's default (0 where it has none), or the request's.
    assert parse_params({}, DEFAULTS).harmony == 0.0
    assert parse_params({}, {**DEFAULTS, "harmony_snap": 0.5}).harmony == 0.5
    assert parse_params({"harmony": "0"}, {**DEFAULTS, "harmony_snap": 0.5}).harmony == 0.0
    # The starting noise's scale likewise: 1 where the bundle names none.
    assert parse_params({}, DEFAULTS).temperature == 1.0
    assert parse_params({}, {**DEFAULTS, "temperature": 0.5}).temperature == 0.5
    assert parse_params({"temperature": "0.8"}, {**DEFAULTS, "temperature": 0.5}).temperature == 0.8


@pytest.mark.parametrize("field,value", [("steps", "0"), ("steps", "1001"), ("steps", "2.5"), ("cfg", "-1"),
                                         ("cfg", "inf"), ("rescale", "nan"), ("rescale", "2"),
                                         ("seed", "-3"), ("with_mix", "perhaps"), ("sampler", "euler"),
                                         ("harmony", "5"), ("harmony", "-0.5"), ("temperature", "-0.1"),
                                         ("temperature", "2.5")])
def test_out_of_range_params_are_422_naming_the_field(field, value):
    with pytest.raises(RequestError) as err:
        parse_params({field: value}, DEFAULTS)
    assert err.value.status == 422 and field in err.value.reason


def test_sizes_and_durations():
    check_declared_size(None, LIMITS)
    check_declared_size("1000000", LIMITS)
    with pytest.raises(RequestError) as err:
        check_declared_size("5000000", LIMITS)
    assert err.value.status == 413
    with pytest.raises(RequestError) as err:
        decode_upload(_wav(np.zeros((1, 8000 * 3), np.float32), 8000), "mix", LIMITS)
    assert err.value.status == 413 and "3.0 s" in err.value.reason
    for bad in (b"", b"RIFF not really a wav file"):
        with pytest.raises(RequestError) as err:
            decode_upload(bad, "mix", LIMITS)
        assert err.value.status == 400 and "mix" in err.value.reason


def test_decode_and_return_to_input_format():
    rng = np.random.default_rng(0)
    mix = (0.1 * rng.standard_normal((1, 22050))).astype(np.float32)  # mono 44.1 kHz, 0.5 s
    audio, rate = decode_upload(_wav(mix, 44100), "mix", LIMITS)
    np.testing.assert_array_equal(audio, mix)
    model_out = rng.standard_normal((2, 8200)).astype(np.float32)  # stereo 16 kHz, slightly long
    back = to_input_format(model_out, 16000, rate, 1, mix.shape[1])
    assert back.shape == mix.shape and back.dtype == np.float32
    decoded, decoded_rate = sf.read(io.BytesIO(wav_bytes(back, rate)), dtype="float32", always_2d=True)
    assert decoded_rate == 44100
    np.testing.assert_array_equal(decoded.T, back)  # float WAV is lossless


def test_build_app_accepts_a_bundle_uri_and_refuses_an_empty_one(tmp_path):
    from bassray.bench.untrained_bundle import write_untrained_bundle
    from bassray.config import load_config
    from bassray.serving.app import build_app
    bundle = write_untrained_bundle(tmp_path / "bundle", load_config("tiny"))
    assert build_app({"bundle": bundle.as_uri()}) is not None  # replicas fetch it; nothing loads here
    with pytest.raises(FileNotFoundError, match="holds no bundle"):
        build_app({"bundle": (tmp_path / "empty").as_uri()})
    with pytest.raises(FileNotFoundError, match="not a bundle folder"):
        build_app({"bundle": str(tmp_path / "empty")})


def _pcm_wav(frames: int, rate: int = 8000, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((frames, channels), np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _with_data_size(wav: bytes, size: int) -> bytes:
    out = bytearray(wav)
    at = out.find(b"data")
    out[at + 4:at + 8] = size.to_bytes(4, "little")
    return bytes(out)


@pytest.mark.parametrize("name,data,status,words", [pytest.param(*case, id=case[0]) for case in [
    ("rate of 1 Hz", _pcm_wav(4, rate=1), 422, "sample rate"),
    ("8 channels at 192 kHz", _pcm_wav(192000, rate=192000, channels=8), 422, "channels"),
    ("no frames", _pcm_wav(0), 422, "at least"),
    ("a header claiming 3 hours", _with_data_size(_pcm_wav(8000), 8000 * 2 * 3600 * 3), 413, "claims"),
    ("cut to 300 bytes", _pcm_wav(8000)[:300], 400, "truncated"),
    ("NaN samples", _wav(np.full((1, 8000), np.nan, np.float32), 8000), 400, "NaN"),
]])
def test_files_refused_by_their_header_or_content(name, data, status, words):
    with pytest.raises(RequestError) as err:
        decode_upload(data, "mix", LIMITS)
    assert err.value.status == status and words in err.value.reason, (name, err.value.reason)


def test_a_streamed_wav_without_a_declared_size_is_read():
    audio, rate = decode_upload(_with_data_size(_pcm_wav(8000), 0xFFFFFFFF), "mix", LIMITS)
    assert rate == 8000 and audio.shape == (1, 8000)


def test_build_app_that_requires_keys_refuses_to_start_without_them(tmp_path, monkeypatch):
    from bassray.bench.untrained_bundle import write_untrained_bundle
    from bassray.config import load_config
    from bassray.serving.access import KeyConfigError
    from bassray.serving.app import build_app
    monkeypatch.delenv("BASSRAY_API_KEYS_FILE", raising=False)
    bundle = str(write_untrained_bundle(tmp_path / "bundle", load_config("tiny")))
    with pytest.raises(ValueError, match="needs API keys"):
        build_app({"bundle": bundle, "require_api_key": True})
    assert build_app({"bundle": bundle, "require_api_key": True, "api_keys": ["ops:" + "k" * 24]}) is not None
    with pytest.raises(KeyConfigError, match="cannot read"):
        build_app({"bundle": bundle, "api_keys_file": str(tmp_path / "absent")})
