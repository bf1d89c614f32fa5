"""Cluster-wide serving stats: every ingress and generator replica reports to one ``StatsBoard``
replica, which ``GET /stats`` reads; the same figures go to Ray Serve's metrics (Prometheus, on each
node's metrics port, under ``ray_bassray_*``).

``ServingStats`` is the plain-Python tally, testable without Ray.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter, defaultdict, deque
from typing import Any

import numpy as np
from ray import serve

log = logging.getLogger(__name__)
LATENCY_WINDOW = 4096  # the percentiles are over the most recent requests


def percentiles(values) -> dict[str, float | None]:
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        return {"p50": None, "p95": None, "p99": None, "count": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 4), "p95": round(float(p95), 4), "p99": round(float(p99), 4),
            "count": int(values.size)}


def process_memory_mb() -> dict[str, float]:
    """This process's resident memory now and at its peak (MB)."""
    import resource

    import psutil
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {"rss_mb": round(psutil.Process(os.getpid()).memory_info().rss / 1e6, 1),
            "peak_rss_mb": round(peak_kb * 1024 / 1e6, 1)}


class ServingStats:
    """Tallies of requests (ingress side) and batches (generator side), per replica."""

    def __init__(self) -> None:
        self.status_codes: Counter[str] = Counter()
        self.by_key: dict[str, Counter[str]] = defaultdict(Counter)
        self.request_latency: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.generators: dict[str, dict[str, Any]] = {}
        self.ingresses: dict[str, dict[str, Any]] = {}

    def record_request(self, replica: str, status: int, key: str, seconds: float,
                       memory: dict[str, float] | None = None) -> None:
        self.status_codes[str(status)] += 1
        self.by_key[key][str(status)] += 1
        if status == 200:
            self.request_latency.append(seconds)
        entry = self.ingresses.setdefault(replica, {"replica": replica, "requests": 0})
        entry["requests"] += 1
        entry.update(memory or {})

    def record_batch(self, replica: str, batch_size: int, ddim_batch_sizes: list[int], seconds: float,
                     queue_length: int, memory: dict[str, float] | None = None) -> None:
        entry = self.generators.setdefault(replica, {
            "replica": replica, "requests": 0, "batch_sizes": Counter(), "ddim_batch_sizes": Counter(),
            "latency": deque(maxlen=LATENCY_WINDOW), "queue_length": 0})
        entry["requests"] += batch_size
        entry["batch_sizes"][batch_size] += 1
        entry["ddim_batch_sizes"].update(ddim_batch_sizes)
        entry["latency"].append(seconds)
        entry["queue_length"] = queue_length
        entry.update(memory or {})

    def summary(self) -> dict[str, Any]:
        def histogram(counter: Counter) -> dict[str, int]:
            return {str(k): v for k, v in sorted(counter.items())}

        batch_sizes, ddim_sizes, batch_latency = Counter(), Counter(), []
        generators = []
        for g in self.generators.values():
            batch_sizes.update(g["batch_sizes"])
            ddim_sizes.update(g["ddim_batch_sizes"])
            batch_latency.extend(g["latency"])
            generators.append({**{k: v for k, v in g.items() if k not in ("batch_sizes", "ddim_batch_sizes", "latency")},
                               "batch_sizes": histogram(g["batch_sizes"]),
                               "ddim_batch_sizes": histogram(g["ddim_batch_sizes"]),
                               "batch_latency_s": percentiles(g["latency"])})
        return {
            "requests": sum(g["requests"] for g in self.generators.values()),  # generated, all replicas
            "status_codes": dict(sorted(self.status_codes.items())),
            "keys": {k: {"requests": sum(c.values()), "status_codes": dict(sorted(c.items()))}
                     for k, c in sorted(self.by_key.items())},
            "queue_length": sum(g["queue_length"] for g in self.generators.values()),
            "batch_sizes": histogram(batch_sizes),
            "ddim_batch_sizes": histogram(ddim_sizes),
            "latency_s": percentiles(self.request_latency),  # HTTP request to response, 200s only
            "batch_latency_s": percentiles(batch_latency),   # one model call (a whole batch)
            "replicas": {"generator": generators, "ingress": list(self.ingresses.values())},
        }


@serve.deployment(name="StatsBoard", num_replicas=1, max_ongoing_requests=1000,
                  ray_actor_options={"num_cpus": 0})
class StatsBoard:
    """The one place every replica reports to (one replica: the tallies are cheap)."""

    def __init__(self) -> None:
        self.stats = ServingStats()

    def record_request(self, *args, **kwargs) -> None:
        self.stats.record_request(*args, **kwargs)

    def record_batch(self, *args, **kwargs) -> None:
        self.stats.record_batch(*args, **kwargs)

    def summary(self) -> dict[str, Any]:
        return self.stats.summary()


class ServeMetrics:
    """The same figures as Ray Serve metrics (exported by each node's metrics agent)."""

    def __init__(self, role: str):
        from ray.serve import metrics
        self.role = role
        if role == "ingress":
            self.requests = metrics.Counter("bassray_requests", description="HTTP requests by status and key",
                                            tag_keys=("status", "key"))
            self.latency = metrics.Histogram("bassray_request_seconds", description="request latency (200s)",
                                             boundaries=[0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300])
        else:
            self.batch_size = metrics.Histogram("bassray_batch_size", description="requests per model call",
                                                boundaries=[1, 2, 4, 8, 16, 32, 64, 128])
            self.batch_latency = metrics.Histogram("bassray_batch_seconds", description="one model call",
                                                   boundaries=[0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300])
            self.queue_length = metrics.Gauge("bassray_queue_length",
                                              description="requests waiting in a generator replica")

    def request(self, status: int, key: str, seconds: float) -> None:
        self.requests.inc(tags={"status": str(status), "key": key})
        if status == 200:
            self.latency.observe(seconds)

    def batch(self, size: int, seconds: float, queue_length: int) -> None:
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)
        self.queue_length.set(queue_length)


async def report_stats(call) -> None:
    """Await a stats report briefly: stats never hold up or fail a request."""
    try:
        await asyncio.wait_for(call, timeout=2.0)
    except Exception as exc:  # noqa: BLE001 - the board is best-effort
        log.warning("stats report failed: %s", exc)
