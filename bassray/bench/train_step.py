"""One training step of either stage: time, model FLOP utilisation beside the peak measured in the
same run, and where the time goes (torch.profiler's top operators), without Ray or DeepSpeed.

    python jobs/benchmark.py train-step --config paper-pitch --batch 8 --frames 256 --threads 2
    python jobs/benchmark.py train-step --stage autoencoder --config paper-pitch --batch 4 --threads 2
    python jobs/benchmark.py train-step --config paper-pitch --batch 128 --device cuda --dtype auto --compile reduce-overhead

Random data and weights: speed does not depend on them. The steps are the real ones: training's own
diffusion objective (bassray/train/diffusion_step.py: learnt-mix dropout, the v-loss with the config's
conditioning dropout, noise and code-channel weights), or the autoencoder's generator step (reconstruction, MSSD and
adversarial terms) plus its critics' step; backward; fused AdamW as training uses it (``--unfused``:
torch's default). FLOPs are counted by torch over one executed step (forward and backward).
"""
from __future__ import annotations

import argparse
import json
import time

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", default="diffusion", choices=["diffusion", "autoencoder"])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--stem", default="bass", help="autoencoder stage: which autoencoder")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=None,
                        help="diffusion: latent frames per crop (default: config)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after 2 warm-up steps")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--unfused", action="store_true", help="torch's default AdamW, not the fused one")
    parser.add_argument("--compile", default=None, choices=COMPILE_MODES,
                        help="torch.compile the models first (compile time reported apart)")
    parser.add_argument("--top", type=int, default=12, help="profiler rows to print (0: no profile)")


def _diffusion(config, args, dtype):
    """(modules, step function, FLOPs of one step) for the diffusion U-Net."""
    import torch

    from bassray.models.unet1d import unet_for
    from bassray.train.diffusion_step import DiffusionObjective, self_condition_rate
    from bassray.train.step_flops import diffusion_step_flops
    frames = args.frames or config.diffusion_training.crop_frames
    model = unet_for(config).to(args.device, dtype)
    dx, dy = model.cond_dim, model.target_dim
    target = torch.randn(args.batch, dy, frames, device=args.device, dtype=dtype)
    cond = torch.randn(args.batch, dx, frames, device=args.device, dtype=dtype)
    flops = diffusion_step_flops(model, target, cond, self_condition_rate(config))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=not args.unfused)
    objective = DiffusionObjective(config, args.device)

    def step() -> None:
        loss, _ = objective(model, target, cond)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return [model], step, flops, {"frames": frames}


def _autoencoder(config, args, dtype):
    """(modules, step function, FLOPs of one step) for an autoencoder with its two critics."""
    import torch

    from bassray.models.autoencoder import Autoencoder
    from bassray.models.critics import Critics
    from bassray.train.autoencoder_losses import critic_loss, generator_loss
    from bassray.train.step_flops import autoencoder_step_flops
    train_cfg = config.autoencoder_training
    model = Autoencoder(config.autoencoder_for(args.stem), config.audio).to(args.device, dtype)
    critics = Critics(config.critic, config.audio).to(args.device, dtype)
    samples = int(round(config.data.crop_seconds * config.audio.sample_rate))
    samples -= samples % model.hop_samples
    wav = 0.1 * torch.randn(args.batch, config.audio.channels, samples, device=args.device, dtype=dtype)
    flops = autoencoder_step_flops(model, critics, wav, train_cfg)
    kwargs = dict(lr=1e-4, betas=train_cfg.betas, fused=not args.unfused)
    ae_opt = torch.optim.AdamW(model.parameters(), **kwargs)
    critic_opt = torch.optim.AdamW(critics.parameters(), **kwargs)

    def step() -> None:
        critics.requires_grad_(False)
        loss, _, fake = generator_loss(model, critics, wav, train_cfg, adversarial=True)
        ae_opt.zero_grad(set_to_none=True)
        loss.backward()
        ae_opt.step()
        critics.requires_grad_(True)
        c_loss, _ = critic_loss(critics, wav, fake.detach())
        critic_opt.zero_grad(set_to_none=True)
        c_loss.backward()
        critic_opt.step()
    return [model, critics], step, flops, {"crop_samples": samples}


def run(args: argparse.Namespace) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from bassray.precision import matmul_peak_gflops
    from bassray.config import load_config
    from bassray.precision import resolve_precision, torch_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config)
    precision = resolve_precision(args.dtype, args.device)
    dtype = torch_dtype(precision)
    torch.manual_seed(0)
    build = _diffusion if args.stage == "diffusion" else _autoencoder
    modules, train_step, flops, shape = build(config, args, dtype)
    cuda = args.device.startswith("cuda")

    def step() -> None:
        train_step()
        if cuda:
            torch.cuda.synchronize()

    compile_s = 0.0
    if args.compile:
        for module in modules:
            module.compile(mode=args.compile)  # in place: state_dict keys stay as they are
        started = time.perf_counter()
        step()  # compiles forward and backward of this shape
        compile_s = time.perf_counter() - started
    for _ in range(2):
        step()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - started) / args.steps
    peak = matmul_peak_gflops(dtype, args.device) * 1e9  # measured now, beside the step it bounds
    print(json.dumps({"stage": args.stage, "config": args.config, "precision": precision, "batch": args.batch,
                      **shape, "device": args.device, "compile": args.compile, "compile_s": round(compile_s, 1),
                      "fused_adamw": not args.unfused, "step_s": round(seconds, 4),
                      "crops_per_s": round(args.batch / seconds, 1),
                      "model_gflop_per_step": round(flops / 1e9, 1),
                      "achieved_gflops_per_s": round(flops / seconds / 1e9, 1),
                      "peak_gflops_per_s": round(peak / 1e9, 1), "mfu": round(flops / seconds / peak, 3)}))
    if args.top > 0:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            step()
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=args.top))
