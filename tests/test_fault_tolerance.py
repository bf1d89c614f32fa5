"""A training worker killed with SIGKILL (as a lost node would take it) in the middle of a tiny
diffusion job submitted to a real Ray cluster: Ray Train restarts the worker group, the run resumes
from its last checkpoint and reaches its planned step count. Once mid-step, once while a checkpoint
is being written."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest

from bassray.config import load_config
from bassray.distributed.runner import STAGING_PREFIX
from ray_cluster import LocalRayNode, cluster_env, submit_job, write_tiny_ldm_inputs

pytestmark = pytest.mark.slow
STEPS, EVERY = 40, 10  # planned steps; checkpoint interval N (a kill may cost at most N steps)


@pytest.fixture(scope="module")
def head():
    env = cluster_env()
    node = LocalRayNode(num_cpus=2, env=env)
    try:
        yield node, env
    finally:
        node.stop()


def train_workers(job_address: str, env: dict[str, str]) -> list[int]:
    code = ("import json; from ray.util.state import list_actors; "
            f"print(json.dumps([a.pid for a in list_actors(address={job_address!r}, "
            "filters=[('class_name', '=', 'RayTrainWorker'), ('state', '=', 'ALIVE')])]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []


def logged_steps(db: Path, key: str = "loss") -> list[int]:
    """Read-only SQL on the job's MLflow store while the job writes it (an MlflowClient here would
    run schema migrations and race the job creating the store)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return sorted(r[0] for r in con.execute("SELECT step FROM metrics WHERE key = ?", (key,)))
    except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
        return []


def staging_folders(pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}{pid}-*"))


def run_and_kill(head, tmp_path, kill_at_step: int, pause: str | None):
    """Submit the job, SIGKILL one training worker once ``kill_at_step`` is logged (and, with a
    pause, once that worker is inside its checkpoint), let the job finish. Returns what the test
    checks: (job output, root, step logged when the kill landed, whether it landed mid-checkpoint)."""
    node, env = head
    latents, mix_bundle, target_bundle = write_tiny_ldm_inputs(tmp_path, load_config("tiny"), frames=48)
    root = tmp_path / "home"
    job = submit_job(node.job_address, env, [
        "jobs/train_ldm.py", "--latents", str(latents), "--mix-bundle", str(mix_bundle),
        "--target-bundle", str(target_bundle), "--root", str(root), "--run-name", "killed",
        "--num-workers", "2", "--set", "distributed.cpus_per_worker=0.5",
        "--set", "distributed.data_cpus_per_task=0.25", "--set", f"diffusion_training.max_steps={STEPS}",
        "--set", "diffusion_training.crop_frames=32", "--set", "diffusion_training.batch_size=16",
        "--set", f"diffusion_training.checkpoint_every={EVERY}", "--set", "diffusion_training.eval_every=1000",
        "--set", "diffusion_training.log_every=1"],
        wait=False, env_vars={"BASSRAY_TEST_PAUSE_IN_CHECKPOINT_S": pause} if pause else None)
    db = root / "mlflow.db"
    deadline = time.monotonic() + 600
    while max(logged_steps(db), default=0) < kill_at_step:
        assert job.poll() is None, f"the job ended before step {kill_at_step}: {job.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "the job did not reach the kill step in 10 minutes"
        time.sleep(0.2)
    workers = train_workers(node.job_address, env)
    assert len(workers) == 2, workers
    victim = workers[-1]
    mid_checkpoint = False
    if pause:  # wait until the victim is inside the checkpoint it is writing
        for _ in range(100):
            if staging_folders(victim):
                mid_checkpoint = True
                break
            time.sleep(0.1)
    os.kill(victim, signal.SIGKILL)
    time.sleep(1.0)
    killed_at = max(logged_steps(db))
    output, _ = job.communicate(timeout=900)
    return output, root, killed_at, mid_checkpoint


def check_resumed_run(output: str, root: Path, killed_at: int) -> None:
    assert "succeeded" in output, output[-4000:]
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "attributes.run_name = 'killed'")
    assert len(runs) == 1  # the resumed workers continued the same MLflow run
    run_id = runs[0].info.run_id
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert sorted(steps) == list(range(1, STEPS + 1))  # no gap, no duplicate, planned count reached
    resumed = client.get_metric_history(run_id, "resume/from_step")
    assert len(resumed) == 1, "exactly one restart"
    from_step = int(resumed[0].value)
    assert from_step % EVERY == 0 and 0 < killed_at - from_step <= EVERY  # lost at most one interval
    # Restored, not re-initialised: the optimizer's and the EMA's own counters continue.
    assert client.get_metric_history(run_id, "resume/optimizer_steps")[0].value == from_step
    assert client.get_metric_history(run_id, "resume/ema_updates")[0].value == from_step
    run_dir = root / "ray_results" / "killed"
    snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    registered = {c["checkpoint_dir_name"] for c in snapshot["checkpoint_results"]}
    folders = {p.name for p in run_dir.glob("checkpoint_*") if p.is_dir()}
    assert folders == registered  # no half-written or unregistered checkpoint folder
    for folder in folders:
        assert {"state.json", "ema.pt", "unet"} <= {p.name for p in (run_dir / folder).iterdir()}
    assert json.loads((run_dir / sorted(folders)[-1] / "state.json").read_text())["step"] == STEPS


def test_worker_killed_mid_step_resumes_from_last_checkpoint(head, tmp_path):
    output, root, killed_at, _ = run_and_kill(head, tmp_path, kill_at_step=15, pause=None)
    check_resumed_run(output, root, killed_at)


def test_worker_killed_while_writing_a_checkpoint(head, tmp_path):
    output, root, killed_at, mid_checkpoint = run_and_kill(head, tmp_path, kill_at_step=20, pause="10@20")
    assert mid_checkpoint, "the kill did not land inside the checkpoint at step 20"
    # The checkpoint at step 20 never completed: the run resumed from 10 and lost 10 steps.
    check_resumed_run(output, root, killed_at)
    assert not list(Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*")), "a staging folder was left"
