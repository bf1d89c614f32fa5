"""The paper's Table 1 on our data: does style grounding move the generated bass towards the timbre
of a reference recording? For each held-out song the reference is another held-out song's true
bass played by a different bass program; the song's bass is generated with and without it, and
measured three ways:

- distance to the reference in the contrastive model's bass space (1 - cosine), when one is given;
- per-channel latent-mean distance: L2 between the time-averaged normalised bass latents (what
  grounding conditions on);
- program recognition: how often a classifier trained on the synthetic songs' bass programs (MFCC
  statistics, logistic regression) names the reference's program from the generated audio.

Baselines: the song's own true bass (another program) for the distances, and chance for the
classifier. Plain functions; no Ray.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)


def timbre_features(audio: np.ndarray, rate: int) -> np.ndarray:
    """MFCC (20) means and standard deviations, and spectral-contrast means (7) of a clip."""
    import librosa
    mono = np.asarray(audio, np.float32)
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono
    mfcc = librosa.feature.mfcc(y=mono, sr=rate, n_mfcc=20)
    contrast = librosa.feature.spectral_contrast(y=mono, sr=rate, fmin=60.0, n_bands=6)
    return np.concatenate([mfcc.mean(1), mfcc.std(1), contrast.mean(1)])


class ProgramClassifier:
    """Which GM bass program (32-39) plays a clip: standardised timbre features, logistic regression."""

    def __init__(self):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))

    def fit(self, clips: Sequence[np.ndarray], programs: Sequence[int], rate: int) -> "ProgramClassifier":
        self.model.fit(np.stack([timbre_features(c, rate) for c in clips]), np.asarray(programs))
        return self

    def predict(self, clips: Sequence[np.ndarray], rate: int) -> np.ndarray:
        return self.model.predict(np.stack([timbre_features(c, rate) for c in clips]))


def program_of(row: dict[str, Any], target: str) -> int:
    return int(json.loads(row["truth"])["programs"][target])


def training_clips(data_dir: str, target: str, limit: int = 400) -> tuple[list[np.ndarray], list[int], int]:
    """True target stems and their programs from the train split (for the classifier)."""
    from bassray.data.shards import iter_segments, list_shards
    clips, programs, rate = [], [], 0
    for seg in iter_segments(list_shards(data_dir, "train")):
        if target in seg.stems and "programs" in seg.meta and target in seg.meta["programs"]:
            clips.append(seg.stems[target])
            programs.append(int(seg.meta["programs"][target]))
            rate = seg.sample_rate
        if len(clips) >= limit:
            break
    return clips, programs, rate


def references(rows: list[dict[str, Any]], target: str) -> list[int]:
    """For each row, the index of the next row whose bass program differs (itself if none does)."""
    out = []
    for i, row in enumerate(rows):
        own = program_of(row, target)
        order = [(i + k) % len(rows) for k in range(1, len(rows))]
        out.append(next((j for j in order if program_of(rows[j], target) != own), i))
    return out


def style_grounding(generator, rows: list[dict[str, Any]], classifier: ProgramClassifier, *,
                    contrastive=None, steps: int, cfg_weight: float, rescale_phi: float, seed: int = 0,
                    harmony: float | None = None) -> dict[str, Any]:
    """Table 1 (see the module doc) over held-out ``rows`` (mix, target, truth), decoded with the
    snap width ``harmony`` (None: the bundle's) and, where it is on, also without it."""
    import torch

    from bassray.eval.evaluate import song_seed
    from bassray.eval.sweeps import generate_both_ways, snap_width
    from bassray.inference import GenerationSettings
    target = generator.config.data.target_stem
    rate = generator.config.audio.sample_rate
    refs = references(rows, target)
    ref_audio = [rows[j]["target"] for j in refs]
    mixes = [r["mix"] for r in rows]
    made = {}
    width = snap_width(generator, harmony)
    for kind, styles in (("grounded", ref_audio), ("ungrounded", [None] * len(rows))):
        made[kind], unsnapped = generate_both_ways(generator, mixes, [GenerationSettings(
            steps=steps, cfg_weight=cfg_weight, rescale_phi=rescale_phi, seed=song_seed(seed, r["key"]),
            style_audio=s, harmony=width) for r, s in zip(rows, styles)])
        if unsnapped is not None:
            made[f"{kind}, without the harmony snap"] = unsnapped
    made["true bass (another program)"] = [r["target"] for r in rows]
    ref_programs = np.array([program_of(rows[j], target) for j in refs])
    ref_means = torch.stack([generator.style_mean(a) for a in ref_audio])
    ref_embed = _bass_embedding(contrastive, ref_audio)
    table: dict[str, dict[str, float]] = {}
    for kind, audio in made.items():
        means = torch.stack([generator.style_mean(a) for a in audio])
        entry = {"latent_mean_distance": float((means - ref_means).norm(dim=1).mean()),
                 "program_is_reference": float((classifier.predict(audio, rate) == ref_programs).mean())}
        if ref_embed is not None:
            entry["contrastive_distance"] = float((1 - (_bass_embedding(contrastive, audio) * ref_embed).sum(1)).mean())
        table[kind] = entry
    held_out_programs = np.array([program_of(r, target) for r in rows])
    return {"songs": len(rows), "table": table, "harmony": width,
            "classifier_accuracy_on_true": float((classifier.predict(made["true bass (another program)"], rate)
                                                  == held_out_programs).mean()),
            "chance": float(np.max(np.bincount(held_out_programs)) / len(rows)),
            "distinct_reference": float(np.mean([j != i for i, j in enumerate(refs)]))}


def _bass_embedding(contrastive, clips: list[np.ndarray]):
    """One unit contrastive bass embedding per clip (as matching uses), or None without a model."""
    if contrastive is None:
        return None
    from bassray.eval.matching import clip_embeddings
    window = int(contrastive.cfg.crop_seconds * contrastive.cfg.sample_rate)
    return clip_embeddings(contrastive.embed_bass, clips, window).numpy()


def style_table(result: dict[str, Any]) -> str:
    columns = [c for c in ("contrastive_distance", "latent_mean_distance", "program_is_reference")
               if c in next(iter(result["table"].values()))]
    lines = ["| bass vs the style reference | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for kind, entry in result["table"].items():
        lines.append(f"| {kind} | " + " | ".join(f"{entry[c]:.3f}" for c in columns) + " |")
    lines += ["", f"{result['songs']} held-out songs, each grounded on another song's bass of a different program. "
              f"The program classifier names the true bass's program on {result['classifier_accuracy_on_true']:.0%} "
              f"of held-out songs (most frequent program: {result['chance']:.0%})."]
    return "\n".join(lines)
