"""Serving throughput: N concurrent POST /generate requests against the Ray Serve app.

    python jobs/benchmark.py serve --concurrency 8 --seconds 5 --steps 8           # untrained tiny bundle
    python jobs/benchmark.py serve --bundle ~/bassray/bundles/diffusion-paper --gpus-per-replica 1

Starts a local Ray (or joins --address), deploys ``serve.app:build_app`` on a free port, sends one
warm-up request, then ``rounds`` bursts of ``concurrency`` requests (plus, for comparison, the same
number one after another) and prints requests/s, latency percentiles and the observed batch sizes.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _test_mix(seconds: float, rate: int = 44100) -> bytes:
    import soundfile as sf
    t = np.arange(int(seconds * rate)) / rate
    mix = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, np.stack([mix, mix], axis=1).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _timed_post(url: str, mix: bytes, steps: int, seed: int) -> float:
    import requests
    start = time.perf_counter()
    response = requests.post(f"{url}/generate", files={"mix": ("mix.wav", mix)},
                             data={"steps": str(steps), "seed": str(seed)}, timeout=600)
    if response.status_code != 200:
        raise RuntimeError(f"request failed with {response.status_code}: {response.text[:300]}")
    return time.perf_counter() - start


def _summary(latencies: list[float], wall_s: float) -> dict[str, float]:
    lat = np.asarray(latencies)
    return {"requests": len(lat), "wall_s": wall_s, "requests_per_s": len(lat) / wall_s,
            "latency_p50_s": float(np.percentile(lat, 50)), "latency_p90_s": float(np.percentile(lat, 90)),
            "latency_max_s": float(lat.max())}


def benchmark_serve(bundle: str | None = None, config_name: str = "tiny", concurrency: int = 8,
                    seconds: float = 5.0, steps: int = 8, rounds: int = 3, max_batch_size: int = 8,
                    batch_wait_timeout_s: float = 0.1, torch_threads: int | None = None,
                    gpus_per_replica: float = 0.0, address: str | None = None, num_cpus: int = 2) -> dict[str, Any]:
    import ray
    import requests
    from ray import serve

    from bassray.bench.untrained_bundle import write_untrained_bundle
    from bassray.config import load_config
    from serve.app import build_app

    with tempfile.TemporaryDirectory(prefix="bassray-serve-bench-") as tmp:
        if bundle is None:
            bundle = str(write_untrained_bundle(f"{tmp}/diffusion", load_config(config_name)))
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                 log_to_driver=False)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(build_app({"bundle": bundle, "max_batch_size": max_batch_size,
                                 "batch_wait_timeout_s": batch_wait_timeout_s, "torch_threads": torch_threads,
                                 "gpus_per_replica": gpus_per_replica}), name="bassray-bench")
            mix = _test_mix(seconds)
            _timed_post(url, mix, steps, seed=0)  # warm-up: first-call allocations, thread pools
            sequential_start = time.perf_counter()
            sequential = [_timed_post(url, mix, steps, seed=i) for i in range(concurrency)]
            sequential_wall = time.perf_counter() - sequential_start
            before = requests.get(f"{url}/stats", timeout=60).json()
            latencies, concurrent_wall = [], 0.0
            with ThreadPoolExecutor(concurrency) as pool:
                for r in range(rounds):
                    start = time.perf_counter()
                    latencies += list(pool.map(lambda i: _timed_post(url, mix, steps, seed=1000 * r + i),
                                               range(concurrency)))
                    concurrent_wall += time.perf_counter() - start
            after = requests.get(f"{url}/stats", timeout=60).json()
            info = requests.get(f"{url}/info", timeout=60).json()["model"]
        finally:
            serve.shutdown()
            ray.shutdown()
    batches = {k: v - before["batch_sizes"].get(k, 0) for k, v in after["batch_sizes"].items()}
    return {"bundle": bundle, "config": info["config"], "device": info["device"],
            "unet_parameters": info["unet_parameters"], "audio_seconds": seconds, "steps": steps,
            "concurrency": concurrency, "rounds": rounds, "max_batch_size": max_batch_size,
            "batch_wait_timeout_s": batch_wait_timeout_s,
            "concurrent": _summary(latencies, concurrent_wall),
            "sequential": _summary(sequential, sequential_wall),
            "batch_sizes": {k: v for k, v in batches.items() if v > 0}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", default=None, help="diffusion bundle (default: an untrained one of --config)")
    parser.add_argument("--config", default="tiny", help="preset for the untrained bundle (default: tiny)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight per burst")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each request's mix")
    parser.add_argument("--steps", type=int, default=8, help="DDIM steps per request")
    parser.add_argument("--rounds", type=int, default=3, help="bursts to time")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.1)
    parser.add_argument("--torch-threads", type=int, default=None, help="torch threads in the generator")
    parser.add_argument("--gpus-per-replica", type=float, default=0.0)
    parser.add_argument("--address", default=None, help="join a running Ray cluster instead of starting one")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")


def run(args: argparse.Namespace) -> None:
    result = benchmark_serve(args.bundle, args.config, args.concurrency, args.seconds, args.steps, args.rounds,
                             args.max_batch_size, args.batch_wait_timeout_s, args.torch_threads,
                             args.gpus_per_replica, args.address, args.num_cpus)
    c, s = result["concurrent"], result["sequential"]
    print(json.dumps(result, indent=2))
    print(f"{result['concurrency']} concurrent x {result['audio_seconds']:g} s at {result['steps']} steps "
          f"({result['config']}, {result['device']}): {c['requests_per_s']:.2f} req/s, latency p50 "
          f"{c['latency_p50_s']:.2f} s, p90 {c['latency_p90_s']:.2f} s; one at a time: "
          f"{s['requests_per_s']:.2f} req/s, {s['latency_p50_s']:.2f} s; batches {result['batch_sizes']}")
