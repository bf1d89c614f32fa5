"""Training workers killed with SIGKILL (as a lost node would take them) in a tiny diffusion job
submitted to a real Ray cluster: Ray Train restarts the worker group, the run resumes from its last
checkpoint and reaches its planned step count. Once mid-step, once while a checkpoint is being
written."""
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
STEPS, EVERY = 30, 10  # planned steps; checkpoint interval N (a kill may cost at most N steps)


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


def wait_for_step(db: Path, step: int, job: subprocess.Popen, deadline: float) -> None:
    while max(logged_steps(db), default=0) < step:
        assert job.poll() is None, f"the job ended before step {step}: {job.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, f"the job did not reach step {step} in time"
        time.sleep(0.2)


def running_workers(job_address: str, env: dict[str, str], besides: set[int], deadline: float) -> list[int]:
    """The two training workers' PIDs, once both are alive and none is in ``besides`` (the workers
    already killed or replaced). Asked ahead of the kill: the state API is slow on a loaded machine."""
    while True:
        workers = train_workers(job_address, env)
        if len(workers) == 2 and not set(workers) & besides:
            return workers
        assert time.monotonic() < deadline, f"no fresh pair of training workers: {workers}"
        time.sleep(0.5)


def kill(victim: int, inside_checkpoint: bool) -> bool:
    """SIGKILL one training worker (with ``inside_checkpoint``, once it is writing its checkpoint).
    Returns whether the kill landed inside the checkpoint."""
    landed_inside = False
    for _ in range(50 if inside_checkpoint else 0):
        if staging_folders(victim):
            landed_inside = True
            break
        time.sleep(0.1)
    os.kill(victim, signal.SIGKILL)
    return landed_inside


def test_killed_workers_cost_at_most_one_checkpoint_interval(head, tmp_path):
    """Two SIGKILLs in one job: mid-step one step after the checkpoint at 10 (resumes from 10: the
    checkpoint is safe once training goes on), then inside the checkpoint being written at step 20
    (that checkpoint never completes: resumes from 10 again)."""
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
        wait=False, env_vars={"BASSRAY_TEST_PAUSE_IN_CHECKPOINT_S": "5@20",
                              # Ray Train's controller takes reports every 4 s, so a kill one step
                              # after a checkpoint lands before it is taken unless training waits.
                              "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "4"})
    db, deadline = root / "mlflow.db", time.monotonic() + 900
    killed_at, seen = [], set()
    for step, inside in ((11, False), (20, True)):
        workers = running_workers(node.job_address, env, seen, deadline)
        seen |= set(workers)
        wait_for_step(db, step, job, deadline)
        landed_inside = kill(workers[-1], inside)
        assert landed_inside == inside, "the kill did not land inside the checkpoint at step 20"
        time.sleep(1.0)  # the other worker may finish the step it is in
        killed_at.append(max(logged_steps(db)))
    output, _ = job.communicate(timeout=900)
    assert "succeeded" in output, output[-4000:]

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "attributes.run_name = 'killed'")
    assert len(runs) == 1  # the resumed workers continued the same MLflow run
    run_id = runs[0].info.run_id
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert sorted(steps) == list(range(1, STEPS + 1))  # no gap, no duplicate, planned count reached
    # Each restart logs the step it resumed from, once per step (two restarts from the same
    # checkpoint share a value).
    resumed = sorted(int(m.value) for m in client.get_metric_history(run_id, "resume/from_step"))
    assert resumed and all(f > 0 and f % EVERY == 0 for f in resumed), resumed
    for killed in killed_at:  # each kill lost at most one checkpoint interval
        assert any(0 < killed - f <= EVERY for f in resumed), (killed_at, resumed)
    # Both restarts resumed from 10 (logged once): a resume from the half-written checkpoint at 20
    # would have logged 20 too.
    assert resumed == [10], resumed
    # Restored, not re-initialised: the optimizer's and the EMA's own counters continue.
    for key in ("resume/optimizer_steps", "resume/ema_updates"):
        assert sorted(int(m.value) for m in client.get_metric_history(run_id, key)) == resumed, key
    run_dir = root / "ray_results" / "killed"
    snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    registered = {c["checkpoint_dir_name"] for c in snapshot["checkpoint_results"]}
    folders = {p.name for p in run_dir.glob("checkpoint_*") if p.is_dir()}
    assert folders == registered  # no half-written or unregistered checkpoint folder
    for folder in folders:
        assert {"state.json", "ema.pt", "unet"} <= {p.name for p in (run_dir / folder).iterdir()}
    assert json.loads((run_dir / sorted(folders)[-1] / "state.json").read_text())["step"] == STEPS
    for worker in seen:  # the half-written staging folder of the kill inside a checkpoint is gone
        assert not staging_folders(worker)
