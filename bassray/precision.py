"""Which float type a machine runs natively. bf16 halves memory traffic where the hardware has it
(CUDA compute capability 8.0 and up; x86 CPUs with AVX512-BF16 or AMX), and where it does not, it is
emulated: about ten times slower than fp32 on an AVX2-only CPU. So "auto" means bf16 only where it
is native, fp32 elsewhere; an explicit "bf16" is obeyed with a warning where it would be emulated.
Plain torch; no Ray.
"""
from __future__ import annotations

import logging
import time
from functools import lru_cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bf16 in hardware."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        return any(flag in cpu_flags() for flag in CPU_BF16_FLAGS)
    return False


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """"auto" -> "bf16" where native on ``device``, else "fp32"; "fp32"/"bf16" are kept."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    native = native_bf16(device)
    if precision == "auto":
        return "bf16" if native else "fp32"
    if precision == "bf16" and not native:
        log.warning("bf16 on %s is emulated here (no %s%s): expect it to run about 10x slower than fp32",
                    device, " / ".join(CPU_BF16_FLAGS), ", no compute capability 8.0" if
                    torch.device(device).type == "cuda" else "")
    return precision


def torch_dtype(precision: str) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]


def describe(precision: str, device: str | torch.device = "cpu") -> str:
    """One line for logs and /info: the precision and why."""
    chosen = resolve_precision(precision, device)
    reason = "native bf16" if native_bf16(device) else "no native bf16"
    return f"{chosen} ({precision}: {reason} on {torch.device(device).type})"


# The measured peak a figure is compared with: measured in the same run (never a spec sheet).
def _best_seconds(fn, device: str, repeats: int) -> float:
    import torch
    fn()  # warm-up: first calls pick kernels and allocate
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak_gflops(dtype, device: str = "cpu", repeats: int = 5) -> float:
    """The machine's practical peak for ``dtype``: best-of GFLOP/s over square matmuls (512-2048)
    and a U-Net-like conv1d (256 channels, kernel 3). Several shapes, because one shape can miss the
    fast path for a dtype (a lone 2048 bf16 matmul once read 0.2 GFLOP/s on an AVX2 CPU, under the
    U-Net's own rate), and the peak must bound what the model achieves with the same ops. On a GPU
    the squares go up to 8192: an H200 reached 320-440 TFLOP/s in bf16 at 2048 and about 790 at 8192."""
    import torch
    best = 0.0
    sizes = (512, 1024, 2048) + ((4096, 8192) if str(device).startswith("cuda") else ())
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        best = max(best, 2 * n**3 / _best_seconds(lambda: a @ b, device, repeats) / 1e9)
    x = torch.randn(8, 256, 1024, device=device, dtype=dtype)
    w = torch.randn(256, 256, 3, device=device, dtype=dtype)
    conv_flops = 2 * 8 * 256 * 256 * 3 * 1024
    with torch.no_grad():
        best = max(best, conv_flops / _best_seconds(lambda: torch.nn.functional.conv1d(x, w, padding=1),
                                                    device, repeats) / 1e9)
    return best
