"""The report's experiment sections beyond musical fit, each runnable alone
(``bassray evaluate --only fad-steps``): Fig. 2 sweeps, Fig. 3 matching, Table 1 style grounding
and length generalisation. Each takes the loaded generator and held-out rows, writes its JSON (and
PNG) under ``out`` and returns its part of report.json. No Ray here.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bassray.eval import sweeps
from bassray.sampler_names import SAMPLERS

log = logging.getLogger(__name__)

SECTIONS = ("fit", "fad-steps", "fad-guidance", "matching", "style", "length")


SECTION_TITLES = {"fit": "musical fit and articulation", "fad-steps": "FAD against sampler steps (Fig. 2)",
                  "fad-guidance": "FAD against guidance (Fig. 2)", "matching": "which mix a bass belongs to (Fig. 3)",
                  "style": "style grounding (Table 1)", "length": "length generalisation"}


def report_key(section: str) -> str:
    """Where a section's result sits in report.json (the fit section's rows are ``per_song``)."""
    return "per_song" if section == "fit" else section.replace("-", "_")


def skipped_sections(report: dict[str, Any], *, asked: list[str] | None, contrastive: str | None,
                     failed: dict[str, str], command: str) -> dict[str, dict[str, str]]:
    """Each section the report does not hold: why, and the command that adds it to this report.
    ``command`` is the ``bassray evaluate BUNDLE DATA --out DIR`` that wrote it."""
    skipped = {}
    for section in SECTIONS:
        if report_key(section) in report:
            continue
        add = f"{command} --only {section}"
        if section in failed:
            reason = failed[section]
        elif section == "matching" and not contrastive:
            reason = "needs a contrastive model, and none was given"
            add = ("python jobs/train_contrastive.py --data SHARDS, then "
                   f"{command} --only matching --contrastive CONTRASTIVE_BUNDLE")
        elif asked is not None and section not in asked:
            reason = f"not asked for (--only {','.join(asked)})"
        else:
            reason = "not run"
        skipped[section] = {"title": SECTION_TITLES[section], "reason": reason, "command": add}
    return skipped


@dataclass
class ExperimentOptions:
    steps_grid: tuple[int, ...] = sweeps.STEP_COUNTS
    samplers: tuple[str, ...] = SAMPLERS  # the fad-steps sweep plots each
    guidance_weights: tuple[float, ...] = sweeps.GUIDANCE_WEIGHTS
    rescale_phis: tuple[float, ...] = sweeps.RESCALE_PHIS
    fit_songs: int = 12              # songs scored by pYIN per sweep point (the slow part)
    matching_songs: int = 25
    length_songs: int = 8
    length_multiples: tuple[int, ...] = (1, 2, 4)
    fad_embedding: str = "chroma-mfcc"
    fad_weights: str | None = None   # a checkpoint file, or the contrastive bundle folder
    contrastive: str | None = None   # contrastive bundle: matching, style distances
    seed: int = 0
    harmony: float | None = None     # snap width every section decodes with (None: the bundle's)


def _write_json(out: Path, name: str, data: Any) -> None:
    (out / name).write_text(json.dumps(data, indent=2, default=float))


def _embedding(opts: ExperimentOptions):
    from bassray.eval.fad import load_embedding
    weights = opts.fad_weights or (opts.contrastive if opts.fad_embedding == "contrastive" else None)
    return load_embedding(opts.fad_embedding, weights)


def _sweep_baselines(generator, rows, embedding, true_stats, fit_songs: int, reference: list[np.ndarray],
                     mapper: sweeps.Mapper) -> dict[str, dict[str, float]]:
    """Chord-tone of the true bass (ceiling) and of another song's bass (floor); FAD of other
    songs' true basses (``reference``, from the train split: a real bass that ignores the mix)."""
    from bassray.eval.fad import fad_from_stats
    rate = generator.config.audio.sample_rate
    truths = [json.loads(r["truth"]) for r in rows[:fit_songs]]
    fit = {kind: float(np.nanmean([f["chord_tone"] for f in sweeps.fits([r[key] for r in rows[:fit_songs]], rate,
                                                                       truths, mapper)]))
           for kind, key in (("true bass", "target"), ("another song's bass", "other_target"))}
    fad = {}
    if reference:
        fad["other songs' true bass"] = fad_from_stats(sweeps.embed_clips(embedding, reference, rate), true_stats,
                                                       embedding.name).fad
    return {"fad": fad, "chord_tone": fit}


