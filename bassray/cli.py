"""The ``bassray`` command. Each subcommand parses its arguments and calls one library function;
heavy imports happen inside the handlers so ``bassray --help`` stays fast."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from bassray.sampler_names import SAMPLERS


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny", help="preset name (tiny, small, paper, paper-pitch) or YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field, e.g. --set data.crop_seconds=2.0 (repeatable)")


def _config(args):
    from bassray.config import load_config
    return load_config(args.config, args.overrides)


def cmd_data_synth(args) -> int:
    from bassray.data.synth import synthesize_dataset
    manifest = synthesize_dataset(args.out_dir, num_songs=args.songs, config=_config(args),
                                  seed=args.seed, soundfont=args.soundfont,
                                  song_seconds=args.seconds, texture=args.texture)
    print(json.dumps({k: manifest[k] for k in ("splits",) if k in manifest}, indent=2))
    return 0


def cmd_data_ingest(args) -> int:
    from bassray.data.ingest import ingest
    manifest = ingest(args.src, args.out_dir, layout=args.layout, config=_config(args))
    print(json.dumps({k: manifest.get(k) for k in ("splits", "skipped_count")}, indent=2))
    return 0


def cmd_data_render(args) -> int:
    from bassray.distributed.render_midi import render_midi_collection
    manifest = render_midi_collection(args.midi_dir, args.out_dir, _config(args), soundfonts=args.soundfont,
                                      seed=args.seed, vary_programs=not args.same_programs,
                                      files_per_batch=args.files_per_batch, max_seconds=args.max_seconds)
    print(json.dumps({"counts": manifest["counts"], "stems": manifest["stems"],
                      "skipped": manifest["skipped"][:20]}, indent=2))
    return 0


def cmd_data_corpus(args) -> int:
    from bassray.data.music21_corpus import export_corpus
    progress = lambda i, n, name: (i % 10 == 0 or i == n) and logging.getLogger("bassray").info(  # noqa: E731
        "corpus: %d/%d works (%s)", i, n, name)
    summary = export_corpus(args.out_dir, works_per_composer=args.works_per_composer, test_works=args.test_works,
                            val_works=args.val_works, seed=args.seed, composers=args.composer or None,
                            progress=progress)
    print(json.dumps({k: summary[k] for k in ("files", "composers", "seconds")} |
                     {"skipped": len(summary["skipped"])}, indent=2))
    return 0


def cmd_export(args) -> int:
    from bassray.bundles.export import export_checkpoint
    print(export_checkpoint(args.checkpoint, args.output))
    return 0


def cmd_reconstruct(args) -> int:
    """Round-trip a file through an autoencoder bundle (encode, decode)."""
    import torch

    from bassray.audio import load_audio, write_audio
    from bassray.inference import decode_chunked, encode_chunked
    from bassray.bundles.files import load_autoencoder
    autoencoder = load_autoencoder(args.bundle)
    audio = load_audio(args.input, autoencoder.sample_rate, autoencoder.channels)
    with torch.no_grad():
        latent = encode_chunked(autoencoder, torch.from_numpy(audio)[None])
        recon = decode_chunked(autoencoder, latent)[0, :, : audio.shape[-1]]
    write_audio(args.output, recon, autoencoder.sample_rate)
    print(f"{args.output}: latent {tuple(latent.shape[1:])} -> {recon.shape[-1]} samples "
          f"at {autoencoder.sample_rate} Hz")
    return 0


def cmd_generate(args) -> int:
    from bassray.generate import generate_command
    return generate_command(args)


def cmd_quickstart(args) -> int:
    from bassray.home import bassray_home
    from bassray.quickstart import quiet_console, quiet_ray_data
    home = bassray_home(args.root)
    if not args.verbose:
        quiet_ray_data(home / "logs")
    from bassray.quickstart import run_quickstart
    log_file = quiet_console(home, verbose=args.verbose)
    summary = run_quickstart(_config(args), root=args.root, songs=args.songs, seed=args.seed,
                             num_workers=args.num_workers, corpus=args.corpus)
    tables = summary.pop("tables")
    print("\n" + tables)
    width = max(len(k) for k in summary)
    print("\nbassray quickstart finished. Where things are:")
    for key, value in {**summary, "log": str(log_file)}.items():
        print(f"  {key:<{width}}  {value}")
    return 0


def _numbers(text: str, kind=float) -> tuple:
    return tuple(kind(v) for v in text.split(",") if v.strip())


def cmd_evaluate(args) -> int:
    from bassray.distributed.evaluate import evaluate
    from bassray.eval.fit_report import articulation_table, chord_sources_words, fad_table, fit_table, headline
    from bassray.eval.sections import ExperimentOptions
    options = ExperimentOptions(
        steps_grid=_numbers(args.steps_grid, int), samplers=tuple(v.strip() for v in args.samplers.split(",")),
        guidance_weights=_numbers(args.weights),
        rescale_phis=_numbers(args.phis), fit_songs=args.fit_songs, matching_songs=args.matching_songs,
        length_songs=args.length_songs, length_multiples=_numbers(args.length_multiples, int),
        fad_embedding=args.fad_embedding, fad_weights=args.fad_weights, contrastive=args.contrastive,
        seed=args.seed)
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    report = evaluate(args.bundle, args.shards, args.out, splits=args.split.split(","), songs=args.songs,
                      steps=args.steps, seed=args.seed, actors=args.actors, only=only, options=options,
                      harmony=args.harmony, chords=args.chords)
    if "per_song" in report and (only is None or "fit" in only):
        print(fit_table(report) + "\n\n" + articulation_table(report))
        print(f"\nchords: {chord_sources_words(report.get('chord_sources', {}))}")
        print(f"\n{headline(report)}; reconstruction pitch accuracy "
              f"{report['reconstruction_fidelity'].get('pitch_accuracy', float('nan')):.2f}")
        if report.get("fad"):
            print("\n" + fad_table(report["fad"]))
    for name in ("fad_steps", "fad_guidance"):
        if name in report and (only is None or name.replace("_", "-") in only):
            best = min(report[name]["points"], key=lambda p: p["fad"])
            print(f"{name}: lowest FAD {best['fad']:.3f} at {best['sampler']} steps={best['steps']} "
                  f"w={best['cfg_weight']} phi={best['rescale_phi']} ({name}.png)")
    if "matching" in report and (only is None or "matching" in only):
        print("matching top-1: " + ", ".join(f"{k} {v:.2f}" for k, v in report["matching"]["top1"].items())
              + f" (chance {report['matching']['chance']:.2f})")
    if "style" in report and (only is None or "style" in only):
        from bassray.eval.style import style_table
        print(style_table(report["style"]))
    if "length" in report and (only is None or "length" in only):
        from bassray.eval.length import length_table
        print(length_table(report["length"]))
    for section, why in report.get("skipped", {}).items():
        print(f"not in this report: {section} ({why['reason']}); to add it: {why['command']}")
    print(f"report: {args.out}/report.md, report.html and report.json")
    return 0


def cmd_serve(args) -> int:
    from bassray.distributed.tracking import default_tracking_uri
    from bassray.home import bassray_home
    from bassray.serving.launch import serve_forever
    from bassray.serving.access import is_loopback
    home = bassray_home(args.root)
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(home)
    app_args = {"device": args.device, "precision": args.precision, "max_batch_size": args.max_batch_size,
                "max_upload_mb": args.max_upload_mb,
                "max_seconds": args.max_seconds, "generation_timeout_s": args.generation_timeout,
                "api_keys_file": args.api_keys_file, "rate_limit_per_minute": args.rate_limit,
                # Beyond this machine, keys are required (the app refuses to start without them).
                "require_api_key": not is_loopback(args.host)}
    serve_forever(args.source, host=args.host, port=args.port, replicas=args.replicas,
                  app_args={k: v for k, v in app_args.items() if v is not None},
                  tracking_uri=tracking_uri, cache_dir=home / "bundle-cache")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bassray", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="make audio shards").add_subparsers(dest="data_command",
                                                                           required=True)
    p = data.add_parser("synth", help="compose and render synthetic multitrack songs into shards")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--songs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--soundfont", type=Path, default=None,
                   help="a General MIDI .sf2 (default: TimGM6mb.sf2 from pretty_midi's wheel)")
    p.add_argument("--seconds", type=float, default=None, help="song length (default: config)")
    from bassray.data.synth import TEXTURES
    p.add_argument("--texture", choices=TEXTURES, default="band",
                   help="band: drums, bass, comping and lead; ensemble: no drums, chords attacked with a "
                        "legato bass (hymns, chamber music)")
    _add_config(p)
    p.set_defaults(func=cmd_data_synth)

    p = data.add_parser("ingest", help="turn a folder of multitrack stems into shards")
    p.add_argument("src", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--layout", choices=["musdb", "slakh", "folders"], required=True)
    _add_config(p)
    p.set_defaults(func=cmd_data_ingest)

    p = data.add_parser("render", help="render a folder of MIDI files into shards (Ray Data; resumes)")
    p.add_argument("midi_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--soundfont", action="append", default=[], metavar="SF2",
                   help="General MIDI SoundFont (repeatable: each file takes one; default pretty_midi's TimGM6mb)")
    p.add_argument("--seed", type=int, default=0, help="seeds the program variation and SoundFont choice")
    p.add_argument("--same-programs", action="store_true", help="keep each track's program (no variation)")
    p.add_argument("--files-per-batch", type=int, default=16, help="files per Ray task (and per shard batch)")
    p.add_argument("--max-seconds", type=float, default=300.0, help="cut longer files")
    _add_config(p)
    p.set_defaults(func=cmd_data_render)

    p = data.add_parser("corpus", help="write music21's multi-part works as MIDI files for `data render` "
                                       "(splits by composer; J. S. Bach held out as the test set)")
    p.add_argument("out_dir", type=Path, help="MIDI folder to write ({split}/{composer}/{work}.mid)")
    p.add_argument("--works-per-composer", type=int, default=40, help="training works drawn per composer")
    p.add_argument("--test-works", type=int, default=32, help="J. S. Bach works drawn for the test split")
    p.add_argument("--val-works", type=int, default=16, help="validation composers' works drawn")
    p.add_argument("--composer", action="append", default=[], help="only these corpus folders (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data_corpus)

    p = sub.add_parser("export", help="turn a training checkpoint into a bundle")
    p.add_argument("checkpoint", type=Path,
                   help="a checkpoint_* folder, or a run folder (its newest checkpoint is taken)")
    p.add_argument("-o", "--output", type=Path, required=True, help="bundle folder to write")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("reconstruct", help="round-trip audio through an autoencoder bundle")
    p.add_argument("bundle", type=Path)
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("generate", help="generate a bass line for a mix")
    p.add_argument("mix", type=Path, help="audio file of the mix (wav, flac, ogg, mp3)")
    p.add_argument("-o", "--output", type=Path, required=True, help="where to write the bass (.wav/.flac)")
    p.add_argument("--bundle", default=None,
                   help="diffusion bundle folder or URI (s3://...; default: the newest under $BASSRAY_HOME)")
    p.add_argument("--style", type=Path, default=None, help="reference bass recording for its timbre")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: config, 64 in paper)")
    p.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help="ddim (the paper's) or dpmpp-2m (DPM-Solver++(2M)); default: the bundle's config")
    p.add_argument("--cfg", type=float, default=None, help="classifier-free guidance weight")
    p.add_argument("--rescale", type=float, default=None, help="CFG rescale phi in [0, 1]")
    p.add_argument("--harmony", type=float, default=None,
                   help="harmony snap width in fifths (0 = off): a note may move one step round the circle of "
                        "fifths to a pitch class the mix plays; default: the bundle's config")
    p.add_argument("--temperature", type=float, default=None,
                   help="scale of the starting noise (1 = the model's own; lower keeps nearer the lines the "
                        "model finds likeliest); default: the bundle's config")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1, help="variations (seed, seed+1, ...)")
    p.add_argument("--with-mix", type=Path, default=None, help="also write mix + generated bass here")
    p.add_argument("--midi", type=Path, default=None,
                   help="also write the bass line's notes as a MIDI file (pYIN f0 + onsets; one bass track)")
    p.add_argument("--model-level", action="store_true",
                   help="keep the model's own output level instead of the training collection's "
                        "median bass-to-mix level")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="the U-Net's float type: auto = bf16 where the device runs it natively "
                        "(AVX512-BF16/AMX CPUs, CUDA compute capability 8.0+), else fp32")
    p.add_argument("--bf16", action="store_true", help="the same as --precision bf16")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("evaluate", help="score generated bass lines for held-out songs (musical fit)")
    p.add_argument("bundle", help="diffusion bundle folder")
    p.add_argument("shards", help="audio shards with ground truth (e.g. from bassray data synth)")
    p.add_argument("--split", default="test", help="held-out split(s), comma-separated (default test)")
    p.add_argument("--songs", type=int, default=None, help="at most this many songs (default all)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the bundle's config)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--actors", type=int, default=2, help="Ray Data actors that score songs in parallel")
    p.add_argument("--harmony", type=float, default=None,
                   help="harmony snap width in fifths (0 = off; default: the bundle's config)")
    p.add_argument("--out", type=Path, required=True, help="folder for report.md/.html/.json, plots, audio")
    p.add_argument("--only", default=None, help="comma-separated sections: fit, fad-steps, fad-guidance, "
                   "matching, style, length (default all; matching only with --contrastive); sections run "
                   "alone merge into an existing report.json")
    p.add_argument("--chords", choices=["auto", "annotated", "estimated"], default="auto",
                   help="chords to score against: the songs' annotations where they have them, else estimated "
                        "from the mix (auto); annotations only; or estimated for every song")
    p.add_argument("--contrastive", default=None, help="contrastive bundle (jobs/train_contrastive.py): "
                   "matching, and style distances in its bass space")
    p.add_argument("--fad-embedding", default="chroma-mfcc",
                   help="chroma-mfcc (no weights), contrastive, vggish, panns or clap")
    p.add_argument("--fad-weights", default=None, help="weights file of a pretrained FAD embedding "
                   "(default for contrastive: --contrastive)")
    p.add_argument("--steps-grid", default="4,8,16,32,64,128", help="sampler steps of the fad-steps sweep")
    p.add_argument("--samplers", default=",".join(SAMPLERS), help="samplers the fad-steps sweep compares")
    p.add_argument("--weights", default="1,1.5,2,3,5", help="guidance weights w of the fad-guidance sweep")
    p.add_argument("--phis", default="0,0.5,0.7,1", help="rescale factors phi of the fad-guidance sweep")
    p.add_argument("--fit-songs", type=int, default=12, help="songs pYIN-scored per sweep point")
    p.add_argument("--matching-songs", type=int, default=25)
    p.add_argument("--length-songs", type=int, default=8, help="fresh songs for length generalisation")
    p.add_argument("--length-multiples", default="1,2,4", help="mix lengths in training crops")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("serve", help="serve a model over HTTP (Ray Serve; Ctrl-C stops it)")
    p.add_argument("source", help="diffusion bundle folder, bundle URI (s3://...), or a registry model "
                                  "models:/NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--replicas", type=int, default=1, help="generator replicas")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto = bf16 where the device runs it natively, else fp32 (/info says which)")
    p.add_argument("--api-keys-file", default=None,
                   help="file of API keys, one `name:secret` per line (default $BASSRAY_API_KEYS_FILE); "
                        "required when --host is not 127.0.0.1")
    p.add_argument("--rate-limit", type=int, default=None, help="requests a minute per key (default: none)")
    p.add_argument("--max-upload-mb", type=float, default=None, help="per request (default 50)")
    p.add_argument("--max-seconds", type=float, default=None, help="per file (default 600)")
    p.add_argument("--generation-timeout", type=float, default=None, help="seconds (default 300), then 504")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking server for models:/ (default $MLFLOW_TRACKING_URI or the local store)")
    p.add_argument("--root", default=None, help="where downloaded bundles are cached (default $BASSRAY_HOME)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("quickstart", help="every stage end to end on local Ray with synthetic songs")
    p.add_argument("--root", default=None, help="output folder (default $BASSRAY_HOME or ~/bassray)")
    p.add_argument("--songs", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=1)
    from bassray.quickstart import CORPORA
    p.add_argument("--corpus", choices=CORPORA, default=None,
                   help="also train on real compositions (music21's corpus; J. S. Bach held out) and "
                        "score held-out real works")
    _add_config(p)
    p.set_defaults(func=cmd_quickstart)
    return parser


def main(argv: list[str] | None = None) -> int:
    from bassray.audio import AudioReadError
    from bassray.bundles.files import BundleError
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, AudioReadError, BundleError) as exc:
        logging.getLogger("bassray").error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
