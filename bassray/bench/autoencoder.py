"""Autoencoder speed: encode + decode real-time factor (audio seconds per compute second).

    python jobs/benchmark.py autoencoder --config paper-pitch --seconds 10 --threads 2
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

log = logging.getLogger(__name__)


def benchmark_autoencoder(config_name: str = "tiny", seconds: float = 10.0, stem: str = "mix",
                          threads: int | None = 2, repeats: int = 3, device: str = "cpu") -> dict[str, Any]:
    """Time ``decode(encode(wav))`` on ``seconds`` of noise with randomly initialised weights
    (speed does not depend on the weights). Reports the best of ``repeats``: the least disturbed
    by other processes. ``threads=None`` leaves torch's thread count as it is."""
    import torch  # heavy imports inside: jobs/benchmark.py imports every benchmark module to list it

    from bassray.config import load_config
    from bassray.models.autoencoder import Autoencoder, count_parameters

    if threads is not None:
        torch.set_num_threads(threads)
    config = load_config(config_name)
    model = Autoencoder(config.autoencoder_for(stem), config.audio).to(device).eval()
    samples = int(round(seconds * config.audio.sample_rate))
    wav = 0.1 * torch.randn(1, config.audio.channels, samples, device=device)  # [1, C, T]

    def sync() -> None:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    encode_s, decode_s = [], []
    with torch.no_grad():
        model.decode(model.encode(wav[..., : min(samples, 4 * model.hop_samples)]))  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            z = model.encode(wav)  # [1, D, L]
            sync()
            t1 = time.perf_counter()
            model.decode(z, length=samples)
            sync()
            encode_s.append(t1 - t0)
            decode_s.append(time.perf_counter() - t1)
    enc, dec = min(encode_s), min(decode_s)
    result = {"config": config_name, "stem": stem, "device": str(device), "threads": torch.get_num_threads(),
              "parameters": count_parameters(model), "audio_seconds": seconds,
              "sample_rate": config.audio.sample_rate, "latent_frames": int(z.shape[-1]),
              "encode_s": enc, "decode_s": dec, "encode_rtf": seconds / enc, "decode_rtf": seconds / dec,
              "realtime_factor": seconds / (enc + dec)}
    log.info("autoencoder benchmark %s", result)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny", help="preset name or YAML path (default: tiny)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length to encode and decode")
    parser.add_argument("--stem", default="mix", help="which autoencoder: 'mix' or the target stem")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")


def run(args: argparse.Namespace) -> None:
    result = benchmark_autoencoder(args.config, args.seconds, stem=args.stem, threads=args.threads or None,
                                   repeats=args.repeats, device=args.device)
    print(json.dumps(result, indent=2))