def run_fad_sweep(kind: str, generator, rows: list[dict[str, Any]], out: Path, opts: ExperimentOptions,
                  reference: list[np.ndarray], mapper: sweeps.Mapper = map) -> dict[str, Any]:
    """``kind`` "fad-steps" (sampler steps at the bundle's guidance, per sampler) or "fad-guidance"
    (w x phi at the bundle's step count and sampler)."""
    sampler = generator.config.sampler
    embedding = _embedding(opts)
    rate = generator.config.audio.sample_rate
    true_stats = sweeps.embed_clips(embedding, [r["target"] for r in rows], rate)
    fit_songs = min(opts.fit_songs, len(rows))

    def score(**point):
        point.setdefault("harmony", opts.harmony)
        return sweeps.score_setting(generator, rows, embedding, true_stats, seed=opts.seed, fit_songs=fit_songs,
                                    mapper=mapper, **point)

    baselines = _sweep_baselines(generator, rows, embedding, true_stats, fit_songs, reference, mapper)
    # The model's own prior: hears no mix, and samples at temperature 1.
    unconditional = score(steps=sampler.steps, cfg_weight=0.0, rescale_phi=0.0, harmony=0.0, temperature=1.0)
    baselines["fad"]["unconditional model"] = unconditional["fad"]
    baselines["chord_tone"]["unconditional model"] = unconditional["chord_tone"]
    if kind == "fad-steps":
        points = sweeps.run_sweep(sweeps.steps_points(opts.steps_grid, sampler.cfg_weight, sampler.rescale_phi,
                                                      opts.samplers), score, kind)
        x, series, title = "steps", "sampler", f"sampler steps (w = {sampler.cfg_weight}, phi = {sampler.rescale_phi})"
    else:
        points = sweeps.run_sweep(sweeps.guidance_points(opts.guidance_weights, opts.rescale_phis, sampler.steps),
                                  score, kind)
        x, series, title = "cfg_weight", "rescale_phi", f"guidance weight w per rescale phi ({sampler.steps} steps)"
    name = kind.replace("-", "_")
    sweeps.plot_sweep(points, x, series, out / f"{name}.png", f"{title}; {len(rows)} songs, FAD "
                      f"{embedding.name}, chord-tone on {fit_songs}", baselines)
    result = {"points": points, "baselines": baselines, "songs": len(rows), "fit_songs": fit_songs,
              "embedding": embedding.name, "plot": f"{name}.png"}
    _write_json(out, f"{name}.json", result)
    return result


def run_matching(generator, rows: list[dict[str, Any]], out: Path, opts: ExperimentOptions) -> dict[str, Any]:
    from bassray.eval.evaluate import song_seed
    from bassray.eval.matching import matching, plot_assignment
    from bassray.inference import GenerationSettings
    from bassray.bundles.contrastive import load_contrastive
    if not opts.contrastive:
        raise ValueError("the matching section needs a contrastive model: train one with "
                         "`python jobs/train_contrastive.py --data SHARDS` and pass --contrastive BUNDLE")
    model = load_contrastive(opts.contrastive)
    rows = rows[:opts.matching_songs]
    sampler = generator.config.sampler
    mixes = [r["mix"] for r in rows]
    width = sweeps.snap_width(generator, opts.harmony)
    generated, unsnapped = sweeps.generate_both_ways(generator, mixes, [GenerationSettings(
        steps=sampler.steps, cfg_weight=sampler.cfg_weight, rescale_phi=sampler.rescale_phi,
        seed=song_seed(opts.seed, r["key"]), harmony=width) for r in rows])
    basses = {"generated": generated, "true": [r["target"] for r in rows]}
    if unsnapped is not None:
        basses["generated_no_snap"] = unsnapped
    result = matching(model, mixes, basses)
    plot_assignment({k: result["matrices"][k] for k in ("generated", "true", "shuffled")},
                    out / "matching.png", result["chance"], result["top1"])
    result.update(plot="matching.png", harmony=width)
    _write_json(out, "matching.json", result)
    return {k: v for k, v in result.items() if k != "matrices"}


def run_style(generator, rows: list[dict[str, Any]], data_dir: str, out: Path, opts: ExperimentOptions
              ) -> dict[str, Any]:
    from bassray.eval.style import ProgramClassifier, style_grounding, training_clips
    target = generator.config.data.target_stem
    clips, programs, rate = training_clips(data_dir, target)
    if len(set(programs)) < 2:
        raise ValueError(f"the style section needs train songs of at least two {target} programs in {data_dir}")
    classifier = ProgramClassifier().fit(clips, programs, rate)
    contrastive = None
    if opts.contrastive:
        from bassray.bundles.contrastive import load_contrastive
        contrastive = load_contrastive(opts.contrastive)
    sampler = generator.config.sampler
    result = style_grounding(generator, rows, classifier, contrastive=contrastive, steps=sampler.steps,
                             cfg_weight=sampler.cfg_weight, rescale_phi=sampler.rescale_phi, seed=opts.seed,
                             harmony=opts.harmony)
    result["classifier_train_clips"] = len(clips)
    _write_json(out, "style.json", result)
    return result


def run_length(generator, out: Path, opts: ExperimentOptions, mapper: sweeps.Mapper = map) -> dict[str, Any]:
    from bassray.eval.fad import load_embedding
    from bassray.eval.length import length_generalisation, long_songs
    config = generator.config
    crop_frames = config.diffusion_training.crop_frames
    seconds = max(opts.length_multiples) * crop_frames * generator.target_ae.hop_samples / config.audio.sample_rate
    songs = long_songs(config, opts.length_songs, seconds + 0.5, seed=opts.seed)
    # chroma-mfcc whatever the report's FAD embedding: a crop holds too few contrastive windows
    # for a covariance.
    result = length_generalisation(generator, songs, crop_frames, load_embedding("chroma-mfcc"),
                                   multiples=opts.length_multiples, steps=config.sampler.steps,
                                   cfg_weight=config.sampler.cfg_weight, rescale_phi=config.sampler.rescale_phi,
                                   seed=opts.seed, mapper=mapper, harmony=opts.harmony)
    _write_json(out, "length.json", result)
    return result
