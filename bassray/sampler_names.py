"""The samplers a request may name, and which sampler config field holds each one's default step
count: the one list, without torch, read by the config, the CLI, Serve, the benchmarks and the
evaluation (the solvers themselves are in bassray/diffusion/sampler.py)."""
from __future__ import annotations

from typing import Any, Mapping

# name -> the SamplerConfig field with its default step count. "ddim" is the paper's; "dpmpp-2m" is
# DPM-Solver++(2M), second order: fewer steps for the same ODE.
STEP_FIELDS = {"ddim": "steps", "dpmpp-2m": "dpmpp_steps"}
SAMPLERS = tuple(STEP_FIELDS)


def check_sampler(name: str) -> str:
    if name not in STEP_FIELDS:
        raise ValueError(f"unknown sampler {name!r}: choose from {', '.join(SAMPLERS)}")
    return name


def default_steps(sampler_settings: Mapping[str, Any], name: str) -> int:
    """``name``'s default step count from a sampler config's fields (``SamplerConfig`` as a dict,
    e.g. a bundle's); bundles from before a field existed fall back to ``steps``."""
    return int(sampler_settings.get(STEP_FIELDS[check_sampler(name)], sampler_settings["steps"]))
