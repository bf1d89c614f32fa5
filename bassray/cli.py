"""The ``bassray`` command. Each subcommand parses its arguments and calls one library function;
heavy imports happen inside the handlers so ``bassray --help`` stays fast."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny", help="preset name (tiny, paper) or YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field, e.g. --set data.crop_seconds=2.0 (repeatable)")


def _config(args):
    from bassray.config import load_config
    return load_config(args.config, args.overrides)


def cmd_data_synth(args) -> int:
    from bassray.data.synth import synthesize_dataset
    manifest = synthesize_dataset(args.out_dir, num_songs=args.songs, config=_config(args),
                                  seed=args.seed, soundfont=args.soundfont,
                                  song_seconds=args.seconds)
    print(json.dumps({k: manifest[k] for k in ("splits",) if k in manifest}, indent=2))
    return 0


def cmd_data_ingest(args) -> int:
    from bassray.data.ingest import ingest
    manifest = ingest(args.src, args.out_dir, layout=args.layout, config=_config(args))
    print(json.dumps({k: manifest.get(k) for k in ("splits", "skipped_count")}, indent=2))
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
    _add_config(p)
    p.set_defaults(func=cmd_data_synth)

    p = data.add_parser("ingest", help="turn a folder of multitrack stems into shards")
    p.add_argument("src", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--layout", choices=["musdb", "slakh", "folders"], required=True)
    _add_config(p)
    p.set_defaults(func=cmd_data_ingest)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        logging.getLogger("bassray").error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
