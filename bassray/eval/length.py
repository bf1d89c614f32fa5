"""Length generalisation: does the bass stay as good towards the end of a mix longer than anything
the diffusion model was trained on? Held-out songs are composed and rendered fresh (from song
indices far beyond any training set's), generated whole at 1x, 2x and 4x the training crop, and
each crop-length segment of the result is scored on its own: musical fit against that segment's
chords, and FAD against the pooled true segments. DPB attention is meant to keep late segments as
good as early ones. Plain functions; no Ray.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

HELD_OUT_INDEX = 10**6  # song indices from here on are never in a synthetic training set


def long_songs(config, count: int, seconds: float, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` fresh synthetic songs of ``seconds``: mix (all stems but the target), target, truth."""
    from bassray.audio import conform
    from bassray.data.synth import indexed_song, read_soundfont, render_song
    soundfont = read_soundfont(None)
    rate, channels, target = config.audio.sample_rate, config.audio.channels, config.data.target_stem
    songs = []
    for i in range(count):
        song = indexed_song(seed, HELD_OUT_INDEX + i, seconds)
        stems, _ = render_song(song, soundfont, rate, channels)
        others = [conform(a, rate, rate, channels) for name, a in stems.items() if name != target]
        songs.append({"key": f"long-{i:03d}", "mix": np.sum(others, axis=0).astype(np.float32),
                      "target": stems[target], "truth": song.ground_truth()})
    return songs


def length_generalisation(generator, songs: list[dict[str, Any]], crop_frames: int, embedding, *,
                          multiples: Sequence[int] = (1, 2, 4), steps: int, cfg_weight: float,
                          rescale_phi: float, seed: int = 0, mapper=map, harmony: float | None = None
                          ) -> dict[str, Any]:
    """Per multiple m: generate each song's first m crops at once, then per segment k < m the mean
    chord-tone / root agreement over songs and the FAD of segment k against all true segments;
    decoded with the snap width ``harmony`` (None: the bundle's) and, where it is on, also without
    it (the ``_no_snap`` fields)."""
    from bassray.data.compose import cut_ground_truth
    from bassray.eval.fad import fad_from_stats
    from bassray.eval.sweeps import embed_clips, fits, generate_both_ways, snap_width
    from bassray.inference import GenerationSettings
    rate = generator.config.audio.sample_rate
    crop = crop_frames * generator.target_ae.hop_samples
    longest = max(multiples)
    if any(s["mix"].shape[-1] < longest * crop for s in songs):
        raise ValueError(f"songs must last {longest * crop / rate:.1f} s for {longest}x the crop")
    true_segments = [s["target"][:, k * crop:(k + 1) * crop] for s in songs for k in range(longest)]
    true_stats = embed_clips(embedding, true_segments, rate)
    width = snap_width(generator, harmony)
    out: dict[str, Any] = {"crop_seconds": crop / rate, "songs": len(songs), "embedding": embedding.name,
                           "harmony": width, "multiples": {}}
    for m in multiples:
        settings = [GenerationSettings(steps=steps, cfg_weight=cfg_weight, rescale_phi=rescale_phi, seed=seed + i,
                                       harmony=width) for i in range(len(songs))]
        made = generate_both_ways(generator, [s["mix"][:, :m * crop] for s in songs], settings)
        segments = []
        for k in range(m):
            segment: dict[str, Any] = {"segment": k, "start_s": k * crop / rate}
            truths = [cut_ground_truth(s["truth"], k * crop / rate, (k + 1) * crop / rate) for s in songs]
            for suffix, basses in zip(("", "_no_snap"), made):
                if basses is None:
                    continue
                clips = [b[:, k * crop:(k + 1) * crop] for b in basses]
                scores = fits(clips, rate, truths, mapper)
                fad = fad_from_stats(embed_clips(embedding, clips, rate), true_stats, embedding.name)
                segment.update({f"fad{suffix}": fad.fad,
                                f"chord_tone{suffix}": float(np.nanmean([f["chord_tone"] for f in scores])),
                                f"root{suffix}": float(np.nanmean([f["root"] for f in scores]))})
            segments.append(segment)
            log.info("length %dx segment %d: chord-tone %.2f, FAD %.3f", m, k, segment["chord_tone"], segment["fad"])
        out["multiples"][str(m)] = segments
    truths = [cut_ground_truth(s["truth"], k * crop / rate, (k + 1) * crop / rate) for s in songs for k in range(longest)]
    out["true_chord_tone"] = float(np.nanmean([f["chord_tone"] for f in fits(true_segments, rate, truths, mapper)]))
    return out


def length_table(result: dict[str, Any]) -> str:
    """Markdown: one row per (multiple, segment)."""
    lines = [f"{result['songs']} fresh songs; segments of {result['crop_seconds']:.1f} s (the training crop); "
             f"FAD ({result['embedding']}) against all true segments; true bass chord-tone "
             f"{result['true_chord_tone']:.2f}.", "",
             "| generated at | segment | starts at | chord-tone | root | FAD | chord-tone without the snap |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for m, segments in result["multiples"].items():
        for s in segments:
            raw = f"{s['chord_tone_no_snap']:.2f}" if "chord_tone_no_snap" in s else "–"
            lines.append(f"| {m}x | {s['segment'] + 1} | {s['start_s']:.1f} s | {s['chord_tone']:.2f} | "
                         f"{s['root']:.2f} | {s['fad']:.3f} | {raw} |")
    return "\n".join(lines)


def dump(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, default=float)
