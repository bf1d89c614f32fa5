"""The autoscaler under a real training job, on one machine: a fake-multinode cluster from
cluster/local-fake-autoscaling.yaml (head with no CPUs, token authentication on). A diffusion job
that needs two worker nodes makes the autoscaler add them; it finishes; the idle nodes are removed.
Node counts come from Ray's state API, sampled while it runs."""
from __future__ import annotations

import secrets
import threading
import time

import pytest
import yaml

from bassray.config import load_config
from ray_cluster import (REPO, LocalRayNode, alive_nodes, cluster_env, free_port, submit_job,
                         wait_for_nodes, write_tiny_ldm_inputs)

pytestmark = pytest.mark.slow


def test_training_job_scales_the_cluster_up_and_back_down(tmp_path):
    # Token auth as in production: the head, the nodes the autoscaler starts and every client
    # (job submission, state API) share one token.
    env = cluster_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_FAKE_CLUSTER="1",
                      AUTOSCALER_UPDATE_INTERVAL_S="1")
    config = yaml.safe_load((REPO / "cluster" / "local-fake-autoscaling.yaml").read_text())
    config["idle_timeout_minutes"] = 0.25  # this copy only: a quicker scale-down keeps the test short
    idle_s = config["idle_timeout_minutes"] * 60
    gcs_port = free_port()
    config["provider"]["gcs_address"] = f"127.0.0.1:{gcs_port}"
    autoscaling = tmp_path / "autoscaling.yaml"
    autoscaling.write_text(yaml.safe_dump(config))
    latents, mix_bundle, target_bundle = write_tiny_ldm_inputs(tmp_path, load_config("tiny"))
    head = LocalRayNode(num_cpus=0, env=env, gcs_port=gcs_port,
                        extra_args=(f"--autoscaling-config={autoscaling}",))
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                samples.append((time.monotonic(), len(alive_nodes(head.job_address, env))))
            except Exception:  # the state API can time out on a busy machine; take the next sample
                pass
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        assert len(wait_for_nodes(head.job_address, env, 1)) == 1  # the head alone
        sampler.start()
        # Two workers of 0.75 CPU, spread: each needs a 1-CPU node of its own, and none exists yet.
        done = submit_job(head.job_address, env, [
            "jobs/train_ldm.py", "--latents", str(latents), "--mix-bundle", str(mix_bundle),
            "--target-bundle", str(target_bundle), "--root", str(tmp_path / "home"), "--run-name", "scaled",
            "--num-workers", "2", "--set", "distributed.placement_strategy=SPREAD",
            "--set", "distributed.cpus_per_worker=0.75", "--set", "distributed.data_cpus_per_task=0.25",
            "--set", "diffusion_training.max_steps=4", "--set", "diffusion_training.crop_frames=8",
            "--set", "diffusion_training.batch_size=4", "--set", "diffusion_training.checkpoint_every=2",
            "--set", "diffusion_training.eval_every=100"], timeout=600,
            # Fake nodes share the head's runtime-env folder on this one machine, and a node's agent
            # removing its copy of a --working-dir package pulled the driver's cwd away (MLflow
            # then failed in os.getcwd()). Separate machines share nothing, so this is fake-only.
            working_dir=False)
        finished = time.monotonic()
        assert "succeeded" in done.stdout + done.stderr, done.stdout[-3000:] + done.stderr[-2000:]
        deadline = finished + idle_s + 120
        while time.monotonic() < deadline and (not samples or samples[-1][0] < finished or samples[-1][1] > 1):
            time.sleep(1)
    finally:
        stop.set()
        if sampler.is_alive():
            sampler.join(timeout=30)
        head.stop()
    during = [n for t, n in samples if t <= finished]
    after = [n for t, n in samples if t > finished]
    assert max(during) >= 3, samples  # the head + two worker nodes the job asked for
    assert after and after[-1] == 1, samples  # idle nodes removed after idle_timeout_minutes
