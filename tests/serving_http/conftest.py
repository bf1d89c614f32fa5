"""Two apps of the real Ray Serve stack on 127.0.0.1 (an untrained tiny bundle: the real models,
random weights), started once for this package and shut down after it:

- ``open`` at ``/``: no keys (so it answers this machine only), small queues (4 in flight + 8 queued
  at the ingress) so a burst overloads it, a 2 s stall timeout;
- ``keyed`` at ``/keyed``: API keys, a rate limit of 5 a minute per key, a 3 s generation timeout.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf
from ray_cluster import free_port


UPLOAD_RATE = 44100  # not the tiny model's 16 kHz: exercises resampling both ways
UPLOAD_SAMPLES = int(2.5 * UPLOAD_RATE)
KEYS = {"alice": "alice-" + "a" * 20, "bob": "bob-" + "b" * 20, "carol": "carol-" + "c" * 20}
MAX_UPLOAD_MB, MAX_SECONDS, STALL_S, GENERATION_TIMEOUT_S, RATE_PER_MINUTE = 1, 20, 2, 3, 5


@dataclass(frozen=True)
class Apps:
    url: str        # the open app
    keyed_url: str  # the keyed app
    port: int


def wav(audio: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:  # audio [C, T]
    buf = io.BytesIO()
    sf.write(buf, audio.T, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def post(url: str, mix: bytes, timeout: float = 60, headers: dict | None = None, **fields):
    import requests
    return requests.post(f"{url}/generate", files={"mix": ("mix.wav", mix, "audio/wav")}, headers=headers,
                         data={k: str(v) for k, v in fields.items()}, timeout=timeout)


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="package")
def mono_mix() -> bytes:
    t = np.arange(UPLOAD_SAMPLES) / UPLOAD_RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    return wav(tone[None].astype(np.float32), UPLOAD_RATE)


@pytest.fixture(scope="package")
def apps(tmp_path_factory, ray_session):
    from ray import serve

    from bassray.bench.untrained_bundle import write_untrained_bundle
    from bassray.config import load_config
    from bassray.serving.app import build_app

    bundle = write_untrained_bundle(tmp_path_factory.mktemp("bundle") / "diffusion", load_config("tiny"))
    port = free_port()
    common = {"bundle": str(bundle), "device": "cpu", "max_upload_mb": MAX_UPLOAD_MB, "max_seconds": MAX_SECONDS,
              "cpus_per_replica": 0.5, "torch_threads": 1, "stall_timeout_s": STALL_S}
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app({**common, "max_batch_size": 4, "batch_wait_timeout_s": 0.5,
                             "ingress_max_ongoing_requests": 4, "max_queued_requests": 8}),
                  name="open", route_prefix="/")
        serve.run(build_app({**common, "api_keys": [f"{k}:{v}" for k, v in KEYS.items()],
                             "rate_limit_per_minute": RATE_PER_MINUTE, "generation_timeout_s": GENERATION_TIMEOUT_S}),
                  name="keyed", route_prefix="/keyed")
        yield Apps(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/keyed", port)
    finally:
        serve.shutdown()
