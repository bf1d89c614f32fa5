"""What both training stages share: launching a TorchTrainer, step-based batch streams,
DeepSpeed checkpoints through ``ray.train.report`` and resuming from them."""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import ray
import ray.data
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from bassray.config import Config, config_from_dict
from bassray.home import bassray_home  # noqa: F401  (re-exported: the stages import it from here)

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
# Checkpoints are written to a local staging folder before Ray copies them to storage; its name
# carries the writer's PID so a folder left by a killed worker can be recognised and removed.
STAGING_PREFIX = "bassray-checkpoint-"
# Fault injection for tests: "SECONDS" or "SECONDS@STEP": how long a worker waits with a checkpoint
# half written (every checkpoint, or only the one at STEP).
PAUSE_IN_CHECKPOINT_ENV = "BASSRAY_TEST_PAUSE_IN_CHECKPOINT_S"
# DeepSpeed writes a file named "latest" beside the tag folder, so the tag cannot be "latest".
CHECKPOINT_TAG = "weights"


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join a running cluster (RAY_ADDRESS / ray job submit) or start a local one. With
    ``BASSRAY_QUIET=1`` (the quickstart) workers' output and Ray Data's progress bars stay in
    Ray's log files instead of the console."""
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        quiet = os.environ.get("BASSRAY_QUIET") == "1"
        if quiet:
            ray.data.DataContext.get_current().enable_progress_bars = False
        ray.init(address=address, num_cpus=None if address else num_cpus,
                 include_dashboard=False if not address else None,
                 log_to_driver=not quiet, ignore_reinit_error=True)


def ray_session_logs() -> Path | None:
    """The local Ray session's log folder (workers' stdout/stderr), if this process started one."""
    try:
        from ray._private.worker import _global_node
        return Path(_global_node.get_session_dir_path()) / "logs" if _global_node else None
    except Exception:  # a private API: losing the copy of the logs must not fail the run
        return None


@dataclass
class WorkerSetup:
    config: Config
    rank: int
    world: int
    device: torch.device
    node_ids: list[str]  # the Ray node of every rank, in rank order (the run logs it)


def setup_worker(loop_config: dict[str, Any]) -> WorkerSetup:
    """What every training function does first: its config, rank, device and seeds."""
    config = config_from_dict(loop_config["config"])
    context = ray.train.get_context()
    device = (torch.device("cuda", torch.cuda.current_device()) if config.distributed.use_gpu
              else torch.device("cpu"))
    torch.manual_seed(loop_config["seed"] + context.get_world_rank())
    torch.set_flush_denormal(True)  # denormals from exp() made CPU steps 10-100x slower
    if remove_stale_staging():
        log.warning("removed checkpoint staging folders left by a killed worker")
    node_ids = [ray.get_runtime_context().get_node_id()]
    if context.get_world_size() > 1 and torch.distributed.is_initialized():
        gathered: list[Any] = [None] * context.get_world_size()
        torch.distributed.all_gather_object(gathered, node_ids[0])
        node_ids = [str(n) for n in gathered]
    return WorkerSetup(config, context.get_world_rank(), context.get_world_size(), device, node_ids)


def infinite_batches(dataset_name: str, batch_size: int, dtypes: dict[str, torch.dtype],
                     shuffle_buffer: int = 0, device: torch.device | None = None,
                     prefetch_batches: int = 1) -> Iterator[dict[str, torch.Tensor]]:
    """Batches from this worker's dataset shard forever, epoch after epoch, ``prefetch_batches``
    prepared ahead of the step. Training counts steps, not epochs, so every rank takes the same
    number of steps (``report`` is a barrier)."""
    shard = ray.train.get_dataset_shard(dataset_name)
    epoch = 0
    while True:
        got_any = False
        for batch in shard.iter_torch_batches(batch_size=batch_size, dtypes=dtypes, device=device,
                                              drop_last=True, prefetch_batches=prefetch_batches,
                                              local_shuffle_buffer_size=shuffle_buffer or None):
            got_any = True
            yield batch
        if not got_any:
            raise RuntimeError(f"the {dataset_name!r} dataset produced no batch of {batch_size}: "
                               "too few shards, or every crop was silent; add data or lower the batch size")
        epoch += 1
        log.info("dataset %s: epoch %d done", dataset_name, epoch)


def save_checkpoint_and_report(engines: dict[str, Any], state: dict[str, Any],
                               metrics: dict[str, float], extra: Callable[[Path], None] | None = None
                               ) -> None:
    """Every rank saves its DeepSpeed engine files, then all report one checkpoint (Ray merges them)."""
    rank = ray.train.get_context().get_world_rank()
    with tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{os.getpid()}-") as tmp:
        for name, engine in engines.items():
            engine.save_checkpoint(os.path.join(tmp, name), tag=CHECKPOINT_TAG)
        pause, _, at_step = os.environ.get(PAUSE_IN_CHECKPOINT_ENV, "").partition("@")
        pause = float(pause or 0) if not at_step or int(at_step) == state.get("step") else 0.0
        if pause > 0:
            log.warning("%s: pausing %.1fs inside checkpoint %s", PAUSE_IN_CHECKPOINT_ENV, pause, state.get("step"))
            time.sleep(pause)
        if rank == 0:
            Path(tmp, STATE_FILE).write_text(json.dumps(state))
            if extra is not None:
                extra(Path(tmp))
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
    # A fence. Ray Train's controller collects reports by polling each worker every 2 s through a
    # one-slot queue, and a report it has not yet taken dies with its worker: a worker killed within
    # 2 s of a checkpoint lost that checkpoint and its run resumed from the one before (CI saw a
    # kill 5 steps after a checkpoint resume from step 0). This second report blocks until the
    # checkpoint's report has been taken, so training goes on only once the checkpoint is safe.
    ray.train.report(metrics)


