"""The Ray Serve app end to end over HTTP: formats, style, seeds, batching, /info and /stats."""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

from .conftest import UPLOAD_RATE, UPLOAD_SAMPLES
from .conftest import post as _post
from .conftest import wav as _wav

pytestmark = pytest.mark.slow


def _audio(response) -> tuple[np.ndarray, int]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    audio, rate = sf.read(io.BytesIO(response.content), dtype="float32", always_2d=True)
    return audio.T, rate


def test_page_health_and_info(apps):
    import requests
    page = requests.get(f"{apps.url}/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<form" in page.text and "generate" in page.text
    assert requests.get(f"{apps.url}/healthz", timeout=10).json() == {"status": "ok"}
    info = requests.get(f"{apps.url}/info", timeout=10).json()
    assert info["model"]["sample_rate"] == 16000 and info["model"]["channels"] == 2
    assert info["limits"]["max_seconds"] == 20 and info["limits"]["steps"] == [1, 1000]
    assert info["defaults"]["steps"] >= 1


def test_generate_keeps_input_rate_length_and_channels(apps, mono_mix):
    response = _post(apps.url, mono_mix, steps=3, cfg=1.5, rescale=0.5, seed=7)
    bass, rate = _audio(response)
    assert rate == UPLOAD_RATE and bass.shape == (1, UPLOAD_SAMPLES)
    assert np.isfinite(bass).all() and np.abs(bass).max() > 0
    assert response.headers["x-bassray-seed"] == "7"
    both, _ = _audio(_post(apps.url, mono_mix, steps=3, cfg=1.5, rescale=0.5, seed=7, with_mix="true"))
    mix, _ = sf.read(io.BytesIO(mono_mix), dtype="float32", always_2d=True)
    np.testing.assert_allclose(both, mix.T + bass, atol=1e-5)


def test_style_upload(apps, mono_mix):
    import requests
    style = _wav(0.2 * np.random.default_rng(1).standard_normal((2, 24000)).astype(np.float32), 48000)
    response = requests.post(f"{apps.url}/generate", data={"steps": "2", "seed": "1"}, timeout=60,
                             files={"mix": ("m.wav", mono_mix), "style": ("s.wav", style)})
    plain = _post(apps.url, mono_mix, steps=2, seed=1)
    styled_audio, _ = _audio(response)
    plain_audio, _ = _audio(plain)
    assert styled_audio.shape == plain_audio.shape
    assert not np.array_equal(styled_audio, plain_audio)  # grounding changed the result


def test_same_seed_same_output_different_seed_different(apps, mono_mix):
    first, _ = _audio(_post(apps.url, mono_mix, steps=2, seed=11))
    again, _ = _audio(_post(apps.url, mono_mix, steps=2, seed=11))
    other, _ = _audio(_post(apps.url, mono_mix, steps=2, seed=12))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_sampler_is_a_per_request_setting(apps, mono_mix):
    # 5 steps: with 3 or fewer, every DPM-Solver++(2M) step is first order, i.e. DDIM's
    ddim = _post(apps.url, mono_mix, steps=5, seed=5)
    dpm = _post(apps.url, mono_mix, steps=5, seed=5, sampler="dpmpp-2m")
    assert ddim.headers["x-bassray-sampler"] == "ddim" and dpm.headers["x-bassray-sampler"] == "dpmpp-2m"
    assert not np.allclose(_audio(ddim)[0], _audio(dpm)[0])  # same seed and steps, another solver
    bad = _post(apps.url, mono_mix, steps=3, sampler="euler")
    assert bad.status_code == 422 and "sampler" in bad.json()["detail"]


def test_harmony_snap_is_a_per_request_setting(apps, mono_mix):
    plain = _post(apps.url, mono_mix, steps=2, seed=5, harmony=0)
    snapped = _post(apps.url, mono_mix, steps=2, seed=5, harmony=2)
    assert plain.status_code == snapped.status_code == 200
    assert (plain.headers["x-bassray-harmony"], snapped.headers["x-bassray-harmony"]) == ("0", "2")
    assert _audio(plain)[0].shape == _audio(snapped)[0].shape
    bad = _post(apps.url, mono_mix, steps=2, harmony=9)
    assert bad.status_code == 422 and "harmony" in bad.json()["detail"]


def test_concurrent_requests_share_batches(apps, mono_mix):
    # Six at once fit the open app's 8 queue places: Serve's router counts a request as queued until a
    # replica has accepted it (ray/serve/_private/router.py says so), so with 4 places six simultaneous
    # arrivals could be shed before the first four were assigned (CI saw it).
    import requests
    before = requests.get(f"{apps.url}/stats", timeout=10).json()
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda seed: _post(apps.url, mono_mix, steps=3, seed=seed, timeout=120),
                                  range(100, 106)))
    outputs = [_audio(r)[0] for r in responses]
    assert all(o.shape == (1, UPLOAD_SAMPLES) for o in outputs)
    assert [r.headers["x-bassray-seed"] for r in responses] == [str(s) for s in range(100, 106)]
    assert not np.allclose(outputs[0], outputs[1])  # per-request seeds honoured inside a batch
    after = requests.get(f"{apps.url}/stats", timeout=10).json()
    assert after["requests"] - before["requests"] == 6
    new_batches = {int(k): v - before["batch_sizes"].get(k, 0) for k, v in after["batch_sizes"].items()}
    assert max(size for size, count in new_batches.items() if count > 0) > 1, after
    assert max(int(k) for k in after["ddim_batch_sizes"]) > 1, after
    # The figures cover every replica, and the ingress counted each answer by status and caller.
    assert after["status_codes"]["200"] - before["status_codes"].get("200", 0) >= 6
    assert after["keys"]["anonymous"]["requests"] >= 6
    assert after["latency_s"]["p50"] > 0 and after["latency_s"]["p99"] >= after["latency_s"]["p50"]
    generator = after["replicas"]["generator"]
    assert len(generator) == 1 and generator[0]["rss_mb"] > 0 and generator[0]["batch_latency_s"]["count"] >= 1



