"""Argument helpers shared by the job entrypoints (kept tiny: jobs only wire things together)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# `ray job submit --working-dir .` runs jobs from the repo root without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny", help="preset (tiny, paper) or a YAML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set autoencoder_training.max_steps=50")
    parser.add_argument("--num-workers", type=int, default=None, help="Ray Train workers")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--run-name", default=None, help="re-run with the same name to resume")
    parser.add_argument("--root", default=None,
                        help="where runs, bundles and the local MLflow store live "
                             "(default $BASSRAY_HOME or ~/bassray)")
    parser.add_argument("--seed", type=int, default=0)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
