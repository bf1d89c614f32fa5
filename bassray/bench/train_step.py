"""Diffusion training step: time, model FLOP utilisation beside the measured peak, and where the
time goes (torch.profiler's top operators), without Ray or DeepSpeed in the way.

    python jobs/benchmark.py train-step --config paper --batch 8 --frames 256 --threads 2
    python jobs/benchmark.py train-step --config paper --batch 128 --frames 256 --device cuda --dtype bf16

Random latents and weights: speed does not depend on them. The step is the real one (v-loss with
conditioning dropout and noise, backward, AdamW); ``--fused`` uses torch's fused AdamW (CUDA).
"""
from __future__ import annotations

import argparse
import json
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=None, help="latent frames per crop (default: config)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after 2 warm-up steps")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--fused", action="store_true", help="fused AdamW (CUDA only)")
    parser.add_argument("--top", type=int, default=12, help="profiler rows to print (0: no profile)")


def run(args: argparse.Namespace) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from bassray.bench.generate import matmul_peak_gflops, unet_flops
    from bassray.config import load_config
    from bassray.diffusion.schedule import v_loss
    from bassray.models.unet1d import UNet1d
    from bassray.precision import resolve_precision, torch_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config)
    precision = resolve_precision(args.dtype, args.device)
    dtype = torch_dtype(precision)
    frames = args.frames or config.diffusion_training.crop_frames
    dx, dy = config.mix_autoencoder.latent_dim, config.bass_autoencoder.latent_dim
    torch.manual_seed(0)
    model = UNet1d(config.unet, dy, dx).to(args.device, dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=args.fused or None)
    target = torch.randn(args.batch, dy, frames, device=args.device, dtype=dtype)
    cond = torch.randn(args.batch, dx, frames, device=args.device, dtype=dtype)

    def step() -> None:
        loss, _ = v_loss(model, target, cond, cond_dropout=0.15, cond_noise=0.5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - started) / args.steps
    flops = 3 * unet_flops(model, args.batch, frames, args.device, dtype)  # forward + backward
    peak = matmul_peak_gflops(dtype, args.device) * 1e9
    print(json.dumps({"config": args.config, "precision": precision, "batch": args.batch, "frames": frames,
                      "device": args.device, "step_s": round(seconds, 4), "crops_per_s": round(args.batch / seconds, 1),
                      "model_gflop_per_step": round(flops / 1e9, 1),
                      "achieved_gflops_per_s": round(flops / seconds / 1e9, 1),
                      "peak_gflops_per_s": round(peak / 1e9, 1), "mfu": round(flops / seconds / peak, 3)}))
    if args.top > 0:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
        with profile(activities=activities) as prof:
            step()
        key = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=args.top))
