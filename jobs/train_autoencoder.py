"""Stage 1: train the mix or the bass autoencoder on Ray Train + DeepSpeed.

    ray job submit --working-dir . -- python jobs/train_autoencoder.py --stem mix --data /data/shards --num-workers 2
    python jobs/train_autoencoder.py --stem bass --data ~/bassray/data/synth --config tiny

Re-running with the same --run-name resumes from the last checkpoint. The bundle is exported to
<root>/bundles/<run-name> and registered in MLflow as bassray-<stem>-autoencoder.
"""
from __future__ import annotations

import argparse

from _common import add_common_args, setup_logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stem", required=True, help="'mix' or the target stem (bass)")
    parser.add_argument("--data", required=True, help="folder (or URI) of audio shards; several joined by commas")
    add_common_args(parser)
    args = parser.parse_args()
    setup_logging()

    from bassray.config import load_config
    from bassray.distributed.train_autoencoder import train_autoencoder

    config = load_config(args.config, args.overrides)
    result = train_autoencoder(config, args.stem, args.data, num_workers=args.num_workers,
                               use_gpu=args.use_gpu or None, run_name=args.run_name,
                               root=args.root, seed=args.seed)
    print(f"bundle: {result.bundle_dir}\ncheckpoint: {result.checkpoint_path}\n"
          f"mlflow run: {result.mlflow_run_id} (model version {result.model_version})")


if __name__ == "__main__":
    main()
