"""Training speed instruments: FLOPs counted over a real step, the loop's speed window (data wait,
MFU), and torch.compile of trained modules in place."""
from __future__ import annotations

import shutil
import time

import pytest
import torch

from bassray.config import load_config
from bassray.distributed.perf import StepWindow, compile_for_training
from bassray.models.autoencoder import Autoencoder
from bassray.models.critics import Critics
from bassray.models.unet1d import UNet1d
from bassray.train.step_flops import autoencoder_step_flops, diffusion_step_flops


@pytest.fixture(scope="module")
def config():
    return load_config("tiny")


def test_diffusion_step_flops_grow_with_the_batch_and_leave_the_model_alone(config):
    unet = UNet1d(config.unet, 32, 64)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    one = diffusion_step_flops(unet, torch.randn(1, 32, 16), torch.randn(1, 64, 16))
    four = diffusion_step_flops(unet, torch.randn(4, 32, 16), torch.randn(4, 64, 16))
    assert one > 0 and four == pytest.approx(4 * one, rel=0.02)  # the loops count one crop and scale
    assert all(p.grad is None for p in unet.parameters())
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())


def test_self_conditioning_steps_count_their_extra_forward_pass_by_its_share():
    config = load_config("tiny", ["unet.self_condition=true"])
    unet = UNet1d(config.unet, 32, 64)
    target, cond = torch.randn(2, 32, 16), torch.randn(2, 64, 16)
    plain = diffusion_step_flops(unet, target, cond)
    half, every = (diffusion_step_flops(unet, target, cond, rate) for rate in (0.5, 1.0))
    # a forward pass is about a third of forward and backward
    assert plain < half < every < 1.5 * plain and every - plain == pytest.approx(2 * (half - plain), rel=0.01)


def test_autoencoder_step_flops_count_the_critics_when_adversarial(config):
    ae = Autoencoder(config.bass_autoencoder, config.audio)
    critics = Critics(config.critic, config.audio)
    wav = 0.1 * torch.randn(1, config.audio.channels, 4 * ae.hop_samples)
    plain = autoencoder_step_flops(ae, critics, wav, config.autoencoder_training, adversarial=False)
    adversarial = autoencoder_step_flops(ae, critics, wav, config.autoencoder_training, adversarial=True)
    assert 0 < plain < adversarial
    assert all(p.grad is None for p in [*ae.parameters(), *critics.parameters()])


def test_step_window_reports_data_wait_and_mfu_and_leaves_out_excluded_time():
    def slow_batches():
        while True:
            time.sleep(0.05)  # the data pipeline is the bottleneck: the loop mostly waits
            yield {"x": torch.zeros(1)}

    window = StepWindow(global_batch=8, step_flops=1e9, peak_flops=1e12)
    batches = slow_batches()
    for _ in range(4):
        window.next_batch(batches)
        window.step_done()
    with window.excluded():
        time.sleep(0.3)  # an evaluation: not training time
    metrics = window.metrics()
    assert 0.5 < metrics["perf/data_wait_fraction"] <= 1.0
    assert metrics["crops_per_s"] > 8 * 4 / 0.5  # the excluded 0.3 s did not count
    assert 0 < metrics["perf/mfu"] < 1
    assert metrics["perf/model_tflops_per_s"] == pytest.approx(metrics["perf/mfu"] * 1e12 / 1e12)
    assert window.steps == 0  # the next window starts empty
    assert "perf/mfu" not in StepWindow(global_batch=8).metrics()  # no FLOPs or peak: no MFU


def test_compile_mode_is_validated(config):
    with pytest.raises(ValueError, match="distributed.compile"):
        load_config("tiny", ["distributed.compile=fast"])
    with pytest.raises(ValueError, match="distributed.compile"):
        compile_for_training([torch.nn.Linear(2, 2)], "fast")
    module = torch.nn.Linear(2, 2)
    compile_for_training([module], "none")
    assert module._compiled_call_impl is None


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")),
                    reason="torch.compile on the CPU needs a C++ compiler (apt-get install g++)")
def test_compiled_module_keeps_its_state_dict_and_its_outputs():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv1d(4, 8, 3, padding=1), torch.nn.GELU(), torch.nn.Conv1d(8, 4, 1))
    x = torch.randn(2, 4, 16)
    eager = module(x)
    keys = list(module.state_dict())
    compile_for_training([module], "default")
    compiled = module(x)
    assert list(module.state_dict()) == keys  # checkpoints and bundles load as before
    assert torch.allclose(compiled, eager, atol=1e-5)
    compiled.sum().backward()
    assert all(p.grad is not None for p in module.parameters())
