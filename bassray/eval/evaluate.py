"""What ``bassray evaluate`` computes: bass lines generated for held-out songs, scored for musical fit.

Every held-out song is scored five ways against its own ground truth, so each figure stands beside
its ceiling and its floors: the true bass (ceiling), the bass autoencoder's reconstruction of it,
the generated bass (conditional), the unconditional model's bass (null mix), and another song's
true bass (chance). :class:`SongScorer` is a plain callable that bassray/distributed/evaluate.py
runs in a Ray Data actor pool; :func:`summarise` gives ``report.json``'s figures, and
bassray/eval/fit_report.py writes them as Markdown. No Ray here.
"""
from __future__ import annotations

import json
import logging
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

# "generated_no_snap" (the same samples decoded without the harmony snap: the network alone) is
# scored only where the bundle's harmony snap is on.
# "beat_grid" is no audio: quarter notes at the song's tempo, scored for rhythm only
# (articulation.beat_grid_scores), the rhythm a bassist who only keeps the beat would get;
# "mix_onsets" the mix's own onsets, the rhythm of a bassist who attacks whenever the band does.
KINDS = ("true", "reconstruction", "generated", "generated_no_snap", "unconditional", "other_song", "beat_grid",
         "mix_onsets")
# Headline figures placed between floor (another song's bass) and ceiling (the true bass).
FLOOR_TO_CEILING = ("chord_tone_coverage", "chord_tone", "onset_f1", "sounding_iou", "pitch_change_f1")


CHORD_SOURCES = ("auto", "annotated", "estimated")


def held_out_songs(data_dir: str | Path, splits: Sequence[str], target: str, limit: int | None = None,
                   chords: str = "auto") -> list[dict[str, Any]]:
    """Held-out segments with a target stem and other stems: key, mix, target, truth; each row also
    carries the next song's target as its chance floor (cut or zero-padded to length).

    ``chords``: ``annotated`` keeps only songs whose JSON carries chords; ``estimated`` estimates
    them from the mix for every song (:mod:`bassray.eval.chords`); ``auto`` uses the annotations
    where a song has them and estimates the rest. Each truth says which in ``chord_source``."""
    from bassray.data.shards import iter_segments, list_shards
    from bassray.eval.chords import estimate_chords
    if chords not in CHORD_SOURCES:
        raise ValueError(f"chords={chords!r}: choose from {', '.join(CHORD_SOURCES)}")
    rows: list[dict[str, Any]] = []
    for split in splits:
        try:
            paths = list_shards(data_dir, split)
        except FileNotFoundError:
            continue
        for seg in iter_segments(paths):
            others = [a for name, a in seg.stems.items() if name != target]
            annotated = bool(seg.meta.get("chords"))
            if target not in seg.stems or not others or (chords == "annotated" and not annotated):
                continue
            mix = np.sum(others, axis=0).astype(np.float32)
            truth = dict(seg.meta, chord_source="annotated")
            if chords == "estimated" or not annotated:
                truth.update(chords=estimate_chords(mix, seg.sample_rate), chord_source="estimated")
            rows.append({"key": f"{split}-{seg.key}", "sample_rate": seg.sample_rate,
                         "mix": mix, "target": seg.stems[target], "truth": json.dumps(truth)})
            if limit and len(rows) >= limit:
                break
        if limit and len(rows) >= limit:
            break
    if len(rows) < 2:
        raise FileNotFoundError(f"need at least 2 held-out songs with a {target} stem and other stems"
                                f"{' and annotated chords' if chords == 'annotated' else ''} in "
                                f"{list(splits)} of {data_dir}, found {len(rows)}")
    for i, row in enumerate(rows):
        other = rows[(i + 1) % len(rows)]["target"]
        n = row["target"].shape[-1]
        row["other_target"] = np.pad(other[:, :n], ((0, 0), (0, max(0, n - other.shape[-1]))))
    return rows


