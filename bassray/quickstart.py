"""``bassray quickstart``: every stage end to end on local Ray with the local MLflow store —
synthetic songs, shards, both autoencoders, latents, the diffusion model, then bass lines
generated for held-out mixes and scored for musical fit.

``--corpus music21`` adds real compositions: music21's multi-part works rendered like any MIDI
collection and trained on beside the synthetic songs, with J. S. Bach's works (never trained on)
and the validation composers scored in a second report (bassray/data/music21_corpus.py)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from bassray.config import Config

log = logging.getLogger(__name__)


def _listening_example(fit: dict, eval_dir: Path, out_dir: Path) -> tuple[str, dict[str, Path]]:
    """The first scored held-out song as the quickstart's example, from the evaluation's audio (no
    second generation): its mix, generated bass, both together, and the true bass."""
    from bassray.audio import read_audio, write_audio
    key = fit["per_song"][0]["key"]
    audio, rate = {}, 0
    for kind in ("mix", "generated", "true"):
        audio[kind], rate = read_audio(eval_dir / "audio" / f"{key}.{kind}.wav")
    return key, {
        "mix": write_audio(out_dir / "mix.wav", audio["mix"], rate),
        "generated_bass": write_audio(out_dir / "generated_bass.wav", audio["generated"], rate),
        "mix_with_generated_bass": write_audio(out_dir / "mix_with_generated_bass.wav",
                                               audio["mix"] + audio["generated"], rate),
        "original_bass": write_audio(out_dir / "original_bass.wav", audio["true"], rate),
    }


def _reconstruction(bundle_dir: Path, data_dir: Path) -> str:
    """Held-out reconstruction quality, trained vs untrained, as one printable line."""
    from bassray.eval.reconstruction import reconstruction_report
    for split in ("test", "val"):
        try:
            r = reconstruction_report(bundle_dir, data_dir, split=split)
        except FileNotFoundError:
            continue
        return (f"{split} log-mel L1 {r['trained']['log_mel_l1']:.3f} (untrained {r['untrained']['log_mel_l1']:.3f}), "
                f"MSSD {r['trained']['mssd']:.2f} (untrained {r['untrained']['mssd']:.2f}) on {r['crops']} crops")
    return "no held-out split to measure on"


def _tables(fit: dict, conditioning: str | None) -> str:
    from bassray.eval.fit_report import articulation_table, fit_table, headline
    fid = fit["reconstruction_fidelity"]
    return "\n".join([
        f"Musical fit on {fit['songs']} held-out songs (pYIN f0 against each song's chords and bass notes):",
        fit_table(fit), "", "Articulation (onsets against the true bass's notes, sounding frames, noise, register):",
        articulation_table(fit), "", headline(fit),
        f"bass autoencoder: pitch accuracy vs its input {fid.get('pitch_accuracy', float('nan')):.2f} "
        f"(octave errors {fid.get('octave_errors', float('nan')):.2f}), chroma cosine "
        f"{fid.get('chroma_cosine', float('nan')):.2f}; chord-tone agreement "
        f"{fit['reconstruction_share_of_ceiling']:.0%} of the true bass's"] +
        (["", "Diffusion v-loss on held-out latents by condition: " + conditioning] if conditioning else []))


def _conditioning(bundle_dir: Path, latent_dir: Path) -> str:
    """Held-out v-loss with the true, null and a mismatched mix on each held-out split, as one
    printable line; the SE figures are how far each alternative lies above the true mix."""
    from bassray.eval.conditioning import conditioning_report
    lines = []
    for split in ("test", "val"):
        try:
            r = conditioning_report(str(bundle_dir), str(latent_dir), split=split)
        except (FileNotFoundError, ValueError):
            continue
        lines.append(f"{split}: true mix {r['v_loss_true_mix']:.4f}, null {r['v_loss_null_mix']:.4f} "
                     f"({r['z_null']:+.1f} SE), mismatched mix {r['v_loss_mismatched_mix']:.4f} "
                     f"({r['z_mismatched']:+.1f} SE); {r['crops']} crops of {r['tracks']} tracks")
    return " | ".join(lines) or "no held-out latents to measure on"


RAY_DATA_FILE_LOGGING = """\
version: 1
disable_existing_loggers: false
formatters: {ray: {format: "%(asctime)s %(levelname)s %(filename)s:%(lineno)s -- %(message)s"}}
handlers:
  file: {class: ray.data._internal.logging.SessionFileHandler, formatter: ray, filename: ray-data.log}
