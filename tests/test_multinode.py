"""Both training stages through `ray job submit` on a real two-node Ray cluster on this machine
(a head and one more node, 1 CPU each, on 127.0.0.1): two Ray Train workers, one on each node."""
from __future__ import annotations

import mlflow
import pytest

from bassray.config import load_config
from bassray.data.shards import write_shards
from bassray.data.sine_stems import sine_segments
from ray_cluster import LocalRayNode, cluster_env, submit_job, wait_for_nodes, write_tiny_ldm_inputs

pytestmark = pytest.mark.slow
# One worker per node: SPREAD placement; 0.5 CPU per worker leaves each node room for the
# quarter-CPU Ray Data tasks that feed them.
TWO_NODES = ["--num-workers", "2", "--set", "distributed.placement_strategy=SPREAD",
             "--set", "distributed.cpus_per_worker=0.5", "--set", "distributed.data_cpus_per_task=0.25"]


@pytest.fixture(scope="module")
def two_nodes():
    env = cluster_env()
    nodes = []
    try:
        nodes.append(LocalRayNode(num_cpus=1, env=env))
        nodes.append(LocalRayNode(num_cpus=1, env=env, head_gcs=nodes[0].gcs_address))
        alive = wait_for_nodes(nodes[0].job_address, env, 2)
        assert len(alive) == 2, alive
        yield nodes[0], env, {n["node_id"] for n in alive}
    finally:
        for node in reversed(nodes):
            node.stop()


def worker_nodes(root, run_name: str) -> list[str]:
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()],
                               f"attributes.run_name = '{run_name}'")
    return run.data.params["worker_node_ids"].split(",")


def test_diffusion_job_trains_on_both_nodes(two_nodes, tmp_path):
    head, env, node_ids = two_nodes
    latents, mix_bundle, target_bundle = write_tiny_ldm_inputs(tmp_path, load_config("tiny"))
    root = tmp_path / "home"
    done = submit_job(head.job_address, env, [
        "jobs/train_ldm.py", "--latents", str(latents), "--mix-bundle", str(mix_bundle),
        "--target-bundle", str(target_bundle), "--root", str(root), "--run-name", "two-nodes", *TWO_NODES,
        "--set", "diffusion_training.max_steps=4", "--set", "diffusion_training.crop_frames=8",
        "--set", "diffusion_training.batch_size=4", "--set", "diffusion_training.checkpoint_every=2",
        "--set", "diffusion_training.eval_every=100", "--set", "diffusion_training.log_every=1"], timeout=600)
    assert done.returncode == 0 and "succeeded" in done.stdout + done.stderr, done.stdout[-3000:] + done.stderr[-2000:]
    ranks = worker_nodes(root, "two-nodes")
    assert len(ranks) == 2 and set(ranks) == node_ids  # one worker on each node
    assert (root / "bundles" / "two-nodes" / "bundle.json").exists()


def test_autoencoder_job_trains_on_both_nodes(two_nodes, tmp_path):
    head, env, node_ids = two_nodes
    config = load_config("tiny")
    shards = tmp_path / "shards"
    write_shards(sine_segments(6, 4.0, config.audio.sample_rate, config.audio.channels, seed=1), shards,
                 shard_target_mb=0.2, val_fraction=0.2, test_fraction=0.0, split_seed=0)
    root = tmp_path / "home"
    done = submit_job(head.job_address, env, [
        "jobs/train_autoencoder.py", "--stem", "bass", "--data", str(shards), "--root", str(root),
        "--run-name", "two-nodes-ae", *TWO_NODES, "--set", "autoencoder_training.max_steps=2",
        "--set", "autoencoder_training.batch_size=2", "--set", "autoencoder_training.checkpoint_every=2",
        "--set", "autoencoder_training.eval_every=100"], timeout=600)
    assert done.returncode == 0 and "succeeded" in done.stdout + done.stderr, done.stdout[-3000:] + done.stderr[-2000:]
    ranks = worker_nodes(root, "two-nodes-ae")
    assert len(ranks) == 2 and set(ranks) == node_ids
    assert (root / "bundles" / "two-nodes-ae" / "bundle.json").exists()
