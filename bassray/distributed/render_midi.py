"""`bassray data render MIDI_DIR OUT`: a folder of MIDI files into audio shards, on Ray Data.

The files (sorted) are cut into batches; each batch is one Ray task that splits its files into stems
with ground truth (bassray/data/midi_stems.py), renders them with a SoundFont chosen per file from
the ones given, and writes its own shards (``{split}-b{batch}-{index}.tar``, the training jobs'
format). A batch is done when its record in ``OUT/.render/`` is written, after its shards: a re-run
skips every batch whose record names the same files, and rewrites the others. Bad files are
skipped and counted, with their reasons, in the batch record and the manifest. A collection whose
top folders are ``train/``, ``val/`` and ``test/`` keeps them as its splits (held-out composers stay
held out); elsewhere a file's split comes from a hash of its path.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from bassray.config import Config

log = logging.getLogger(__name__)
MIDI_SUFFIXES = (".mid", ".midi")
RECORDS = ".render"


def find_midi_files(midi_dir: str | Path) -> list[str]:
    root = Path(midi_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of MIDI files")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no .mid or .midi files under {root}")
    return files


def folder_split(relative: str) -> str | None:
    """The split a file's top folder names (``train/``, ``val/``, ``test/``), else None."""
    from bassray.data.shards import SPLITS
    top = Path(relative).parts[0]
    return top if len(Path(relative).parts) > 1 and top in SPLITS else None


def _record_path(out_dir: Path, batch: int) -> Path:
    return out_dir / RECORDS / f"batch-{batch:06d}.json"


def render_batch(task: dict[str, Any]) -> dict[str, Any]:
    """One batch of files -> its shards and its record (what was kept, what was skipped and why)."""
    import numpy as np

    from bassray.config import config_from_dict
    from bassray.data.midi_stems import MidiSkip, midi_song, render_stems
    from bassray.data.shards import safe_key, write_shards
    from bassray.data.synth import read_soundfont, truth_segments
    config = config_from_dict(task["config"])
    root, out_dir, batch = Path(task["midi_dir"]), Path(task["out_dir"]), int(task["batch"])
    prefix = f"b{batch:06d}-"
    for stale in out_dir.glob(f"*-{prefix}*.tar*"):  # an earlier attempt at this batch
        stale.unlink()
    soundfonts = [read_soundfont(s) for s in task["soundfonts"]] or [read_soundfont(None)]
    kept, skipped, stem_counts = [], [], {}
    started = time.perf_counter()

    def segments():
        for relative in task["files"]:
            seed = int(np.random.SeedSequence([task["seed"], *relative.encode()]).generate_state(1)[0])
            try:
                song = midi_song(root / relative, max_seconds=task["max_seconds"], name=relative,
                                 seed=seed if task["vary_programs"] else None)
                if song.duration < config.data.crop_seconds:
                    raise MidiSkip(f"shorter ({song.duration:.1f} s) than one training crop")
                stems, gain = render_stems(song, soundfonts[seed % len(soundfonts)], config.audio.sample_rate,
                                           config.audio.channels)
            except MidiSkip as exc:
                skipped.append({"file": relative, "reason": str(exc)})
                continue
            except Exception as exc:  # a file that breaks the renderer must not stop the collection
                skipped.append({"file": relative, "reason": f"render failed ({type(exc).__name__}: {exc})"[:200]})
                continue
            kept.append({"file": relative, "seconds": round(song.duration, 2), "stems": sorted(stems)})
            for name in stems:
                stem_counts[name] = stem_counts.get(name, 0) + 1
            yield from truth_segments(safe_key(Path(relative).with_suffix("").as_posix()), song.truth, stems,
                                      gain, config, split=folder_split(relative))

    data = config.data
    splits = write_shards(segments(), out_dir, shard_target_mb=data.shard_target_mb, val_fraction=data.val_fraction,
                          test_fraction=data.test_fraction, split_seed=data.split_seed, prefix=prefix)
    import ray
    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    record = {"batch": batch, "node": node, "files": task["files"], "kept": kept, "skipped": skipped,
              "stems": stem_counts,
              "splits": {s: {k: v for k, v in info.items() if k != "shards"} for s, info in splits.items()},
              "seconds": round(time.perf_counter() - started, 2)}
    path = _record_path(out_dir, batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".partial").write_text(json.dumps(record))
    path.with_suffix(".partial").rename(path)  # the batch counts as done only now
    return {"batch": batch, "kept": len(kept), "skipped": len(skipped)}


