"""Encode audio shards into latent shards with both autoencoder bundles (Ray Data actor pool).

    ray job submit --working-dir . -- python jobs/encode_latents.py --data /data/shards \
        --mix-bundle ~/bassray/bundles/autoencoder-mix-paper --target-bundle ~/bassray/bundles/autoencoder-bass-paper \
        --out /data/latents --use-gpu

Writes <out>/<split>/*.tar and <out>/latent_stats.json; re-running overwrites.
"""
from __future__ import annotations

import argparse

from _common import setup_logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder (or URI) of audio shards; several joined by commas")
    parser.add_argument("--out", required=True, help="folder for latent shards")
    parser.add_argument("--mix-bundle", required=True)
    parser.add_argument("--target-bundle", required=True)
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--max-actors", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    setup_logging()

    from bassray.distributed.encode_latents import encode_latents
    from bassray.bundles.files import load_bundle_state

    config = load_bundle_state(args.target_bundle).config
    summary = encode_latents(config, args.data, args.out, args.mix_bundle, args.target_bundle,
                             use_gpu=args.use_gpu, max_actors=args.max_actors, seed=args.seed)
    print(summary)


if __name__ == "__main__":
    main()
