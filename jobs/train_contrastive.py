"""Train the (mix, bass) contrastive model that `bassray evaluate` uses for matching (the paper's
Fig. 3), style distances and a trained FAD embedding, on Ray Train + DeepSpeed:

    ray job submit --working-dir . -- python jobs/train_contrastive.py --data ~/bassray/data/synth-tiny

Re-running with the same --run-name resumes. The bundle goes to <root>/bundles/<run-name> and is
registered in MLflow as bassray-contrastive.
"""
from __future__ import annotations

import argparse

from _common import add_common_args, setup_logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder (or URI) of audio shards; several joined by commas")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--checkpoint-every", type=int, default=200)
    add_common_args(parser)
    args = parser.parse_args()
    setup_logging()

    from bassray.config import load_config
    from bassray.distributed.train_contrastive import train_contrastive

    result = train_contrastive(load_config(args.config, args.overrides), args.data, max_steps=args.steps,
                               batch_size=args.batch_size, learning_rate=args.learning_rate,
                               checkpoint_every=args.checkpoint_every, num_workers=args.num_workers,
                               use_gpu=args.use_gpu or None, run_name=args.run_name, root=args.root,
                               seed=args.seed)
    print(f"bundle: {result.bundle_dir}\ncheckpoint: {result.checkpoint_path}\n"
          f"mlflow run: {result.mlflow_run_id} (model version {result.model_version})")


if __name__ == "__main__":
    main()
