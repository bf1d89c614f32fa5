"""The Ray Serve app end to end over HTTP, with an untrained tiny bundle (the real models, random weights)."""
from __future__ import annotations

import io
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.slow
# serve/ is not an installed package: import it from the repository root (Ray workers get the
# driver's working directory on their path, so run pytest from the root).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

UPLOAD_RATE = 44100  # not the tiny model's 16 kHz: exercises resampling both ways
UPLOAD_SAMPLES = int(2.5 * UPLOAD_RATE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wav(audio: np.ndarray, rate: int) -> bytes:  # audio [C, T]
    buf = io.BytesIO()
    sf.write(buf, audio.T, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def mono_mix() -> bytes:
    t = np.arange(UPLOAD_SAMPLES) / UPLOAD_RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    return _wav(tone[None].astype(np.float32), UPLOAD_RATE)


@pytest.fixture(scope="module")
def server(tmp_path_factory, ray_session):
    from ray import serve

    from bassray.bench.untrained_bundle import write_untrained_bundle
    from bassray.config import load_config
    from serve.app import build_app

    bundle = write_untrained_bundle(tmp_path_factory.mktemp("bundle") / "diffusion", load_config("tiny"))
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"bundle": str(bundle), "device": "cpu", "max_batch_size": 8,
                         "batch_wait_timeout_s": 0.5, "max_upload_mb": 1, "max_seconds": 20,
                         "cpus_per_replica": 1, "torch_threads": 1}),
              name="bassray-test", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def _post(url: str, mix: bytes, timeout: float = 60, **fields):
    import requests
    return requests.post(f"{url}/generate", files={"mix": ("mix.wav", mix, "audio/wav")},
                         data={k: str(v) for k, v in fields.items()}, timeout=timeout)


def _audio(response) -> tuple[np.ndarray, int]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    audio, rate = sf.read(io.BytesIO(response.content), dtype="float32", always_2d=True)
    return audio.T, rate


def test_page_health_and_info(server):
    import requests
    page = requests.get(f"{server}/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<form" in page.text and "generate" in page.text
    assert requests.get(f"{server}/healthz", timeout=10).json() == {"status": "ok"}
    info = requests.get(f"{server}/info", timeout=10).json()
    assert info["model"]["sample_rate"] == 16000 and info["model"]["channels"] == 2
    assert info["limits"]["max_seconds"] == 20 and info["limits"]["steps"] == [1, 1000]
    assert info["defaults"]["steps"] >= 1


def test_generate_keeps_input_rate_length_and_channels(server, mono_mix):
    response = _post(server, mono_mix, steps=3, cfg=1.5, rescale=0.5, seed=7)
    bass, rate = _audio(response)
    assert rate == UPLOAD_RATE and bass.shape == (1, UPLOAD_SAMPLES)
    assert np.isfinite(bass).all() and np.abs(bass).max() > 0
    assert response.headers["x-bassray-seed"] == "7"
    both, _ = _audio(_post(server, mono_mix, steps=3, cfg=1.5, rescale=0.5, seed=7, with_mix="true"))
    mix, _ = sf.read(io.BytesIO(mono_mix), dtype="float32", always_2d=True)
    np.testing.assert_allclose(both, mix.T + bass, atol=1e-5)


def test_style_upload(server, mono_mix):
    import requests
    style = _wav(0.2 * np.random.default_rng(1).standard_normal((2, 24000)).astype(np.float32), 48000)
    response = requests.post(f"{server}/generate", data={"steps": "2", "seed": "1"}, timeout=60,
                             files={"mix": ("m.wav", mono_mix), "style": ("s.wav", style)})
    plain = _post(server, mono_mix, steps=2, seed=1)
    styled_audio, _ = _audio(response)
    plain_audio, _ = _audio(plain)
    assert styled_audio.shape == plain_audio.shape
    assert not np.array_equal(styled_audio, plain_audio)  # grounding changed the result


def test_same_seed_same_output_different_seed_different(server, mono_mix):
    first, _ = _audio(_post(server, mono_mix, steps=2, seed=11))
    again, _ = _audio(_post(server, mono_mix, steps=2, seed=11))
    other, _ = _audio(_post(server, mono_mix, steps=2, seed=12))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_bad_requests_get_clear_4xx(server, mono_mix):
    import requests
    missing = requests.post(f"{server}/generate", data={"steps": "2"}, timeout=10)
    assert missing.status_code in (400, 422) and "mix" in missing.json()["detail"]
    garbage = _post(server, b"this is not audio at all" * 100, steps=2)
    assert garbage.status_code == 400 and "cannot read the mix file" in garbage.json()["detail"]
    too_big = _post(server, b"\0" * 1_200_000, steps=2)  # limit is 1 MB in this fixture
    assert too_big.status_code == 413 and "MB" in too_big.json()["detail"]
    long_mix = _wav(np.zeros((1, 21 * 8000), np.float32), 8000)  # 21 s > 20 s, yet small
    too_long = _post(server, long_mix, steps=2)
    assert too_long.status_code == 413 and "20 s" in too_long.json()["detail"]
    for field, value in (("steps", 0), ("steps", 1001), ("steps", "two"), ("cfg", 21), ("cfg", "nan"),
                         ("rescale", 1.5), ("seed", -1), ("with_mix", "maybe")):
        bad = _post(server, mono_mix, **{field: value})
        assert bad.status_code == 422, (field, value, bad.text)
        assert field in bad.json()["detail"]


def test_concurrent_requests_share_batches(server, mono_mix):
    import requests
    before = requests.get(f"{server}/stats", timeout=10).json()
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda seed: _post(server, mono_mix, steps=3, seed=seed, timeout=120),
                                  range(100, 106)))
    outputs = [_audio(r)[0] for r in responses]
    assert all(o.shape == (1, UPLOAD_SAMPLES) for o in outputs)
    assert [r.headers["x-bassray-seed"] for r in responses] == [str(s) for s in range(100, 106)]
    assert not np.allclose(outputs[0], outputs[1])  # per-request seeds honoured inside a batch
    after = requests.get(f"{server}/stats", timeout=10).json()
    assert after["requests"] - before["requests"] == 6
    new_batches = {int(k): v - before["batch_sizes"].get(k, 0) for k, v in after["batch_sizes"].items()}
    assert max(size for size, count in new_batches.items() if count > 0) > 1, after
    assert max(int(k) for k in after["ddim_batch_sizes"]) > 1, after
