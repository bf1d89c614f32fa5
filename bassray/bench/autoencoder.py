"""Autoencoder throughput: encode + decode real-time factor on the current device."""
from __future__ import annotations

import logging
import time
from typing import Any

import torch

from bassray.config import load_config
from bassray.models.autoencoder import Autoencoder, count_parameters

log = logging.getLogger(__name__)


@torch.no_grad()
def benchmark_autoencoder(config_name: str = "tiny", seconds: float = 10.0, stem: str = "mix",
                          threads: int | None = 2, repeats: int = 3,
                          device: str | torch.device = "cpu") -> dict[str, Any]:
    """Time ``decode(encode(wav))`` on ``seconds`` of noise with randomly initialised weights
    (speed does not depend on the weights). Real-time factor = audio seconds per compute second."""
    if threads is not None:
        torch.set_num_threads(threads)
    config = load_config(config_name)
    model = Autoencoder(config.autoencoder_for(stem), config.audio).to(device).eval()
    samples = int(round(seconds * config.audio.sample_rate))
    wav = 0.1 * torch.randn(1, config.audio.channels, samples, device=device)  # [1, C, T]
    model.decode(model.encode(wav[..., : min(samples, model.hop_samples * 4)]))  # warm-up
    encode_s, decode_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        z = model.encode(wav)
        _sync(device)
        t1 = time.perf_counter()
        model.decode(z, length=samples)
        _sync(device)
        encode_s.append(t1 - t0)
        decode_s.append(time.perf_counter() - t1)
    enc, dec = min(encode_s), min(decode_s)  # best of N: least disturbed by other processes
    result = {"config": config_name, "stem": stem, "device": str(device), "threads": torch.get_num_threads(),
              "parameters": count_parameters(model), "audio_seconds": seconds,
              "sample_rate": config.audio.sample_rate, "latent_frames": int(z.shape[-1]),
              "encode_s": enc, "decode_s": dec, "encode_rtf": seconds / enc, "decode_rtf": seconds / dec,
              "realtime_factor": seconds / (enc + dec)}
    log.info("autoencoder benchmark %s", result)
    return result


def _sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
