"""Stage 2: train the conditional latent diffusion model on Ray Train + DeepSpeed.

    ray job submit --working-dir . -- python jobs/train_ldm.py --latents /data/latents \
        --mix-bundle ~/bassray/bundles/autoencoder-mix-paper --target-bundle ~/bassray/bundles/autoencoder-bass-paper \
        --config paper-pitch --num-workers 4 --use-gpu

Re-running with the same --run-name resumes. The self-contained bundle (U-Net EMA weights, latent
statistics, both autoencoders) goes to <root>/bundles/<run-name> and is registered in MLflow as
bassray-diffusion, tagged with the autoencoder versions it belongs to.
"""
from __future__ import annotations

import argparse

from _common import add_common_args, setup_logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latents", required=True, help="folder written by jobs/encode_latents.py")
    parser.add_argument("--mix-bundle", required=True)
    parser.add_argument("--target-bundle", required=True)
    parser.add_argument("--eval-shards", default=None,
                        help="audio shards with chords: evaluations log generated chord-tone agreement")
    add_common_args(parser)
    args = parser.parse_args()
    setup_logging()

    from bassray.config import load_config
    from bassray.distributed.train_ldm import train_ldm

    config = load_config(args.config, args.overrides)
    result = train_ldm(config, args.latents, args.mix_bundle, args.target_bundle,
                       num_workers=args.num_workers, use_gpu=args.use_gpu or None,
                       run_name=args.run_name, root=args.root, seed=args.seed,
                       eval_data_dir=args.eval_shards)
    print(f"bundle: {result.bundle_dir}\ncheckpoint: {result.checkpoint_path}\n"
          f"mlflow run: {result.mlflow_run_id} (model version {result.model_version})")


if __name__ == "__main__":
    main()