def remove_stale_staging(temp_dir: str | None = None) -> int:
    """Remove checkpoint staging folders whose writer process is gone (a worker killed while
    writing a checkpoint leaves one). Returns how many were removed."""
    removed = 0
    for path in Path(temp_dir or tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*"):
        try:
            pid = int(path.name[len(STAGING_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_unregistered_checkpoints(run_dir: str | Path) -> list[str]:
    """Remove ``checkpoint_*`` folders in a run's local storage folder that Ray Train never
    registered (absent from its checkpoint_manager_snapshot.json): what a worker killed while Ray
    copied a checkpoint into storage leaves. Remote storage (s3://...) is left to its own
    lifecycle rules. Returns the removed names."""
    run_dir = Path(run_dir)
    if "://" in str(run_dir) or not run_dir.is_dir():
        return []
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    registered: set[str] = set()
    if snapshot.exists():
        data = json.loads(snapshot.read_text())
        for entry in data.get("checkpoint_results", []) + [data.get("latest_checkpoint_result") or {}]:
            if entry.get("checkpoint_dir_name"):
                registered.add(entry["checkpoint_dir_name"])
    removed = [p.name for p in sorted(run_dir.glob("checkpoint_*")) if p.is_dir() and p.name not in registered]
    for name in removed:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    if removed:
        log.warning("removed %d half-written checkpoint folder(s) from %s: %s", len(removed), run_dir, removed)
    return removed


def optimizer_steps(engine: Any) -> int:
    """The optimizer's own step count (Adam's per-parameter "step"), looked up through DeepSpeed's
    wrappers: 0 for a fresh optimizer, the resumed step after a checkpoint restore."""
    optimizer, steps = getattr(engine, "optimizer", None), 0
    while optimizer is not None:
        for param_state in getattr(optimizer, "state", {}).values():
            if isinstance(param_state, dict) and "step" in param_state:
                step = param_state["step"]
                steps = max(steps, int(step.item() if hasattr(step, "item") else step))
        optimizer = getattr(optimizer, "optimizer", None)
    return steps


def restore_checkpoint(engines: dict[str, Any]) -> dict[str, Any] | None:
    """Load the latest reported checkpoint into the engines; its saved state, or None for a new run."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        for name, engine in engines.items():
            engine.load_checkpoint(os.path.join(directory, name), tag=CHECKPOINT_TAG)
        state = json.loads(Path(directory, STATE_FILE).read_text())
    log.info("resumed from checkpoint at step %s", state.get("step"))
    return state


def launch(train_fn: Callable[[dict], None], loop_config: dict[str, Any], datasets: dict[str, Any],
           *, run_name: str, storage_path: str, num_workers: int, use_gpu: bool,
           cpus_per_worker: float, max_failures: int = 2, placement_strategy: str = "PACK"):
    """Run ``train_fn`` on ``num_workers`` Ray Train workers. Running again with the same
    ``run_name`` and ``storage_path`` resumes from the latest checkpoint."""
    remove_unregistered_checkpoints(Path(storage_path) / run_name)
    resources = {"CPU": cpus_per_worker}
    if use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_fn,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker=resources, placement_strategy=placement_strategy),
        run_config=RunConfig(name=run_name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets=datasets,
    )
    result = trainer.fit()
    remove_unregistered_checkpoints(Path(storage_path) / run_name)
    return result


def launch_stage(train_fn: Callable[[dict], None], loop_config: dict[str, Any], datasets: dict[str, Any], *,
                 run_name: str, home: Path, config: Config):
    """``launch`` with the workers, resources and placement of ``config.distributed``, storing
    checkpoints under ``<home>/ray_results``."""
    dist = config.distributed
    return launch(train_fn, loop_config, datasets, run_name=run_name, storage_path=str(home / "ray_results"),
                  num_workers=dist.num_workers, use_gpu=dist.use_gpu, cpus_per_worker=dist.cpus_per_worker,
                  placement_strategy=dist.placement_strategy)


def export_and_register(result, *, label: str, home: Path, run_name: str, tracking_uri: str,
                        experiment: str, model_name: str, tags: dict[str, str],
                        metrics: dict[str, float] | None = None, step: int = 0
                        ) -> tuple[Path, str, str]:
    """After ``launch``: fail clearly, export the final checkpoint to ``<home>/bundles/<run_name>``,
    log ``metrics`` and register the bundle in the run's MLflow run. (bundle, run id, version)."""
    from bassray.distributed.tracking import RunTracker
    from bassray.bundles.export import export_checkpoint
    if result.error is not None:
        raise RuntimeError(f"{label} {run_name!r} failed: {result.error}") from result.error
    bundle_dir = home / "bundles" / run_name
    with result.checkpoint.as_directory() as checkpoint_dir:
        export_checkpoint(checkpoint_dir, bundle_dir)
    tracker = RunTracker(tracking_uri, experiment, run_name, str(home / "mlartifacts"))
    if metrics:
        tracker.log_metrics(metrics, step=step)
    version = tracker.register_bundle(bundle_dir, model_name, tags=tags)
    tracker.finish()
    log.info("bundle: %s (MLflow model %s v%s)", bundle_dir, model_name, version)
    return bundle_dir, tracker.run_id, version
