"""Serving throughput: N concurrent POST /generate requests against the Ray Serve app.

    python jobs/benchmark.py serve                        # untrained tiny bundle, concurrency 1,4,8,16
    python jobs/benchmark.py serve --bundle ~/bassray/bundles/diffusion-paper --gpus-per-replica 1

Starts a local Ray (or joins --address), deploys ``bassray.serving.app:build_app`` twice on a free port (batching
on and off), and for each concurrency keeps that many requests in flight until ``--requests`` are
answered; prints requests/s and latency p50/p95/p99 as a table, and the observed batch sizes.
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
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return {"requests": len(lat), "wall_s": round(wall_s, 2), "requests_per_s": round(len(lat) / wall_s, 2),
            "latency_p50_s": round(float(p50), 3), "latency_p95_s": round(float(p95), 3),
            "latency_p99_s": round(float(p99), 3)}


def _load(url: str, mix: bytes, steps: int, concurrency: int, requests_per_cell: int) -> dict[str, float]:
    """``requests_per_cell`` requests with ``concurrency`` in flight at all times (closed loop)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(lambda i: _timed_post(url, mix, steps, seed=i), range(requests_per_cell)))
    return _summary(latencies, time.perf_counter() - start)


def benchmark_serve(bundle: str | None = None, config_name: str = "tiny", concurrencies=(1, 4, 8, 16),
                    seconds: float = 5.0, steps: int = 8, requests_per_cell: int = 48, max_batch_size: int = 16,
                    batch_wait_timeout_s: float = 0.05, torch_threads: int | None = None,
                    gpus_per_replica: float = 0.0, address: str | None = None, num_cpus: int = 2) -> dict[str, Any]:
    """Requests/s and latency percentiles at each concurrency, with batching on (up to
    ``max_batch_size`` requests share a DDIM loop) and off (``max_batch_size=1``): two apps, one
    generator replica each, measured one after the other."""
    import ray
    import requests
    from ray import serve

    from bassray.bench.untrained_bundle import write_untrained_bundle
    from bassray.config import load_config
    from bassray.serving.app import build_app

    table, batches = [], {}
    with tempfile.TemporaryDirectory(prefix="bassray-serve-bench-") as tmp:
        if bundle is None:
            bundle = str(write_untrained_bundle(f"{tmp}/diffusion", load_config(config_name)))
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                 log_to_driver=False)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        mix = _test_mix(seconds)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            for batching, size in (("on", max_batch_size), ("off", 1)):
                serve.run(build_app({"bundle": bundle, "max_batch_size": size, "cpus_per_replica": 0.75,
                                     "batch_wait_timeout_s": batch_wait_timeout_s, "torch_threads": torch_threads,
                                     "gpus_per_replica": gpus_per_replica, "max_queued_requests": -1,
                                     "ingress_max_ongoing_requests": 4 * max(concurrencies)}),
                          name=f"batching-{batching}", route_prefix=f"/{batching}")
            for batching in ("on", "off"):
                url = f"{base}/{batching}"
                _timed_post(url, mix, steps, seed=0)  # warm-up: first-call allocations, thread pools
                for concurrency in concurrencies:
                    row = _load(url, mix, steps, concurrency, max(requests_per_cell, 2 * concurrency))
                    table.append({"batching": batching, "concurrency": concurrency, **row})
                    log.info("batching %s, concurrency %d: %s", batching, concurrency, row)
                batches[batching] = requests.get(f"{url}/stats", timeout=60).json()["batch_sizes"]
            info = requests.get(f"{base}/on/info", timeout=60).json()["model"]
        finally:
            serve.shutdown()
            ray.shutdown()
    return {"bundle": bundle, "config": info["config"], "device": info["device"], "dtype": info["dtype"],
            "unet_parameters": info["unet_parameters"], "audio_seconds": seconds, "steps": steps,
            "max_batch_size": max_batch_size, "batch_wait_timeout_s": batch_wait_timeout_s,
            "table": table, "batch_sizes": batches}


def markdown_table(result: dict[str, Any]) -> str:
    lines = ["| batching | concurrency | requests/s | p50 s | p95 s | p99 s |", "|---|---:|---:|---:|---:|---:|"]
    for row in result["table"]:
        lines.append(f"| {row['batching']} | {row['concurrency']} | {row['requests_per_s']:.2f} | "
                     f"{row['latency_p50_s']:.2f} | {row['latency_p95_s']:.2f} | {row['latency_p99_s']:.2f} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", default=None, help="diffusion bundle (default: an untrained one of --config)")
    parser.add_argument("--config", default="tiny", help="preset for the untrained bundle (default: tiny)")
    parser.add_argument("--concurrency", default="1,4,8,16", help="comma-separated concurrencies to measure")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each request's mix")
    parser.add_argument("--steps", type=int, default=8, help="DDIM steps per request")
    parser.add_argument("--requests", type=int, default=48, help="requests per table cell")
    parser.add_argument("--max-batch-size", type=int, default=16, help="with batching on")
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.05)
    parser.add_argument("--torch-threads", type=int, default=None, help="torch threads in the generator")
    parser.add_argument("--gpus-per-replica", type=float, default=0.0)
    parser.add_argument("--address", default=None, help="join a running Ray cluster instead of starting one")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")


def run(args: argparse.Namespace) -> None:
    result = benchmark_serve(args.bundle, args.config, tuple(int(c) for c in args.concurrency.split(",")),
                             args.seconds, args.steps, args.requests, args.max_batch_size,
                             args.batch_wait_timeout_s, args.torch_threads, args.gpus_per_replica,
                             args.address, args.num_cpus)
    print(json.dumps(result, indent=2))
    print(f"{result['config']} ({result['unet_parameters'] / 1e6:.1f}M U-Net, {result['device']}, {result['dtype']}): "
          f"{result['audio_seconds']:g} s mixes at {result['steps']} steps")
    print(markdown_table(result))
