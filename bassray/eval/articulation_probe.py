"""Where does a generated bass line's articulation go wrong: in the network's latents, or in what
the decoder makes of them? (plain PyTorch + numpy; no Ray).

For held-out songs it decodes and scores (bassray/eval/evaluate.py's ``TrueBass``) latents that
swap parts between the true bass's latent and the generated one:

- ``reconstruction``: the true latent (the autoencoder's ceiling);
- ``true + noise s``: the true latent plus Gaussian noise of std ``s`` (normalised units): how the
  decoder copes with latents slightly off its training distribution;
- ``generated``: the diffusion model's sample (no harmony snap);
- ``generated, true pitch code`` / ``true, generated pitch code``: one part swapped in from the
  other, so that a fault follows the part that carries it; likewise the rhythm code where the
  latent carries one;
- ``generated, time-smoothed learnt channels``: the learnt channels low-passed over latent frames.

Where the latent carries a rhythm code, it also scores the code's onset peaks against the true
notes, before any decoding. It also prints each latent's roughness: the mean squared frame-to-frame change of the learnt
channels over their variance (0 for a constant, 2 for white noise).

    python -m bassray.eval.articulation_probe DIFFUSION_BUNDLE SHARDS [--songs 12] [--split test,val]
        [--tempo-below BPM]

``--tempo-below`` probes only songs slower than BPM (their data must give a tempo), where the
generated line overplays most (docs/articulation.md).
"""
from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Callable

import numpy as np
import torch

log = logging.getLogger(__name__)

COLUMNS = ("chord_tone_coverage", "onset_f1", "note_rate", "sounding_iou", "harmonic_share", "onsets")


def roughness(latent: torch.Tensor) -> float:
    """Mean squared frame-to-frame change over the channel variance of ``[B, D, L]``."""
    diff = latent[..., 1:] - latent[..., :-1]
    return float(diff.square().mean() / latent.var(dim=-1).mean().clamp_min(1e-9))


def median_pitch(latent: torch.Tensor, parts: int, width: int) -> torch.Tensor:
    """``latent [B, D, L]`` (raw, not normalised) with its pitch track median-filtered over ``width``
    quarter frames (:func:`bassray.models.harmonic_phase.median_pitch_code`)."""
    from bassray.models.harmonic_phase import code_of_latent, latent_with_code, median_pitch_code
    return latent_with_code(latent, median_pitch_code(code_of_latent(latent, parts), width), parts)


