"""Both training stages through `ray job submit` on a real two-node Ray cluster on this machine
(a head and one more node, 1 CPU each, on 127.0.0.1): two Ray Train workers, one on each node."""
from __future__ import annotations

import mlflow
import pytest

from bassray.config import load_config
from bassray.data.shards import write_shards
from bassray.data.sine_stems import sine_segments
from midi_fixtures import song_midi, write_fixture_folder
from ray_cluster import LocalRayNode, cluster_env, submit_job, wait_for_nodes, write_tiny_ldm_inputs

pytestmark = pytest.mark.slow
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


def test_both_stages_train_on_both_nodes(two_nodes, tmp_path):
    """The diffusion job and the autoencoder job, submitted together (a quarter CPU per worker, so
    both fit the two 1-CPU nodes at once): each ends SUCCEEDED with one worker on each node."""
    head, env, node_ids = two_nodes
    shared = ["--num-workers", "2", "--set", "distributed.placement_strategy=SPREAD",
              "--set", "distributed.cpus_per_worker=0.25", "--set", "distributed.data_cpus_per_task=0.1"]
    latents, mix_bundle, target_bundle = write_tiny_ldm_inputs(tmp_path, load_config("tiny"))
    config = load_config("tiny")
    shards = tmp_path / "shards"
    write_shards(sine_segments(6, 4.0, config.audio.sample_rate, config.audio.channels, seed=1), shards,
                 shard_target_mb=0.2, val_fraction=0.2, test_fraction=0.0, split_seed=0)
    root = tmp_path / "home"
    jobs = {
        "two-nodes": submit_job(head.job_address, env, [
            "jobs/train_ldm.py", "--latents", str(latents), "--mix-bundle", str(mix_bundle),
            "--target-bundle", str(target_bundle), "--root", str(root / "ldm"), "--run-name", "two-nodes",
            *shared, "--set", "diffusion_training.max_steps=4", "--set", "diffusion_training.crop_frames=8",
            "--set", "diffusion_training.batch_size=4", "--set", "diffusion_training.checkpoint_every=2",
            "--set", "diffusion_training.eval_every=100", "--set", "diffusion_training.log_every=1"], wait=False),
        "two-nodes-ae": submit_job(head.job_address, env, [
            "jobs/train_autoencoder.py", "--stem", "bass", "--data", str(shards), "--root", str(root / "ae"),
            "--run-name", "two-nodes-ae", *shared, "--set", "autoencoder_training.max_steps=2",
            "--set", "autoencoder_training.batch_size=2", "--set", "autoencoder_training.checkpoint_every=2",
            "--set", "autoencoder_training.eval_every=100"], wait=False)}
    for run_name, job in jobs.items():
        output, _ = job.communicate(timeout=900)
        assert job.returncode == 0 and "succeeded" in output, output[-4000:]
    for run_name, home in (("two-nodes", root / "ldm"), ("two-nodes-ae", root / "ae")):
        ranks = worker_nodes(home, run_name)
        assert len(ranks) == 2 and set(ranks) == node_ids, run_name  # one worker on each node
        assert (home / "bundles" / run_name / "bundle.json").exists()


def test_midi_render_spreads_over_both_nodes(two_nodes, tmp_path):
    """`bassray data render` submitted as a job: one task per file, on both nodes; bad files are
    skipped and counted as on one node."""
    import json
    head, env, node_ids = two_nodes
    midi = tmp_path / "midi"
    expected = write_fixture_folder(midi)
    for i in range(4):
        song_midi(bars=2 + i % 2).write(str(midi / f"more-{i}.mid"))
    out = tmp_path / "shards"
    done = submit_job(head.job_address, env, [
        "-m", "bassray.cli", "data", "render", str(midi), str(out), "--files-per-batch", "1",
        "--set", "data.segment_seconds=4.0", "--set", "data.crop_seconds=1.0"])
    assert done.returncode == 0 and "succeeded" in done.stdout, (done.stdout + done.stderr)[-4000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["tracks_kept"] == 6
    assert manifest["skipped_count"] == sum(1 for why in expected.values() if why)
    assert set(manifest["nodes"]) == node_ids  # the tasks ran on both nodes
