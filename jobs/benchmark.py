"""Throughput benchmarks, one subcommand each; figures are printed plainly for the README.

    python jobs/benchmark.py data --config tiny --seconds 20
    ray job submit --working-dir . -- python jobs/benchmark.py data --data s3://bucket/shards

To add one, write a module with a docstring, ``add_arguments(parser)`` and ``run(args)`` (heavy
imports inside ``run``) and list it in BENCHMARKS.
"""
from __future__ import annotations

import argparse
import importlib

from _common import setup_logging

# Subcommand -> module holding add_arguments(parser) and run(args).
BENCHMARKS = {
    "data": "bassray.distributed.data_benchmark",
    "autoencoder": "bassray.bench.autoencoder",
    "serve": "bassray.serving.bench",
    "uploads": "bassray.serving.upload_bench",
    "generate": "bassray.bench.generate",
    "train-step": "bassray.bench.train_step",
    "render": "bassray.bench.render",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subcommands = parser.add_subparsers(dest="benchmark", required=True)
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        sub = subcommands.add_parser(name, help=(module.__doc__ or name).strip().splitlines()[0],
                                     description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    args = parser.parse_args()
    setup_logging()
    args.run(args)


if __name__ == "__main__":
    main()