def render_midi_collection(midi_dir: str | Path, out_dir: str | Path, config: Config, *,
                           soundfonts: Sequence[str | Path] = (), seed: int = 0, vary_programs: bool = True,
                           files_per_batch: int = 16, max_seconds: float | None = 300.0) -> dict[str, Any]:
    """Render every MIDI file under ``midi_dir`` into shards in ``out_dir`` on the current (or a
    local) Ray cluster; writes and returns ``manifest.json``."""
    import ray

    from bassray.data.shards import MANIFEST_NAME, SPLITS, write_manifest
    from bassray.data.synth import read_soundfont
    from bassray.distributed.runner import ensure_ray
    files = find_midi_files(midi_dir)
    fonts = [str(Path(s).resolve()) for s in soundfonts]
    for font in fonts:
        read_soundfont(font)  # a missing SoundFont fails here, before any task starts
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # the collection is complete again only at the end
    batches = [files[i:i + files_per_batch] for i in range(0, len(files), files_per_batch)]
    tasks, done = [], 0
    for index, batch_files in enumerate(batches):
        record = _record_path(out, index)
        if record.exists() and json.loads(record.read_text()).get("files") == batch_files:
            done += 1
            continue
        tasks.append({"batch": index, "files": batch_files, "midi_dir": str(Path(midi_dir).resolve()),
                      "out_dir": str(out), "config": config.to_dict(), "soundfonts": fonts, "seed": seed,
                      "vary_programs": vary_programs, "max_seconds": max_seconds})
    for stale in (out / RECORDS).glob("batch-*.json") if (out / RECORDS).exists() else []:
        if int(stale.stem.split("-")[1]) >= len(batches):  # a batch the collection no longer has
            stale.unlink()
    log.info("render: %d MIDI files in %d batches; %d already rendered, %d to render", len(files), len(batches),
             done, len(tasks))
    started = time.perf_counter()
    if tasks:
        ensure_ray()
        # One task per batch, one CPU each; Ray Data shows the progress and spreads them over the cluster.
        rows = [{"task": json.dumps(t)} for t in tasks]  # as JSON: Arrow need not type the config's fields
        ray.data.from_items(rows, override_num_blocks=len(rows)).map(
            lambda row: render_batch(json.loads(row["task"])), num_cpus=1).take_all()
    records = [json.loads(_record_path(out, i).read_text()) for i in range(len(batches))]
    splits = {s: {"tracks": sum(r["splits"][s]["tracks"] for r in records),
                  "segments": sum(r["splits"][s]["segments"] for r in records),
                  "hours": sum(r["splits"][s]["hours"] for r in records),
                  "shards": sorted(p.name for p in out.glob(f"{s}-*.tar"))} for s in SPLITS}
    stems: dict[str, int] = {}
    for r in records:
        for name, n in r["stems"].items():
            stems[name] = stems.get(name, 0) + n
    skipped = [s for r in records for s in r["skipped"]]
    manifest = {
        "kind": "audio", "layout": "midi", "source": str(Path(midi_dir).resolve()), "seed": seed,
        "soundfonts": fonts or ["TimGM6mb.sf2 (pretty_midi)"], "vary_programs": vary_programs,
        "sample_rate": config.audio.sample_rate, "channels": config.audio.channels,
        "target_stem": config.data.target_stem, "segment_seconds": config.data.segment_seconds,
        "counts": {"tracks_in": len(files), "tracks_kept": len(files) - len(skipped), "tracks_skipped": len(skipped),
                   "segments": sum(s["segments"] for s in splits.values()),
                   "hours": {name: s["hours"] for name, s in splits.items()},
                   "batches": len(batches), "batches_rendered_now": len(tasks)},
        "nodes": sorted({r.get("node", "") for r in records} - {""}),
        "stems": dict(sorted(stems.items())), "splits": splits,
        "shards": {name: s["shards"] for name, s in splits.items()},
        "skipped": skipped, "skipped_count": len(skipped),
        "timing": {"wall_seconds": round(time.perf_counter() - started, 2),
                   "task_seconds": round(sum(r["seconds"] for r in records if r["batch"] in
                                             {t["batch"] for t in tasks}), 2)},
    }
    write_manifest(out, manifest)
    log.info("render: %d kept, %d skipped; %d segments; manifest %s", manifest["counts"]["tracks_kept"],
             len(skipped), manifest["counts"]["segments"], out / MANIFEST_NAME)
    return manifest
