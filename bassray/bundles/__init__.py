"""Model bundles: the plain folders (config.json, model.safetensors, statistics) that inference,
serving and evaluation load, how they are written from training checkpoints, and where they are
stored (local folders, remote URIs, the MLflow registry). Plain torch; no Ray or DeepSpeed."""
