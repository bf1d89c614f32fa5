"""``bassray evaluate`` on Ray: held-out songs spread over a Ray Data actor pool (``map_batches``),
so a cluster scores many at once and each actor loads the model once (bassray/eval/evaluate.py
holds what is computed); the experiment sections (bassray/eval/sections.py) then run in this
process, one after the other."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import ray
import ray.data

from bassray.distributed.runner import ensure_ray
from bassray.eval.evaluate import (SongScorer, fad_against_true, held_out_songs, summarise, training_basses,
                                   write_spectrograms)
from bassray.eval.fit_report import markdown_report
from bassray.eval.report import sections_markdown, write_html
from bassray.eval.sections import (SECTIONS, ExperimentOptions, report_key, run_fad_sweep, run_length,
                                   run_matching, run_style, skipped_sections)

log = logging.getLogger(__name__)


def evaluate(bundle_dir: str | Path, data_dir: str | Path, out_dir: str | Path, *,
             splits: Sequence[str] = ("test",), songs: int | None = None, steps: int | None = None,
             seed: int = 0, actors: int = 2, only: Sequence[str] | None = None,
             options: ExperimentOptions | None = None, harmony: float | None = None,
             chords: str = "auto") -> dict[str, Any]:
    """Score up to ``songs`` held-out songs (see the module doc) on the current or a local Ray
    cluster and run the experiment sections named in ``only`` (default: all that can run; the
    matching section needs ``options.contrastive``). Sections run alone merge into an existing
    report.json. Writes report.json, report.md and report.html under ``out_dir``. ``harmony``
    overrides the bundle's harmony snap width (``sampler.harmony_snap``; 0 = off). ``chords``: where
    the chords come from (``held_out_songs``: auto, annotated or estimated)."""
    from bassray.config import load_config_json
    from bassray.bundles.files import CONFIG_FILE, read_bundle_metadata
    options = options or ExperimentOptions(seed=seed)
    if harmony is not None:  # every section decodes with the caller's snap width
        options.harmony = harmony
    wanted = list(only) if only else [s for s in SECTIONS if s != "matching" or options.contrastive]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown report section(s) {unknown}: choose from {', '.join(SECTIONS)}")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    meta = read_bundle_metadata(bundle_dir)  # checks the bundle is complete first
    target = load_config_json(Path(bundle_dir) / CONFIG_FILE).data.target_stem
    items = held_out_songs(data_dir, splits, target, songs, chords=chords)
    report_path = out / "report.json"
    report: dict[str, Any] = json.loads(report_path.read_text()) if report_path.exists() and only else {}
    if report and report.get("bundle") != str(bundle_dir):
        log.warning("evaluate: %s is the report of another bundle (%s): starting a new one", report_path,
                    report.get("bundle"))
        report = {}
    report["bundle"] = str(bundle_dir)
    if "fit" in wanted:
        report.update(score_songs(items, bundle_dir, data_dir, out, target=target, splits=splits, steps=steps,
                                  seed=seed, actors=actors, bundle_metadata=meta, harmony=harmony))
    rest = [s for s in wanted if s != "fit"]
    failed: dict[str, str] = {}
    if rest:
        from bassray.inference import BassGenerator
        generator = BassGenerator.from_bundle(bundle_dir)
        for section in rest:
            started = time.perf_counter()
            log.info("evaluate: section %s", section)
            try:
                if section in ("fad-steps", "fad-guidance"):
                    reference = training_basses(data_dir, target, len(items))
                    result = run_fad_sweep(section, generator, items, out, options, reference, ray_map)
                elif section == "matching":
                    result = run_matching(generator, items, out, options)
                elif section == "style":
                    result = run_style(generator, items, str(data_dir), out, options)
                else:
                    result = run_length(generator, out, options, ray_map)
            except ValueError as exc:  # what the data or options cannot give: said in the report
                if only:  # asked for by name: the caller hears it now
                    raise
                log.warning("evaluate: section %s skipped: %s", section, exc)
                failed[section] = str(exc)
                continue
            result["seconds"] = time.perf_counter() - started
            report[report_key(section)] = result
    again = ["bassray evaluate", str(bundle_dir), str(data_dir), "--split", ",".join(splits),
             *(["--songs", str(songs)] if songs else []), "--seed", str(seed), "--out", str(out)]
    report["skipped"] = skipped_sections(report, asked=list(only) if only else None, contrastive=options.contrastive,
                                         failed=failed, command=" ".join(again))
    for section, why in report["skipped"].items():
        log.info("evaluate: no %s section (%s); to add it: %s", section, why["reason"], why["command"])
    report_path.write_text(json.dumps(report, indent=2, default=float))
    text = sections_markdown(report)
    if "per_song" in report:
        spectrograms = sorted(p.name for p in out.glob("*.spectrogram.png"))
        text = markdown_report(report, spectrograms).rstrip() + "\n\n" + text
    (out / "report.md").write_text(text)
    write_html(out, text, report)
    return report


def ray_map(fn, *iterables) -> list:
    """``map`` over Ray tasks (one CPU each): the sections' pYIN scoring spreads over the cluster."""
    ensure_ray()
    remote = ray.remote(num_cpus=1)(fn)
    return ray.get([remote.remote(*args) for args in zip(*iterables)])


def score_songs(items: list[dict[str, Any]], bundle_dir: str | Path, data_dir: str | Path, out: Path, *,
                target: str, splits: Sequence[str], steps: int | None, seed: int, actors: int,
                bundle_metadata: dict[str, Any], harmony: float | None = None) -> dict[str, Any]:
    """The musical-fit section: every song scored five ways in a Ray Data actor pool, the FAD
    table and the spectrograms."""
    log.info("evaluate: scoring %d held-out songs from %s with %s", len(items), data_dir, bundle_dir)
    ensure_ray()
    dataset = ray.data.from_items(items)
    scored = dataset.map_batches(
        SongScorer, fn_constructor_kwargs={"bundle_dir": str(Path(bundle_dir).resolve()),
                                           "audio_dir": str(out / "audio"), "steps": steps, "seed": seed,
                                           "harmony": harmony},
        batch_size=4, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, actors)), num_cpus=1)
    rows = [json.loads(r["result"]) for r in scored.take_all()]
    rows.sort(key=lambda r: r["key"])
    report = summarise(rows)
    report.update(bundle=str(bundle_dir), data=str(data_dir), splits=list(splits), seed=seed,
                  steps=steps, harmony=harmony, bundle_metadata=bundle_metadata, per_song=rows)
    if len(rows) >= 2:
        reference = training_basses(data_dir, target, len(rows))
        report["fad"] = fad_against_true(out, [r["key"] for r in rows], reference=reference,
                                         reference_rate=int(items[0]["sample_rate"]))
    write_spectrograms(out, [r["key"] for r in rows[:3]], {r["key"]: r.get("true_onsets", []) for r in rows[:3]})
    return report