def _smooth(latent: torch.Tensor, frames: int = 3) -> torch.Tensor:
    return torch.nn.functional.avg_pool1d(latent, frames, stride=1, padding=frames // 2, count_include_pad=False)


def code_onset_scores(latent: torch.Tensor, layout, parts: int, part_seconds: float,
                      truth_onsets: np.ndarray | None, threshold: float = 0.3) -> dict[str, float]:
    """Onset F1 and note rate of the peaks (above ``threshold``) of a raw latent's rhythm-code onset
    channels against the true note onsets: how well the code itself, before any decoding, says
    when notes start."""
    from bassray.eval.articulation import onset_scores
    onset = latent[0, layout.rhythm_slice][parts:2 * parts].T.reshape(-1).numpy()  # part by part over time
    peaks = [j for j in range(len(onset)) if onset[j] > threshold
             and onset[j] >= onset[max(j - 1, 0)] and onset[j] >= onset[min(j + 1, len(onset) - 1)]]
    return onset_scores((np.array(peaks, float) + 0.5) * part_seconds, truth_onsets)


def probe(bundle_dir: str, data_dir: str, splits: tuple[str, ...] = ("test", "val"), songs: int = 12,
          steps: int | None = None, cfg_weight: float | None = None, seed: int = 0,
          tempo_below: float | None = None) -> dict[str, Any]:
    from bassray.eval.evaluate import TrueBass, held_out_songs
    from bassray.eval.musical_fit import mean_metrics
    from bassray.inference import BassGenerator, encode_chunked
    generator = BassGenerator.from_bundle(bundle_dir)
    config = generator.config
    if tempo_below is None:
        rows = held_out_songs(data_dir, splits, config.data.target_stem, songs)
    else:
        rows = [row for row in held_out_songs(data_dir, splits, config.data.target_stem)
                if float(json.loads(row["truth"]).get("tempo") or np.inf) < tempo_below][:songs]
        if not rows:
            raise ValueError(f"no held-out song in {data_dir} ({', '.join(splits)}) has a tempo below "
                             f"{tempo_below} bpm: raise --tempo-below, or leave it out to probe every song")
    from bassray.models.latent_layout import LatentLayout
    layout = LatentLayout.of(config.bass_autoencoder)
    learnt, code = layout.learnt_slice, layout.pitch_slice

    def swap(base: torch.Tensor, donor: torch.Tensor, part: slice) -> torch.Tensor:
        out = base.clone()
        out[:, part] = donor[:, part]
        return out

    rng = torch.Generator().manual_seed(seed)
    variants: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "reconstruction": lambda true, gen: true,
        **{f"true + noise {s}": (lambda true, gen, s=s: true + s * torch.randn(true.shape, generator=rng))
           for s in (0.1, 0.25, 0.5)},
        "generated": lambda true, gen: gen,
        "generated, true pitch code": lambda true, gen: swap(gen, true, code),
        "true, generated pitch code": lambda true, gen: swap(true, gen, code),
        "generated, time-smoothed learnt channels": lambda true, gen: swap(gen, _smooth(gen), learnt),
    }
    raw = lambda z: z * generator._tgt_std + generator._tgt_mean  # noqa: E731
    norm = lambda z: (z - generator._tgt_mean) / generator._tgt_std  # noqa: E731
    if layout.rhythm:
        from bassray.models.rhythm_code import plucked_rhythm_code
        rhythm, rparts = layout.rhythm_slice, generator.target_ae.rhythm_parts
        variants["generated, true rhythm code"] = lambda true, gen: swap(gen, true, rhythm)
        variants["true, generated rhythm code"] = lambda true, gen: swap(true, gen, rhythm)

        def plucked(latent: torch.Tensor, threshold: float) -> torch.Tensor:
            z = raw(latent)
            z[:, rhythm] = plucked_rhythm_code(z[:, rhythm], rparts, threshold)
            return norm(z)
        variants["reconstruction, plucked rhythm code 0.3"] = lambda true, gen: plucked(true, 0.3)
        for threshold in (0.3, 1.0):
            variants[f"generated, plucked rhythm code {threshold}"] = (
                lambda true, gen, t=threshold: plucked(gen, t))
        if layout.pitch and generator.target_ae.pitch_parts == rparts:
            from bassray.models.harmonic_phase import code_of_latent, held_pitch_code, latent_with_code
            from bassray.models.rhythm_code import code_attacks

            def held(latent: torch.Tensor, threshold: float, median: int) -> torch.Tensor:
                z = median_pitch(raw(latent), rparts, median)
                pitch = held_pitch_code(code_of_latent(z, rparts), code_attacks(z[:, rhythm], rparts, threshold))
                return norm(latent_with_code(z, pitch, rparts))
            variants["reconstruction, pitch held between attacks 0.3"] = lambda true, gen: held(true, 0.3, 1)
            for threshold in (0.3, 1.0):
                variants[f"generated, pitch held between attacks {threshold}"] = (
                    lambda true, gen, t=threshold: held(gen, t, 1))
            variants["generated, median 5, pitch held between attacks 0.3"] = lambda true, gen: held(gen, 0.3, 5)
    if layout.pitch:
        parts = generator.target_ae.pitch_parts
        variants["generated, pitch median of 5 parts"] = lambda true, gen: norm(median_pitch(raw(gen), parts, 5))
    scores: dict[str, list[dict[str, float]]] = {name: [] for name in ["true bass", *variants]}
    rough: dict[str, list[float]] = {"true": [], "generated": []}
    code_scores: dict[str, list[dict[str, float]]] = {"true": [], "generated": []}
    steps = steps or config.sampler.steps_for()
    weight = config.sampler.cfg_weight if cfg_weight is None else cfg_weight
    for i, row in enumerate(rows):
        rate, target = int(row["sample_rate"]), row["target"]
        true_bass = TrueBass(target, rate, json.loads(row["truth"]))
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(target))[None]
            true = (encode_chunked(generator.target_ae, x) - generator._tgt_mean) / generator._tgt_std
            cond = generator.encode_mix(row["mix"])[None]
            gen = generator.sample_latents(cond, steps=steps, cfg_weight=[weight], rescale_phi=[0.0],
                                           seeds=[seed + i])
        n = min(true.shape[-1], gen.shape[-1])
        true, gen = true[..., :n], gen[..., :n]
        rough["true"].append(roughness(true[:, learnt]))
        rough["generated"].append(roughness(gen[:, learnt]))
        scores["true bass"].append(true_bass.score(target))
        if layout.rhythm:
            part_s = generator.target_ae.hop_samples / rate / generator.target_ae.rhythm_parts
            for name, z in (("true", true), ("generated", gen)):
                unnormalised = z * generator._tgt_std + generator._tgt_mean
                code_scores[name].append(code_onset_scores(unnormalised, layout, generator.target_ae.rhythm_parts,
                                                           part_s, true_bass.onsets))
        for name, make in variants.items():
            audio = generator.decode_target(make(true, gen), length=target.shape[-1])[0]
            scores[name].append(true_bass.score(generator.match_level(audio, row["mix"])))
        log.info("probe: song %d/%d", i + 1, len(rows))
    return {"songs": len(rows), "steps": steps, "cfg_weight": weight, "tempo_below": tempo_below,
            "roughness": {k: float(np.mean(v)) for k, v in rough.items()},
            "rhythm_code_onsets": {k: mean_metrics(v) for k, v in code_scores.items() if v},
            "variants": {name: mean_metrics(s) for name, s in scores.items()}}


def probe_table(result: dict[str, Any]) -> str:
    slower = f" below {result['tempo_below']:g} bpm" if result.get("tempo_below") else ""
    lines = [f"{result['songs']} songs{slower}, {result['steps']} steps, w = {result['cfg_weight']}; learnt-channel "
             f"roughness true {result['roughness']['true']:.3f}, generated {result['roughness']['generated']:.3f}",
             "| decoded latent | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for name, values in result["variants"].items():
        lines.append(f"| {name} | " + " | ".join(f"{values.get(c, float('nan')):.2f}" for c in COLUMNS) + " |")
    for name, values in result.get("rhythm_code_onsets", {}).items():
        lines.append(f"{name} latent's rhythm-code onset peaks: onset F1 {values.get('onset_f1', float('nan')):.2f}, "
                     f"note rate {values.get('note_rate', float('nan')):.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("shards")
    parser.add_argument("--songs", type=int, default=12)
    parser.add_argument("--split", default="test,val")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--cfg-weight", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tempo-below", type=float, help="probe only songs slower than this many bpm")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    result = probe(args.bundle, args.shards, tuple(args.split.split(",")), args.songs, args.steps,
                   args.cfg_weight, args.seed, args.tempo_below)
    print(probe_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
