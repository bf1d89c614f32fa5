"""Generation speed: real-time factor of the whole path (encode mix, DDIM or DPM-Solver++ with CFG, decode bass),
the U-Net's achieved FLOP/s beside this machine's measured matmul peak, and peak memory.

    python jobs/benchmark.py generate --config tiny --seconds 30 --steps 64 --cfg 2.0
    python jobs/benchmark.py generate --config paper-pitch --seconds 30 --dtypes fp32 bf16 --memory-minutes 3

Weights are random (speed does not depend on them) unless --bundle is given.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bassray.sampler_names import SAMPLERS

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "auto": None}  # auto: bf16 where native (bassray.precision)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--bundle", default=None, help="a diffusion bundle instead of random weights")
    parser.add_argument("--seconds", type=float, default=30.0, help="mix length to generate for")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--cfg", type=float, default=2.0, help="w != 1 doubles the U-Net batch")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES),
                        help="auto = what `bassray generate` would choose on this machine")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--sampler", default="ddim", choices=SAMPLERS)
    parser.add_argument("--autoencoders", default="same", choices=["same", "fp32"],
                        help="the autoencoders' dtype: the U-Net's (same) or fp32")
    parser.add_argument("--compile", default=None, choices=["default", "reduce-overhead"],
                        help="torch.compile the U-Net first (its compile time is reported apart)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1],
                        help="requests generated together (one batched sampling loop), e.g. 1 8 32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-minutes", type=float, default=0.0,
                        help="also measure peak memory for a mix this long (fresh process)")


def build_generator(config_name: str, bundle: str | None, device: str, dtype, autoencoder_dtype=None):
    import torch

    from bassray.config import load_config
    from bassray.data.latents import LatentStats
    from bassray.inference import BassGenerator
    from bassray.models.autoencoder import Autoencoder
    from bassray.models.unet1d import unet_for
    if bundle:
        return BassGenerator.from_bundle(bundle, device=device, dtype=dtype, autoencoder_dtype=autoencoder_dtype)
    torch.manual_seed(0)
    config = load_config(config_name)
    dx, dy = config.mix_autoencoder.latent_dim, config.bass_autoencoder.latent_dim
    stats = LatentStats([0.0] * dx, [1.0] * dx, [0.0] * dy, [1.0] * dy)
    return BassGenerator(unet_for(config), Autoencoder(config.mix_autoencoder, config.audio),
                         Autoencoder(config.bass_autoencoder, config.audio), stats, config, device, dtype,
                         autoencoder_dtype)


def unet_flops(unet, batch: int, length: int, device: str, dtype) -> int:
    """FLOPs of one U-Net call (counted by torch, matmuls and convolutions)."""
    import torch

    from bassray.train.step_flops import counted_flops
    z = torch.zeros(batch, unet.target_dim, length, device=device, dtype=dtype)
    c = torch.zeros(batch, unet.cond_dim, length, device=device, dtype=dtype)
    with torch.no_grad():
        return counted_flops(lambda: unet(z, torch.full((batch,), 0.5, device=device), c))


def measure(config_name: str, bundle: str | None, seconds: float, steps: int, cfg: float, dtype_name: str,
            device: str, sampler: str = "ddim", batch: int = 1, compile_mode: str | None = None,
            autoencoders: str = "same") -> dict:
    """One batch of ``batch`` mixes of ``seconds``: timings, real-time factor (audio made per wall
    second, all requests together) and the U-Net's FLOP/s beside the peak for the dtype used."""
    import numpy as np
    import torch

    from bassray.diffusion.sampler import pad_to_multiple
    from bassray.precision import native_bf16, resolve_precision
    requested = dtype_name
    dtype_name = resolve_precision(dtype_name, device) if dtype_name == "auto" else dtype_name
    dtype = getattr(torch, DTYPES[dtype_name])
    gen = build_generator(config_name, bundle, device, dtype, None if autoencoders == "same" else torch.float32)
    rng = np.random.default_rng(0)
    mixes = [rng.normal(0, 0.1, size=(gen.channels, int(seconds * gen.sample_rate))).astype(np.float32)
             for _ in range(batch)]
    timings = {}
    start = time.perf_counter()
    cond = torch.stack([gen.encode_mix(m) for m in mixes])
    timings["encode_s"] = time.perf_counter() - start
    compile_s = 0.0
    if compile_mode:
        gen.compile(compile_mode)
        start = time.perf_counter()  # two steps of the same shapes: compiles what the run will call
        gen.sample_latents(cond, steps=2, cfg_weight=[cfg] * batch, rescale_phi=[0.7] * batch,
                           seeds=list(range(batch)), sampler=sampler)
        compile_s = time.perf_counter() - start
    start = time.perf_counter()
    latent = gen.sample_latents(cond, steps=steps, cfg_weight=[cfg] * batch, rescale_phi=[0.7] * batch,
                                seeds=list(range(batch)), sampler=sampler)
    timings["sample_s"] = time.perf_counter() - start
    start = time.perf_counter()
    gen.decode_target(latent, length=mixes[0].shape[1])
    timings["decode_s"] = time.perf_counter() - start
    total = sum(timings.values())
    length = pad_to_multiple(cond, gen.unet.total_downsampling)[0].shape[-1]
    flops = unet_flops(gen.unet, (2 if cfg != 1 else 1) * batch, length, device, dtype) * steps
    from bassray.precision import matmul_peak_gflops
    peak = matmul_peak_gflops(dtype, device)
    return {"config": config_name, "dtype": dtype_name, "requested": requested,
            "native_bf16": native_bf16(device), "autoencoders": str(gen.autoencoder_dtype).removeprefix("torch."),
            "sampler": sampler, "batch": batch,
            "compile": compile_mode, "compile_s": round(compile_s, 1),
            "seconds_of_audio": seconds, "steps": steps,
            "cfg": cfg, **{k: round(v, 3) for k, v in timings.items()},
            "realtime_factor": round(batch * seconds / total, 2),
            "unet_gflops_per_s": round(flops / timings["sample_s"] / 1e9, 1),
            "matmul_peak_gflops_per_s": round(peak, 1),
            "unet_fraction_of_peak": round(flops / timings["sample_s"] / 1e9 / peak, 3)}


def peak_memory(config_name: str, bundle: str | None, minutes: float, steps: int, cfg: float) -> dict:
    """Peak resident memory of a fresh process generating for a ``minutes``-long mix (fp32)."""
    code = (
        "import json, resource, sys\n"
        "from bassray.bench.generate import build_generator, measure\n"
        "import torch\n"
        f"g = build_generator({config_name!r}, {bundle!r}, 'cpu', torch.float32)\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "del g\n"
        f"r = measure({config_name!r}, {bundle!r}, {minutes * 60.0}, {steps}, {cfg}, 'fp32', 'cpu')\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'models_loaded_mib': base / 1024, 'peak_mib': peak / 1024, "
        "'realtime_factor': r['realtime_factor']}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"config": config_name, "minutes": minutes, **{k: round(v, 1) for k, v in result.items()}}


def run(args: argparse.Namespace) -> None:
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# torch threads: {torch.get_num_threads()}, device: {args.device}")
    for dtype_name in args.dtypes:
        for batch in args.batch:
            print(json.dumps(measure(args.config, args.bundle, args.seconds, args.steps, args.cfg,
                                     dtype_name, args.device, args.sampler, batch, args.compile,
                                     args.autoencoders)))
    if args.memory_minutes > 0:
        print(json.dumps(peak_memory(args.config, args.bundle, args.memory_minutes, args.steps, args.cfg)))
