"""Counters of the audio pipeline (segments decoded, crops kept, silent crops dropped, corrupt
members, unreadable shards), kept in one small Ray actor so that every read task, on any node, adds
to the same place and the driver (or a training loop) can read them during and after iteration."""
from __future__ import annotations

import logging
from typing import Mapping

import ray

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0)
class _Counter:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, counts: Mapping[str, int]) -> None:
        for key, value in counts.items():
            self.counts[key] = self.counts.get(key, 0) + int(value)

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


class PipelineStats:
    """A handle to the counters; picklable, so the pipeline's map functions carry it to workers.

    ``name`` makes the actor findable by ``PipelineStats(name)`` from any process of the same job
    (a second handle to the same counters); without a name only this handle and its copies see it.
    The actor lives as long as the process that created it.
    """

    def __init__(self, name: str | None = None):
        self.name = name
        options = {"name": name, "get_if_exists": True} if name else {}
        self._actor = _Counter.options(**options).remote()

    def add(self, counts: Mapping[str, int]) -> None:
        """Add to the counters and wait for the actor to record them, so a snapshot taken after the
        last batch arrives is complete (one round trip per decoded segment, small beside decoding)."""
        counts = {k: int(v) for k, v in counts.items() if v}
        if not counts:
            return
        try:
            ray.get(self._actor.add.remote(counts))
        except ray.exceptions.RayError as exc:  # statistics must never stop training
            log.warning("pipeline statistics lost %s: %s", counts, exc)

    def snapshot(self) -> dict[str, int]:
        """Counts so far, e.g. {"segments": 12, "crops": 90, "corrupt_members": 1, ...}."""
        return ray.get(self._actor.snapshot.remote())

    def log_summary(self, label: str = "audio pipeline") -> dict[str, int]:
        counts = self.snapshot()
        log.info("%s: %s", label, " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        return counts
