"""The diffusion stage's learning-rate schedule: DeepSpeed's WarmupCosineLR as configured."""
from __future__ import annotations

import pytest
import torch

from bassray.config import load_config
from bassray.distributed.deepspeed_config import COSINE_END_RATIO, deepspeed_config, lr_scheduler_config


def _rates(schedule: str, steps: int, warmup: int, peak: float = 1e-3) -> list[float]:
    from deepspeed.runtime.lr_schedules import WarmupCosineLR
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    scheduler_config = lr_scheduler_config(schedule, steps, warmup)
    scheduler = WarmupCosineLR(optimizer, **scheduler_config["params"])
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_cosine_starts_at_the_peak_and_ends_at_one_percent_of_it():
    rates = _rates("cosine", 1000, 0)
    # DeepSpeed's scheduler holds 0 until its first step: the first update is a no-op.
    assert rates[0] == 0.0 and rates[1] == pytest.approx(1e-3)
    assert all(b <= a + 1e-12 for a, b in zip(rates[1:], rates[2:]))      # never rises again
    assert rates[-1] == pytest.approx(1e-3 * COSINE_END_RATIO, rel=0.05)
    assert rates[500] == pytest.approx(1e-3 * (1 + COSINE_END_RATIO) / 2, rel=0.02)   # half way


def test_warmup_rises_linearly_to_the_peak_then_decays():
    rates = _rates("cosine", 1000, 100)
    assert rates[0] == pytest.approx(0.0, abs=1e-9) and rates[50] == pytest.approx(5e-4, rel=0.05)
    assert max(rates) == pytest.approx(1e-3, rel=0.02) and 90 <= rates.index(max(rates)) <= 110
    assert rates[-1] < 2 * 1e-3 * COSINE_END_RATIO


def test_constant_adds_no_scheduler_and_bad_settings_are_refused():
    from bassray.config import DistributedConfig
    assert lr_scheduler_config("constant", 1000) is None
    dist = DistributedConfig()
    plain = deepspeed_config(dist, global_batch=8, num_workers=1, lr=1e-3, betas=[0.9, 0.99])
    assert "scheduler" not in plain
    cosine = deepspeed_config(dist, global_batch=8, num_workers=1, lr=1e-3, betas=[0.9, 0.99],
                              scheduler=lr_scheduler_config("cosine", 1000))
    assert cosine["scheduler"]["type"] == "WarmupCosineLR"
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        load_config("tiny", ["diffusion_training.lr_schedule=linear"])
    with pytest.raises(ValueError, match="lr_warmup_steps"):
        load_config("tiny", ["diffusion_training.lr_warmup_steps=99999"])
