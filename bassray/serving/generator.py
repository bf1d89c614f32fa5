"""The generator deployment: one ``BassGenerator`` per replica; concurrent calls to ``generate``
meet in ``_generate_batch`` (``@serve.batch``), whose batch goes to ``BassGenerator.generate`` (one
DDIM loop per group of equal latent length and step count, each request's own settings honoured).
"""

import asyncio
import logging
import time
import uuid
from collections import Counter
from dataclasses import asdict
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from bassray.serving.registry import is_model_uri, resolve_model_uri
from bassray.serving.stats import ServeMetrics, process_memory_mb, report_stats

log = logging.getLogger(__name__)


class GenerationAbandoned(RuntimeError):
    """Raised inside the sampler to stop a batch nobody waits for any more."""


@serve.deployment(name="BassGenerator", max_ongoing_requests=16, max_constructor_retry_count=3,
                  ray_actor_options={"num_cpus": 1})
class BassGeneratorDeployment:
    """Holds one ``BassGenerator``; concurrent calls to ``generate`` are batched."""

    def __init__(self, bundle: str, device: str = "auto", precision: str = "auto", torch_threads: int | None = None,
                 max_batch_size: int = 8, batch_wait_timeout_s: float = 0.1,
                 registry: dict[str, Any] | None = None, tracking_uri: str | None = None,
                 bundle_cache: str | None = None, stats: DeploymentHandle | None = None):
        import torch

        from bassray.inference import BassGenerator
        from bassray.precision import describe, resolve_precision, torch_dtype
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.precision = describe(precision, device)  # shown in /info: what was chosen, and why
        log.info("generator precision: %s", self.precision)
        if torch_threads:
            torch.set_num_threads(torch_threads)
        if is_model_uri(bundle):  # a pinned registry version: fetched once into this node's cache
            bundle = resolve_model_uri(bundle, tracking_uri, bundle_cache).bundle
        self.bundle, self.device = bundle, device
        self.registry = {k: v for k, v in (registry or {}).items() if v}  # model, version, run id
        self.generator = BassGenerator.from_bundle(bundle, device=device,
                                                   dtype=torch_dtype(resolve_precision(precision, device)))
        self._generate_batch.set_max_batch_size(max_batch_size)
        self._generate_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.max_batch_size, self.batch_wait_timeout_s = max_batch_size, batch_wait_timeout_s
        self.board, self.metrics = stats, ServeMetrics("generator")
        self.pending = 0  # requests in this replica: queued for a batch or in the running one
        self.cancelled: set[str] = set()  # tokens of requests whose callers gave up
        log.info("loaded %s on %s (torch threads %d)", bundle, device, torch.get_num_threads())

    async def generate(self, mix: np.ndarray, settings: Any) -> np.ndarray:
        """One request; concurrent ones are batched by ``_generate_batch``."""
        self.pending += 1
        token = uuid.uuid4().hex
        try:
            return await self._generate_batch(mix, settings, token)
        except asyncio.CancelledError:  # the caller gave up (timeout, disconnect): tell the batch
            if len(self.cancelled) > 10_000:  # tokens of requests cancelled before they were batched
                self.cancelled.clear()
            self.cancelled.add(token)
            raise
        finally:
            self.pending -= 1

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.1)
    async def _generate_batch(self, mixes: list[np.ndarray], settings: list[Any], tokens: list[str]
                              ) -> list[np.ndarray]:
        """``mixes``: ``[C, T]`` at the model's rate; ``settings``: ``GenerationSettings`` (one each)."""
        started = time.perf_counter()
        hop = self.generator.hop
        # Same grouping key as BassGenerator.generate: latent length, step count and sampler.
        method = self.generator.config.sampler.method
        groups = Counter((-(-m.shape[-1] // hop), s.steps, s.sampler or method) for m, s in zip(mixes, settings))
        # The model call blocks for seconds: run it off the event loop so the replica keeps
        # accepting (and queueing the next batch of) requests meanwhile.
        wanted = set(tokens)

        def stop_when_nobody_waits(step: int, total: int) -> None:
            # A batch whose callers all gave up stops at the next step instead of running on
            # for minutes and holding up the requests queued behind it.
            if wanted <= self.cancelled:
                raise GenerationAbandoned(f"every caller of this batch gave up (at step {step}/{total})")

        try:
            out = await asyncio.to_thread(self.generator.generate, mixes, settings, stop_when_nobody_waits)
        finally:
            self.cancelled -= wanted
        seconds, queued = time.perf_counter() - started, max(0, self.pending - len(mixes))
        self.metrics.batch(len(mixes), seconds, queued)
        if self.board is not None:
            await report_stats(self.board.record_batch.remote(
                serve.get_replica_context().replica_id.unique_id, len(mixes), list(groups.values()), seconds,
                queued, process_memory_mb()))
        return out

    def info(self) -> dict[str, Any]:
        g = self.generator
        return {"bundle": self.bundle, "config": g.config.name, "device": self.device, "dtype": str(g.dtype),
                "precision": self.precision,
                "sample_rate": g.sample_rate, "channels": g.channels, "hop_samples": g.hop,
                "latent_frame_rate": g.sample_rate / g.hop, "sampler_defaults": asdict(g.config.sampler),
                "unet_parameters": sum(p.numel() for p in g.unet.parameters()),
                "max_batch_size": self.max_batch_size,
                "batch_wait_timeout_s": self.batch_wait_timeout_s, "registry": self.registry}