loggers: {ray.data: {level: INFO, handlers: [file], propagate: false}}
"""


def quiet_ray_data(logs: Path) -> None:
    """Ray Data logs each dataset's plan and finish to the console through its own handler; this
    keeps them in its session log file. Must run before ``ray.data`` is imported."""
    import os
    logs.mkdir(parents=True, exist_ok=True)
    config = logs / "ray-data-logging.yaml"
    config.write_text(RAY_DATA_FILE_LOGGING)
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(config))


def quiet_console(home: Path, verbose: bool = False) -> Path:
    """Console: the quickstart's stage lines and warnings only; everything (Ray, DeepSpeed, every
    bassray logger) also goes to ``$BASSRAY_HOME/logs/quickstart-<time>.log``. Returns that file."""
    import os
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}.log"
    os.environ["BASSRAY_QUIET"] = "1"
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    to_file = logging.FileHandler(log_file)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_console = logging.StreamHandler()
    to_console.setFormatter(logging.Formatter("%(message)s"))
    to_console.addFilter(lambda r: verbose or r.name == __name__ or
                         (r.levelno >= logging.WARNING and r.name.startswith("bassray")))
    root.addHandler(to_file)
    root.addHandler(to_console)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in ("ray", "deepspeed", "mlflow", "alembic", "urllib3"):  # their own handlers print too
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    return log_file


def _musical_fit(bundle_dir: Path, data_dir: Path, out_dir: Path, seed: int) -> dict:
    """The held-out musical-fit report: test songs first, then validation ones, up to 24. (The
    paper's experiments take about as long again: `bassray evaluate` runs them, see the README.)"""
    from bassray.distributed.evaluate import evaluate
    return evaluate(bundle_dir, data_dir, out_dir, splits=("test", "val"), songs=24, seed=seed, only=["fit"])


def _copy_ray_logs(home: Path) -> None:
    import shutil

    from bassray.distributed.runner import ray_session_logs
    source = ray_session_logs()
    if source and source.is_dir():
        shutil.copytree(source, home / "logs" / "ray", dirs_exist_ok=True)


CORPORA = ("music21",)
# The corpus recipe's size: about 200 works of at most 2 minutes (3-4 hours of audio at 16 kHz),
# which music21 parses and Ray renders in about ten minutes on 2 cores.
CORPUS_WORKS_PER_COMPOSER = 40
CORPUS_MAX_SECONDS = 120.0


def _corpus_shards(corpus: str, home: Path, config: Config, seed: int, stage) -> Path:
    """The corpus's works as MIDI (resumable), rendered into shards on Ray Data; returns the shards."""
    from bassray.data.music21_corpus import export_corpus
    from bassray.distributed.render_midi import render_midi_collection
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; known: {', '.join(CORPORA)}")
    midi_dir, shards = home / "data" / f"{corpus}-midi", home / "data" / f"{corpus}-{config.name}"
    stage(f"   writing music21's multi-part works as MIDI into {midi_dir} (J. S. Bach: test only)")
    progress = lambda i, n, name: i % 25 == 0 and log.info("   corpus: %d/%d works (%s)", i, n, name)  # noqa: E731
    export_corpus(midi_dir, works_per_composer=CORPUS_WORKS_PER_COMPOSER, seed=seed, progress=progress)
    stage(f"   rendering them into {shards}")
    manifest = render_midi_collection(midi_dir, shards, config, seed=seed, files_per_batch=8,
                                      max_seconds=CORPUS_MAX_SECONDS)
    log.info("   corpus: %d works kept, %d skipped; hours %s", manifest["counts"]["tracks_kept"],
             manifest["counts"]["tracks_skipped"],
             {k: round(v, 2) for k, v in manifest["counts"]["hours"].items()})
    return shards


def run_quickstart(config: Config, root: str | Path | None = None, songs: int = 160, seed: int = 0,
                   num_workers: int = 1, corpus: str | None = None) -> dict[str, str]:
    from bassray.data.synth import synthesize_dataset
    from bassray.distributed.encode_latents import encode_latents
    from bassray.distributed.runner import bassray_home, ensure_ray
    from bassray.distributed.tracking import default_tracking_uri
    from bassray.distributed.train_autoencoder import train_autoencoder
    from bassray.distributed.train_ldm import train_ldm

    home = bassray_home(root)
    started = time.perf_counter()
    stage = lambda name: log.info("[%5.0fs] %s", time.perf_counter() - started, name)  # noqa: E731
    target = config.data.target_stem
    data_dir = home / "data" / f"synth-{config.name}"
    stage(f"1/6 composing and rendering {songs} synthetic songs into {data_dir}")
    synthesize_dataset(data_dir, num_songs=songs, config=config, seed=seed)
    ensure_ray()
    corpus_dir = _corpus_shards(corpus, home, config, seed, stage) if corpus else None
    # The training jobs read several shard folders given as one comma-joined argument.
    train_data = f"{data_dir},{corpus_dir}" if corpus_dir else data_dir
    stage("2/6 training the mix autoencoder")
    mix = train_autoencoder(config, "mix", train_data, num_workers=num_workers, root=home, seed=seed,
                            run_name=f"quickstart-autoencoder-mix-{config.name}")
    stage(f"3/6 training the {target} autoencoder")
    bass = train_autoencoder(config, target, train_data, num_workers=num_workers, root=home, seed=seed,
                             run_name=f"quickstart-autoencoder-{target}-{config.name}")
    latent_dir = home / "data" / f"latents-{config.name}"
    stage(f"4/6 encoding latents into {latent_dir}")
    encode_latents(config, train_data, latent_dir, mix.bundle_dir, bass.bundle_dir, seed=seed)
    stage("5/6 training the latent diffusion model")
    ldm = train_ldm(config, latent_dir, mix.bundle_dir, bass.bundle_dir, num_workers=num_workers,
                    root=home, seed=seed, run_name=f"quickstart-diffusion-{config.name}",
                    eval_data_dir=data_dir)
    quality = {}
    for name, result in (("mix", mix), (target, bass)):
        quality[name] = _reconstruction(result.bundle_dir, data_dir)
    stage("6/6 generating bass lines for held-out songs and scoring their musical fit")
    fit = _musical_fit(ldm.bundle_dir, data_dir, home / "evaluation", seed)
    key, paths = _listening_example(fit, home / "evaluation", home / "quickstart")
    tables = _tables(fit, _conditioning(ldm.bundle_dir, latent_dir))
    if corpus_dir:
        stage(f"   scoring held-out real works ({corpus}: J. S. Bach, then the validation composers)")
        real = _musical_fit(ldm.bundle_dir, corpus_dir, home / f"evaluation-{corpus}", seed)
        tables += f"\n\nHeld-out real works ({corpus} corpus)\n" + _tables(real, None)
    stage("done")
    _copy_ray_logs(home)
    summary = {"tables": tables}
    summary.update({name: str(p) for name, p in paths.items()})
    for name, report in quality.items():
        summary[f"{name}_autoencoder_reconstruction"] = report
    if corpus_dir:
        summary.update({f"{corpus}_report": str(home / f"evaluation-{corpus}" / "report.md"),
                        f"{corpus}_shards": str(corpus_dir)})
    summary.update({"musical_fit_report": str(home / "evaluation" / "report.md"), "held_out_segment": key,
                    "shards": str(data_dir), "latents": str(latent_dir),
                    "mix_autoencoder_bundle": str(mix.bundle_dir),
                    f"{target}_autoencoder_bundle": str(bass.bundle_dir),
                    "diffusion_bundle": str(ldm.bundle_dir),
                    "mlflow_tracking_uri": default_tracking_uri(home),
                    "mlflow_ui": f"mlflow ui --backend-store-uri {default_tracking_uri(home)}",
                    "minutes": f"{(time.perf_counter() - started) / 60:.1f}"})
    return summary