class TrueBass:
    """A held-out song's true bass, analysed once, that scores any bass line against the song:
    musical fit (:func:`bass_fit`) and articulation against this bass and its ground-truth notes."""

    def __init__(self, audio: np.ndarray, sample_rate: int, truth: dict[str, Any]):
        from bassray.eval.articulation import articulation_features, truth_onsets
        from bassray.eval.musical_fit import track_pitch
        self.audio, self.sample_rate, self.truth = audio, sample_rate, truth
        self.features = articulation_features(audio, sample_rate)
        self.track = track_pitch(audio, sample_rate)
        self.onsets = truth_onsets(truth, self.features.duration)

    def beat_grid_scores(self) -> dict[str, float]:
        """Onset F1 and note rate of quarter notes at the song's tempo against this bass."""
        from bassray.eval.articulation import beat_grid_scores
        return beat_grid_scores(self.truth, self.onsets, self.features.duration)

    def score(self, audio: np.ndarray, track=None) -> dict[str, float]:
        """Every metric of ``audio`` (``track``: its pYIN track, where the caller has it)."""
        from bassray.eval.articulation import articulation_features, articulation_scores
        from bassray.eval.musical_fit import bass_fit, track_pitch
        is_self = audio is self.audio
        track = self.track if is_self else (track or track_pitch(audio, self.sample_rate))
        line = self.features if is_self else articulation_features(audio, self.sample_rate)
        return {**bass_fit(audio, self.sample_rate, self.truth, track=track),
                **articulation_scores(line, self.features, self.onsets, track.midi, self.track.midi)}


def true_basses(songs: Sequence[dict[str, Any]]) -> list[TrueBass]:
    """The :class:`TrueBass` of each ``held_out_songs`` row."""
    return [TrueBass(s["target"], int(s["sample_rate"]), json.loads(s["truth"])) for s in songs]


def mean_scores(basses: Sequence[np.ndarray], truths: Sequence[TrueBass]) -> dict[str, float]:
    """Mean of every metric of one bass line per song against that song's true bass."""
    from bassray.eval.musical_fit import mean_metrics
    return mean_metrics([truth.score(b) for b, truth in zip(basses, truths)])


def song_seed(seed: int, key: str) -> int:
    """The sampling seed of one held-out song: the run's ``seed`` mixed with a stable hash of the key."""
    return (seed * 1_000_003 + zlib.crc32(key.encode())) % 2**31


