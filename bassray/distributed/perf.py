"""Training speed inside the Ray Train loops: torch.compile of the modules, the time the loop waits
for its next batch, and model FLOP utilisation against the matmul/conv peak measured in the worker.
Logged per window as ``crops_per_s``, ``perf/data_wait_fraction``, ``perf/model_tflops_per_s`` and
``perf/mfu``."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from bassray.config import COMPILE_MODES

log = logging.getLogger(__name__)


def compile_for_training(modules: list[torch.nn.Module], mode: str) -> None:
    """``torch.compile`` each module in place (``nn.Module.compile``: its state_dict keys, and so
    checkpoints and bundles, stay as they are). "reduce-overhead" adds CUDA graphs on a GPU: the
    step has fixed shapes (batches drop their remainder), so each is captured once."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"distributed.compile must be one of {', '.join(COMPILE_MODES)}, not {mode!r}")
    if mode == "none":
        return
    for module in modules:
        module.compile(mode=mode)
    log.info("torch.compile (%s) of %s: the first steps compile (tens of seconds)", mode,
             ", ".join(type(m).__name__ for m in modules))


def measured_peak_flops(dtype: torch.dtype, device: torch.device) -> float:
    """This worker's practical matmul/conv peak for ``dtype`` in FLOP/s, or 0 if it cannot be measured."""
    from bassray.precision import matmul_peak_gflops
    try:
        return matmul_peak_gflops(dtype, str(device), repeats=2) * 1e9
    except Exception as exc:  # a measurement: never lose the run for it
        log.warning("no perf/mfu: could not measure the peak (%s)", exc)
        return 0.0


def counted_step_flops(count: Callable[[], int]) -> float:
    """``count()`` (FLOPs of one step, see bassray.train.step_flops), or 0 if counting fails."""
    try:
        return float(count())
    except Exception as exc:  # a measurement: never lose the run for it
        log.warning("no perf/mfu: could not count the step's FLOPs (%s)", exc)
        return 0.0


class StepWindow:
    """Speed over one logging window: steps, crops, wall time and the part of it spent waiting for
    data. ``step_flops`` (all workers' FLOPs of one global step) and ``peak_flops`` (all workers'
    summed peak) give MFU; 0 leaves it out."""

    def __init__(self, global_batch: int, step_flops: float = 0.0, peak_flops: float = 0.0):
        self.global_batch, self.step_flops, self.peak_flops = global_batch, step_flops, peak_flops
        self.reset()

    def reset(self) -> None:
        self.start, self.steps, self.wait_s, self.excluded_s = time.perf_counter(), 0, 0.0, 0.0

    @contextmanager
    def excluded(self):
        """Time spent inside (evaluation, checkpoints) is not training time: left out of the window."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.excluded_s += time.perf_counter() - started

    def next_batch(self, batches: Iterator[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        started = time.perf_counter()
        batch = next(batches)
        self.wait_s += time.perf_counter() - started
        return batch

    def step_done(self) -> None:
        self.steps += 1

    def metrics(self) -> dict[str, float]:
        """The window's figures; then starts the next window."""
        elapsed = max(time.perf_counter() - self.start - self.excluded_s, 1e-9)
        out = {"crops_per_s": self.steps * self.global_batch / elapsed,
               "perf/data_wait_fraction": self.wait_s / elapsed}
        if self.step_flops > 0 and self.peak_flops > 0:
            achieved = self.step_flops * self.steps / elapsed
            out.update({"perf/model_tflops_per_s": achieved / 1e12, "perf/mfu": achieved / self.peak_flops})
        self.reset()
        return out
