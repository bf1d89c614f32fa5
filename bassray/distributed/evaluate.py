"""``bassray evaluate`` on Ray: held-out songs spread over a Ray Data actor pool (``map_batches``),
so a cluster scores many at once and each actor loads the model once (bassray/eval/evaluate.py
holds what is computed)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import ray
import ray.data

from bassray.distributed.runner import ensure_ray
from bassray.eval.evaluate import (SongScorer, fad_against_true, held_out_songs, markdown_report, summarise,
                                   write_spectrograms)

log = logging.getLogger(__name__)


def evaluate(bundle_dir: str | Path, data_dir: str | Path, out_dir: str | Path, *,
             splits: Sequence[str] = ("test",), songs: int | None = None, steps: int | None = None,
             seed: int = 0, actors: int = 2) -> dict[str, Any]:
    """Score up to ``songs`` held-out songs (see the module doc) on the current or a local Ray
    cluster; write ``report.json`` and ``report.md`` under ``out_dir`` and return the report."""
    from bassray.config import load_config_json
    from bassray.train.bundle import CONFIG_FILE, read_bundle_metadata
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    meta = read_bundle_metadata(bundle_dir)  # checks the bundle is complete first
    target = load_config_json(Path(bundle_dir) / CONFIG_FILE).data.target_stem
    items = held_out_songs(data_dir, splits, target, songs)
    log.info("evaluate: scoring %d held-out songs from %s with %s", len(items), data_dir, bundle_dir)
    ensure_ray()
    dataset = ray.data.from_items(items)
    scored = dataset.map_batches(
        SongScorer, fn_constructor_kwargs={"bundle_dir": str(Path(bundle_dir).resolve()),
                                           "audio_dir": str(out / "audio"), "steps": steps, "seed": seed},
        batch_size=4, concurrency=(1, max(1, actors)), num_cpus=1)
    rows = [json.loads(r["result"]) for r in scored.take_all()]
    rows.sort(key=lambda r: r["key"])
    report = summarise(rows)
    report.update(bundle=str(bundle_dir), data=str(data_dir), splits=list(splits), seed=seed,
                  steps=steps, bundle_metadata=meta, per_song=rows)
    if len(rows) >= 2:
        report["fad"] = fad_against_true(out, [r["key"] for r in rows])
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    spectrograms = write_spectrograms(out, [r["key"] for r in rows[:3]])
    (out / "report.md").write_text(markdown_report(report, spectrograms))
    return report