class SongScorer:
    """Ray Data actor: loads the diffusion bundle once, then for a batch of songs generates
    (conditional, also without the harmony snap where it is on, and unconditional), reconstructs,
    writes audio and scores every kind."""

    def __init__(self, bundle_dir: str, audio_dir: str, steps: int | None, seed: int, harmony: float | None = None):
        import torch
        torch.set_num_threads(1)
        from bassray.inference import BassGenerator
        self.generator = BassGenerator.from_bundle(bundle_dir)
        # The caller's snap width, else the bundle's; it travels in each request's settings.
        self.harmony = self.generator.config.sampler.harmony_snap if harmony is None else float(harmony)
        self.steps = steps or self.generator.config.sampler.steps_for()
        self.seed = seed
        self.audio_dir = Path(audio_dir)
        self.audio_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from bassray.audio import write_audio
        from bassray.eval.articulation import mix_onset_scores
        from bassray.eval.musical_fit import reconstruction_fidelity, track_pitch
        from bassray.inference import GenerationSettings, decode_chunked, encode_chunked
        sampler = self.generator.config.sampler
        mixes = list(batch["mix"])
        # Each song's noise comes from its key, so a song gets the same sample whatever batch it lands in.
        seeds = [song_seed(self.seed, str(key)) for key in batch["key"]]
        def settings(weight: float, phi: float, harmony: float, temperature: float | None = None) -> list:
            return [GenerationSettings(steps=self.steps, cfg_weight=weight, rescale_phi=phi, seed=seed,
                                       harmony=harmony, temperature=temperature) for seed in seeds]
        made = {}
        conditional = settings(sampler.cfg_weight, sampler.rescale_phi, self.harmony)
        if self.harmony > 0 and self.generator.can_snap_to_harmony:  # the same samples, both ways
            made["generated"], made["generated_no_snap"] = self.generator.generate_with_and_without_snap(
                mixes, conditional)
        else:
            made["generated"] = self.generator.generate(mixes, conditional)
        # The unconditional floor must not hear the mix: no snap, and no rescale (which scales the
        # output by the conditional estimate's spread); and it is the model's own prior, at temperature 1.
        made["unconditional"] = self.generator.generate(mixes, settings(0.0, 0.0, 0.0, 1.0))
        results = []
        for i, key in enumerate(batch["key"]):
            rate, truth = int(batch["sample_rate"][i]), json.loads(str(batch["truth"][i]))
            target = batch["target"][i]
            with torch.no_grad():
                x = torch.from_numpy(np.ascontiguousarray(target))[None]
                ae = self.generator.target_ae
                recon = decode_chunked(ae, encode_chunked(ae, x))[0, :, : target.shape[-1]].numpy()
            audio = {"true": target, "reconstruction": recon, "other_song": batch["other_target"][i],
                     "mix": batch["mix"][i], **{kind: made[kind][i] for kind in made}}
            true = TrueBass(target, rate, truth)
            row: dict[str, Any] = {"key": str(key), "true_onsets": [] if true.onsets is None else true.onsets.tolist(),
                                   "chord_source": truth.get("chord_source", "annotated")}
            pattern = (truth.get("patterns") or {}).get("bass")
            if pattern:  # synthetic songs say what the bass plays: the report breaks the scores down by it
                row["bass_pattern"] = str(pattern)
            if truth.get("tempo"):  # and by the song's tempo
                row["tempo_bpm"] = float(truth["tempo"])
            tracks = {"true": true.track}  # pYIN is most of the scoring time: the fidelity reuses these
            for kind, wav in audio.items():
                write_audio(self.audio_dir / f"{key}.{kind}.wav", wav, rate)
                if kind != "mix":
                    tracks[kind] = true.track if kind == "true" else track_pitch(wav, rate)
                    row[kind] = true.score(wav, track=tracks[kind])
            row["beat_grid"] = true.beat_grid_scores()
            row["mix_onsets"] = mix_onset_scores(batch["mix"][i], rate, true.onsets)
            row["fidelity"] = reconstruction_fidelity(target, recon, rate,
                                                      tracks=(tracks["true"], tracks["reconstruction"]))
            results.append(json.dumps(row, default=float))
        return {"result": np.array(results, dtype=object)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over songs per kind, the generated bass's place between floor and ceiling, and its
    level against the true bass."""
    from bassray.eval.articulation import floor_to_ceiling
    from bassray.eval.musical_fit import mean_metrics
    report: dict[str, Any] = {"songs": len(rows),
                              "kinds": {k: mean_metrics([r[k] for r in rows]) for k in KINDS if k in rows[0]},
                              "reconstruction_fidelity": mean_metrics([r["fidelity"] for r in rows])}
    kinds = report["kinds"]
    for kind in ("generated", "generated_no_snap", "reconstruction", "unconditional"):
        if kind not in kinds:
            continue
        report[f"{kind}_floor_to_ceiling"] = {
            metric: floor_to_ceiling(kinds[kind].get(metric, 0.0), kinds["other_song"].get(metric, 0.0),
                                     kinds["true"].get(metric, 0.0)) for metric in FLOOR_TO_CEILING}
    ceiling = kinds["true"].get("chord_tone", 0.0)
    report["reconstruction_share_of_ceiling"] = (kinds["reconstruction"].get("chord_tone", 0.0) / ceiling
                                                 if ceiling else float("nan"))
    sources = [r.get("chord_source", "annotated") for r in rows]
    report["chord_sources"] = {source: sources.count(source) for source in sorted(set(sources))}
    levels = [r["generated"]["level_db"] - r["true"]["level_db"] for r in rows]
    report["generated_level_minus_true_db"] = float(np.mean(levels))
    return report


FAD_KINDS = ("other_songs", "reconstruction", "generated", "generated_no_snap", "unconditional")


def training_basses(data_dir: str | Path, target: str, count: int) -> list[np.ndarray]:
    """The target stems of up to ``count`` train-split segments: FAD's reference for a real bass
    that ignores the mix. (Another held-out song's bass will not do: over all songs those are the
    true basses re-ordered, the same set, FAD 0.)"""
    from bassray.data.shards import iter_segments, list_shards
    clips: list[np.ndarray] = []
    try:
        paths = list_shards(data_dir, "train")
    except FileNotFoundError:
        return clips
    for seg in iter_segments(paths):
        if target in seg.stems:
            clips.append(seg.stems[target])
        if len(clips) >= count:
            break
    return clips


def fad_against_true(out: Path, keys: list[str], embedding_name: str = "chroma-mfcc",
                     weights: str | None = None, reference: list[np.ndarray] | None = None,
                     reference_rate: int | None = None) -> dict[str, dict[str, Any]]:
    """FAD of each kind's clips (the audio written under ``out/audio``) against the true basses,
    and of ``reference`` clips (see :func:`training_basses`) when given."""
    from bassray.audio import conform, read_audio
    from bassray.eval.fad import fad_from_stats, gaussian_stats, load_embedding
    embedding = load_embedding(embedding_name, weights)

    def stats(kind: str):
        clips = []
        for key in keys:
            wav, rate = read_audio(out / "audio" / f"{key}.{kind}.wav")
            clips.append(embedding(conform(wav, rate, embedding.sample_rate, 1)))
        return gaussian_stats(clips)

    true = stats("true")
    results = {}
    for kind in FAD_KINDS:
        if kind == "other_songs":
            if not reference:
                continue
            kind_stats = gaussian_stats(embedding(conform(c, reference_rate, embedding.sample_rate, 1))
                                        for c in reference)
        elif not (out / "audio" / f"{keys[0]}.{kind}.wav").exists():
            continue  # generated_no_snap: only where the harmony snap is on
        else:
            kind_stats = stats(kind)
        r = fad_from_stats(kind_stats, true, embedding.name)
        results[kind] = {"fad": r.fad, "embedding": r.embedding, "clips": r.clips_a, "frames": r.frames_a,
                         "true_clips": r.clips_b, "true_frames": r.frames_b}
    return results


def write_spectrograms(out: Path, keys: list[str], onsets: dict[str, list[float]] | None = None) -> list[str]:
    """One PNG per song: CQT of the mix, true, reconstructed and generated bass (and the network
    alone, without the harmony snap, where written), on one time axis in seconds, with the true
    bass's note onsets (``onsets`` per key) marked on every panel (relative paths)."""
    import librosa
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bassray.audio import read_audio
    names = []
    for key in keys:
        kinds = [k for k in ("mix", "true", "reconstruction", "generated", "generated_no_snap")
                 if (out / "audio" / f"{key}.{k}.wav").exists()]
        fig, axes = plt.subplots(len(kinds), 1, figsize=(12, 1.8 * len(kinds)), sharex=True, squeeze=False)
        for ax, kind in zip(axes[:, 0], kinds):
            wav, rate = read_audio(out / "audio" / f"{key}.{kind}.wav")
            mono = librosa.resample(wav.mean(0), orig_sr=rate, target_sr=16000)
            cqt = np.abs(librosa.cqt(mono, sr=16000, hop_length=256, fmin=librosa.note_to_hz("C1"),
                                     n_bins=60, bins_per_octave=12))
            ax.imshow(librosa.amplitude_to_db(cqt, ref=np.max), origin="lower", aspect="auto", vmin=-60,
                      extent=(0.0, mono.shape[0] / 16000, 0, cqt.shape[0]))
            for t in (onsets or {}).get(key, []):
                ax.axvline(t, color="white", linewidth=0.6, alpha=0.5, linestyle=":")
            ax.set_ylabel(kind.replace("_", " "))
        axes[0, 0].set_title(f"{key}: CQT from C1, one semitone per row; dotted: the true bass's note onsets")
        axes[-1, 0].set_xlabel("seconds")
        fig.tight_layout()
        name = f"{key}.spectrogram.png"
        fig.savefig(out / name, dpi=70)
        plt.close(fig)
        names.append(name)
    return names