def test_stats_are_exported_as_ray_serve_metrics(apps, mono_mix):
    """The Prometheus endpoint of the node's metrics agent carries the app's own series."""
    import time

    import ray
    import requests
    assert _post(apps.url, mono_mix, steps=1).status_code == 200
    port = ray.nodes()[0]["MetricsExportPort"]
    wanted = ("ray_bassray_requests", "ray_bassray_batch_size", "ray_bassray_queue_length")
    deadline, text = time.monotonic() + 90, ""
    while time.monotonic() < deadline:  # the agent exports every few seconds
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if all(name in text for name in wanted):
            break
        time.sleep(3)
    missing = [name for name in wanted if name not in text]
    assert not missing, (missing, [line for line in text.splitlines() if "bassray" in line][:10])
    assert 'status="200"' in "\n".join(line for line in text.splitlines() if line.startswith("ray_bassray_requests"))


def test_midi_true_returns_the_wav_and_its_notes_zipped(apps, mono_mix):
    import zipfile

    import pretty_midi
    response = _post(apps.url, mono_mix, steps=2, seed=5, midi="true")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip", response.text
    assert response.headers["content-disposition"] == 'attachment; filename="mix-bass.zip"'
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["mix-bass.mid", "mix-bass.wav"]
        audio, rate = sf.read(io.BytesIO(archive.read("mix-bass.wav")), always_2d=True)
        [track] = pretty_midi.PrettyMIDI(io.BytesIO(archive.read("mix-bass.mid"))).instruments
    assert rate == UPLOAD_RATE and audio.shape == (UPLOAD_SAMPLES, 1) and track.program == 33
    plain, _ = _audio(_post(apps.url, mono_mix, steps=2, seed=5))
    np.testing.assert_array_equal(audio.T.astype(np.float32), plain)  # the same bass, zipped

