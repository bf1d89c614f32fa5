"""The paper's Fig. 2 on our data: FAD of generated bass against the true bass stems of held-out
songs as the number of sampler steps changes (DDIM and DPM-Solver++(2M) side by side), and as the guidance weight w changes for several
rescale factors phi; each point also carries the musical-fit score (chord-tone agreement), since
FAD alone cannot see pitch. Plain functions over a :class:`~bassray.inference.BassGenerator`; no Ray.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

Mapper = Callable[..., Iterable[Any]]  # map(fn, *iterables), or a parallel one (Ray tasks)

STEP_COUNTS = (4, 8, 16, 32, 64, 128)
GUIDANCE_WEIGHTS = (1.0, 1.5, 2.0, 3.0, 5.0)
RESCALE_PHIS = (0.0, 0.5, 0.7, 1.0)


def embed_clips(embedding, clips: Sequence[np.ndarray], rate: int):
    """Gaussian statistics of ``embedding`` over clips ``[C, T]`` at ``rate``."""
    from bassray.audio import conform
    from bassray.eval.fad import gaussian_stats
    return gaussian_stats(embedding(conform(c, rate, embedding.sample_rate, 1)) for c in clips)


def fits(basses: Sequence[np.ndarray], rate: int, truths: Sequence[dict[str, Any]], mapper: Mapper = map
         ) -> list[dict[str, float]]:
    """``bass_fit`` of each bass against its truth, through ``mapper`` (a parallel map where
    available: pYIN is the slow part of every experiment)."""
    from bassray.eval.musical_fit import bass_fit
    return list(mapper(bass_fit, basses, [rate] * len(basses), truths))


def snap_width(generator, harmony: float | None) -> float:
    """The harmony snap width a section decodes with: ``harmony``, else the bundle's; 0 where the
    bundle cannot snap (no pitch code or chroma)."""
    width = generator.config.sampler.harmony_snap if harmony is None else float(harmony)
    return width if generator.can_snap_to_harmony else 0.0


def generate_both_ways(generator, mixes: list[np.ndarray], settings: list
                       ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """The basses as decoded with each setting's snap width and, where a snap is on, the same
    samples decoded without it (else None)."""
    if generator.can_snap_to_harmony and any((s.harmony or 0.0) > 0 for s in settings):
        return generator.generate_with_and_without_snap(mixes, settings)
    return generator.generate(mixes, settings), None


def score_setting(generator, rows: list[dict[str, Any]], embedding, true_stats, *, steps: int, cfg_weight: float,
                  rescale_phi: float, seed: int, fit_songs: int, mapper: Mapper = map, sampler: str | None = None,
                  harmony: float | None = None, temperature: float | None = None) -> dict[str, Any]:
    """Generate one bass per held-out row with one setting; its FAD against the true basses and
    the mean chord-tone agreement over the first ``fit_songs`` songs (``harmony``: the snap width,
    ``temperature``: the starting noise's scale; None = the bundle's). Where a snap is on, the same
    samples are also scored without it (``fad_no_snap``, ``chord_tone_no_snap``)."""
    from bassray.eval.evaluate import song_seed
    from bassray.eval.fad import fad_from_stats
    from bassray.inference import GenerationSettings
    rate = generator.config.audio.sample_rate
    sampler = sampler or generator.config.sampler.method
    width = snap_width(generator, harmony)
    temperature = generator.config.sampler.temperature if temperature is None else temperature
    settings = [GenerationSettings(steps=steps, cfg_weight=cfg_weight, rescale_phi=rescale_phi,
                                   seed=song_seed(seed, r["key"]), sampler=sampler, harmony=width,
                                   temperature=temperature) for r in rows]
    truths = [json.loads(r["truth"]) for r in rows[:fit_songs]]
    out: dict[str, Any] = {"steps": steps, "cfg_weight": cfg_weight, "rescale_phi": rescale_phi, "sampler": sampler,
                           "harmony": width, "temperature": temperature}
    for suffix, basses in zip(("", "_no_snap"), generate_both_ways(generator, [r["mix"] for r in rows], settings)):
        if basses is None:
            continue
        result = fad_from_stats(embed_clips(embedding, basses, rate), true_stats, embedding.name)
        scores = [f["chord_tone"] for f in fits(basses[:fit_songs], rate, truths, mapper)]
        out.update({f"fad{suffix}": result.fad,
                    f"chord_tone{suffix}": float(np.nanmean(scores)) if scores else float("nan")})
        out.update(embedding=result.embedding, clips=result.clips_a, frames=result.frames_a, fit_songs=len(scores))
    return out


def run_sweep(points: Sequence[dict[str, float]], score: Callable[..., dict[str, Any]],
              label: str) -> list[dict[str, Any]]:
    out = []
    for i, point in enumerate(points):
        out.append(score(**point))
        log.info("%s %d/%d: %s -> FAD %.3f, chord-tone %.2f", label, i + 1, len(points), point,
                 out[-1]["fad"], out[-1]["chord_tone"])
    return out


def steps_points(steps: Sequence[int], cfg_weight: float, rescale_phi: float,
                 samplers: Sequence[str] = ("ddim",)) -> list[dict[str, Any]]:
    return [{"steps": s, "cfg_weight": cfg_weight, "rescale_phi": rescale_phi, "sampler": name}
            for name in samplers for s in steps]


def guidance_points(weights: Sequence[float], phis: Sequence[float], steps: int) -> list[dict[str, float]]:
    return [{"steps": steps, "cfg_weight": w, "rescale_phi": phi} for phi in phis for w in weights]


def plot_sweep(points: list[dict[str, Any]], x: str, series: str | None, path: Path, title: str,
               baselines: dict[str, float]) -> Path:
    """FAD (left) and chord-tone agreement (right) against ``x``, one line per ``series`` value;
    the baselines (true bass, another song's bass...) as horizontal lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    groups: dict[Any, list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault(p[series] if series else None, []).append(p)
    for key, group in groups.items():
        group = sorted(group, key=lambda p: p[x])
        label = f"{series} = {key}" if series else None
        for ax, metric in zip(axes, ("fad", "chord_tone")):
            ax.plot([p[x] for p in group], [p[metric] for p in group], marker="o", label=label)
    names = sorted({name for values in baselines.values() for name in values})
    for ax, metric in zip(axes, ("fad", "chord_tone")):
        for name, value in baselines.get(metric, {}).items():
            ax.axhline(value, color=f"C{6 + names.index(name)}", linestyle="--", linewidth=1, label=name)
        ax.set_xlabel(x)
        ax.set_ylabel({"fad": "FAD vs true bass", "chord_tone": "chord-tone agreement"}[metric])
        if x == "steps":
            ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
