"""Precision by what the machine runs natively."""
from __future__ import annotations

import logging

import pytest
import torch

from bassray import precision


@pytest.fixture
def flags(monkeypatch):
    def set_flags(*names):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(names))
    return set_flags


def test_auto_takes_bf16_only_where_the_cpu_has_it(flags):
    flags("avx2", "avx512f", "avx512_bf16")
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    flags("avx2", "amx_bf16")
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    flags("avx2", "fma")
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    assert "no native bf16" in precision.describe("auto", "cpu")


def test_explicit_bf16_is_kept_with_a_warning_where_emulated(flags, caplog):
    flags("avx2")
    with caplog.at_level(logging.WARNING, logger="bassray.precision"):
        assert precision.resolve_precision("bf16", "cpu") == "bf16"
    assert "emulated" in caplog.text
    assert precision.resolve_precision("fp32", "cpu") == "fp32"
    assert precision.torch_dtype("bf16") is torch.bfloat16


def test_unknown_precision_and_absent_gpu(flags):
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve_precision("fp16")
    if not torch.cuda.is_available():
        assert precision.resolve_precision("auto", "cuda") == "fp32"


def test_training_keeps_fp32_on_cpu(flags):
    from bassray.config import DistributedConfig
    from bassray.distributed.deepspeed_config import resolve_precision
    flags("avx512_bf16")
    assert resolve_precision(DistributedConfig(precision="auto"), use_gpu=False) == "fp32"


def test_zero_partitions_only_over_several_workers():
    from bassray.config import DistributedConfig
    from bassray.distributed.deepspeed_config import deepspeed_config
    dist = DistributedConfig(zero_stage=1)
    stage = lambda workers: deepspeed_config(dist, global_batch=8, num_workers=workers, lr=1e-3,  # noqa: E731
                                             betas=[0.9, 0.99])["zero_optimization"]["stage"]
    assert stage(1) == 0 and stage(2) == 1 and stage(4) == 1


def test_each_python_environment_builds_deepspeeds_op_in_its_own_folder(monkeypatch):
    import sys

    from bassray.distributed.deepspeed_config import own_extension_build_dir
    folders = []
    for prefix in ("/venvs/a", "/venvs/b", "/venvs/a"):
        monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
        monkeypatch.setattr(sys, "prefix", prefix)
        folders.append(own_extension_build_dir())
    assert folders[0] == folders[2] != folders[1]
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/chosen/by/user")
    assert own_extension_build_dir() == "/chosen/by/user"
