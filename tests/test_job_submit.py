"""`ray job submit --working-dir . -- python jobs/train_autoencoder.py ...` against a local head node
that this test starts (and stops by its process group, never with `ray stop`)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bassray.config import load_config
from bassray.data.shards import write_shards
from bassray.data.sine_stems import sine_segments

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def head_node():
    # Not the address of a Ray this test process may already run (another test's session).
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_NAMESPACE")}
    env["RAY_AUTH_MODE"] = "disabled"
    # Short: Ray's Unix sockets live under the temp dir and socket paths are limited to ~107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="bassray-ray-", dir="/tmp")
    gcs, dashboard = free_port(), free_port()
    # Every agent port our own too: with Ray's defaults (52365 ...) a second Ray on the machine, such
    # as a running quickstart, keeps this head's job agent from starting ("No available agent").
    agent_ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                   f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
    ray_bin = Path(sys.executable).with_name("ray")
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2",
         f"--temp-dir={temp_dir}", *agent_ports],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        for _ in range(120):
            try:
                with socket.create_connection(("127.0.0.1", dashboard), timeout=1):
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the local Ray head did not open its dashboard port")
        yield address, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # our head and everything it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_train_autoencoder_through_ray_job_submit(head_node, tmp_path):
    address, env = head_node
    config = load_config("tiny")
    shards = tmp_path / "shards"
    write_shards(sine_segments(6, 4.0, config.audio.sample_rate, config.audio.channels, seed=1), shards,
                 shard_target_mb=0.2, val_fraction=0.2, test_fraction=0.0, split_seed=0)
    root = tmp_path / "home"
    cmd = [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", address,
           "--working-dir", str(REPO), "--", sys.executable, "jobs/train_autoencoder.py", "--stem", "bass",
           "--data", str(shards), "--root", str(root), "--run-name", "submitted",
           "--set", "autoencoder_training.max_steps=2", "--set", "autoencoder_training.batch_size=2",
           "--set", "autoencoder_training.checkpoint_every=2"]
    for _ in range(60):  # the dashboard answers before its job agent is ready on a busy machine
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent" not in done.stderr + done.stdout:
            break
        time.sleep(5)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in (done.stdout + done.stderr)
    assert (root / "bundles" / "submitted" / "bundle.json").exists()
    assert (root / "mlflow.db").exists()
