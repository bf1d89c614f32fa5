"""The (mix, bass) contrastive model on Ray Train: aligned crops streamed by Ray Data from the same
audio shards as the autoencoders, a DeepSpeed engine, MLflow tracking on rank 0 (loss, in-batch
top-1, held-out top-1), checkpoints and resume; the bundle is registered as bassray-contrastive."""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from bassray.config import Config
from bassray.data.shards import resolve_data_dirs
from bassray.distributed.deepspeed_config import deepspeed_config, own_extension_build_dir
from bassray.distributed.runner import (bassray_home, ensure_ray, export_and_register, launch_stage,
                                        restore_checkpoint, save_checkpoint_and_report, setup_worker)
from bassray.distributed.tracking import RunTracker, default_tracking_uri
from bassray.distributed.train_autoencoder import StageResult, write_registry_note
from bassray.models.contrastive import ContrastiveConfig, MixBassContrastive
from bassray.bundles.contrastive import ENGINE

log = logging.getLogger(__name__)

MODEL_NAME = "bassray-contrastive"


def held_out_pairs(data_dir: str, target: str, crop_samples: int, count: int = 32) -> tuple[np.ndarray, np.ndarray] | None:
    """The first crop of up to ``count`` validation (else test) segments: (mixes, basses) ``[N, T]``."""
    from bassray.eval.evaluate import held_out_songs
    for split in ("val", "test"):
        try:
            rows = held_out_songs(data_dir, [split], target, count)
        except FileNotFoundError:
            continue
        fits = [r for r in rows if r["mix"].shape[-1] >= crop_samples]
        if len(fits) >= 2:
            return (np.stack([r["mix"].mean(0)[:crop_samples] for r in fits]),
                    np.stack([r["target"].mean(0)[:crop_samples] for r in fits]))
    return None


@torch.no_grad()
def held_out_top1(model: MixBassContrastive, pairs: tuple[np.ndarray, np.ndarray]) -> float:
    """How often a held-out mix's own bass is the most similar of all held-out basses."""
    was_training = model.training
    model.eval()
    mixes, basses = (torch.from_numpy(a) for a in pairs)
    logits = model.similarity(model.embed_mix(mixes), model.embed_bass(basses))
    model.train(was_training)
    return float((logits.argmax(1) == torch.arange(len(logits))).float().mean())


class CropReservoir:
    """Random aligned crops from a reservoir of whole segments that Ray Data keeps streaming in:
    each batch first takes ``refresh`` new segments (replacing the oldest once ``capacity`` are
    held), then crops every item from a random held segment at a random offset. In-batch negatives
    thus come from many songs, and each streamed segment serves many crops."""

    def __init__(self, rows: Iterator[dict[str, Any]], crop_samples: int, capacity: int, refresh: int,
                 rng: np.random.Generator):
        self.rows, self.crop, self.capacity, self.refresh, self.rng = rows, crop_samples, capacity, refresh, rng
        self.held: list[tuple[np.ndarray, np.ndarray]] = []
        self.next_slot = 0

    def _take(self, count: int) -> None:
        for _ in range(count):
            row = next(self.rows)
            item = (np.asarray(row["mix"], np.float32), np.asarray(row["target"], np.float32))
            if len(self.held) < self.capacity:
                self.held.append(item)
            else:
                self.held[self.next_slot] = item
                self.next_slot = (self.next_slot + 1) % self.capacity

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._take(self.refresh if len(self.held) >= size else size - len(self.held) + self.refresh)
        mixes, targets = [], []
        for i in self.rng.integers(0, len(self.held), size):
            mix, target = self.held[i]
            start = int(self.rng.integers(0, mix.shape[-1] - self.crop + 1))
            mixes.append(mix[start:start + self.crop])
            targets.append(target[start:start + self.crop])
        return torch.from_numpy(np.stack(mixes)), torch.from_numpy(np.stack(targets))


def endless_rows(dataset_name: str) -> Iterator[dict[str, Any]]:
    """This worker's rows of a dataset, epoch after epoch."""
    import ray.train
    shard = ray.train.get_dataset_shard(dataset_name)
    while True:
        got_any = False
        for row in shard.iter_rows():
            got_any = True
            yield row
        if not got_any:
            raise RuntimeError(f"the {dataset_name!r} dataset produced no segment long enough for a crop: "
                               "add data or shorten contrastive.crop_seconds")


def contrastive_train_loop(loop_config: dict[str, Any]) -> None:
    import deepspeed

    own_extension_build_dir()
    setup = setup_worker(loop_config)
    config, world, device = setup.config, setup.world, setup.device
    cfg = ContrastiveConfig(**loop_config["contrastive"])
    model = MixBassContrastive(cfg)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=deepspeed_config(
        config.distributed, global_batch=loop_config["batch_size"], num_workers=world,
        lr=loop_config["learning_rate"], betas=[0.9, 0.999], weight_decay=0.01, use_gpu=config.distributed.use_gpu))
    state = restore_checkpoint({ENGINE: engine}) or {"step": 0}
    tracker, pairs = None, None
    if setup.rank == 0:
        tracker = RunTracker(loop_config["tracking_uri"], loop_config["experiment"], loop_config["run_name"],
                             loop_config["artifact_root"], tags={"stage": "contrastive", "config": config.name})
        tracker.log_params({**{f"contrastive.{k}": v for k, v in asdict(cfg).items()},
                            "batch_size": loop_config["batch_size"], "max_steps": loop_config["max_steps"],
                            "num_workers": world, "parameters": sum(p.numel() for p in model.parameters())})
        pairs = held_out_pairs(loop_config["data_dir"], config.data.target_stem,
                               int(cfg.crop_seconds * cfg.sample_rate))
    torch.set_num_threads(max(1, config.diffusion_training.torch_threads))
    micro_batch = loop_config["batch_size"] // world
    crops = CropReservoir(endless_rows("train"), int(cfg.crop_seconds * cfg.sample_rate), capacity=512,
                          refresh=max(1, micro_batch // 8),
                          rng=np.random.default_rng([loop_config["seed"], setup.rank, int(state["step"])]))
    max_steps, every = loop_config["max_steps"], loop_config["checkpoint_every"]
    metrics: dict[str, float] = {}
    for step in range(int(state["step"]), max_steps):
        mix, target = crops.batch(micro_batch)
        loss, metrics = engine(mix.to(device), target.to(device))
        engine.backward(loss)
        engine.step()
        done = step + 1
        if tracker is not None and (done % 20 == 0 or done == max_steps):
            if pairs is not None and (done % 100 == 0 or done == max_steps):
                metrics["val/top1"] = held_out_top1(engine.module, pairs)
                metrics["val/chance"] = 1.0 / len(pairs[0])
            tracker.log_metrics(metrics, step=done)
            log.info("contrastive step %d/%d %s", done, max_steps,
                     " ".join(f"{k}={v:.3g}" for k, v in sorted(metrics.items())))
        if done % every == 0 or done == max_steps:
            save_checkpoint_and_report({ENGINE: engine}, {
                "stage": "contrastive", "step": done, "config": loop_config["config"],
                "contrastive": loop_config["contrastive"], "val_top1": metrics.get("val/top1")},
                {"step": done, **{k: float(v) for k, v in metrics.items()}})


def train_contrastive(config: Config, data_dir: str | Path, *, max_steps: int = 400, batch_size: int = 32,
                      learning_rate: float = 1e-3, checkpoint_every: int = 200,
                      contrastive: ContrastiveConfig | None = None, num_workers: int | None = None,
                      use_gpu: bool | None = None, run_name: str | None = None, root: str | Path | None = None,
                      seed: int = 0, experiment: str = "bassray-contrastive") -> StageResult:
    """Train (or resume) the contrastive model on ``data_dir``'s train shards; export, log and
    register its bundle. Runs on the current Ray cluster, or a local one."""
    from bassray.distributed.datasets import segments_dataset
    home = bassray_home(root)
    if num_workers is not None:
        config.distributed.num_workers = num_workers
    if use_gpu is not None:
        config.distributed.use_gpu = use_gpu
    cfg = contrastive or ContrastiveConfig(sample_rate=config.audio.sample_rate)
    if cfg.sample_rate != config.audio.sample_rate:
        raise ValueError(f"the contrastive model's rate {cfg.sample_rate} differs from the data's "
                         f"{config.audio.sample_rate}")
    run_name = run_name or f"contrastive-{config.name}"
    data_dir = resolve_data_dirs(data_dir)
    ensure_ray()
    tracking_uri = default_tracking_uri(home)
    loop_config = {"config": config.to_dict(), "contrastive": asdict(cfg), "seed": seed, "data_dir": data_dir,
                   "max_steps": max_steps, "batch_size": batch_size, "learning_rate": learning_rate,
                   "checkpoint_every": checkpoint_every, "tracking_uri": tracking_uri, "experiment": experiment,
                   "run_name": run_name, "artifact_root": str(home / "mlartifacts")}
    dataset = segments_dataset(data_dir, "train", config, int(cfg.crop_seconds * cfg.sample_rate), seed=seed)
    result = launch_stage(contrastive_train_loop, loop_config, {"train": dataset}, run_name=run_name, home=home,
                          config=config)
    bundle_dir, run_id, version = export_and_register(
        result, label="contrastive training", home=home, run_name=run_name, tracking_uri=tracking_uri,
        experiment=experiment, model_name=MODEL_NAME, tags={"config": config.name}, step=max_steps)
    write_registry_note(bundle_dir, MODEL_NAME, version, run_id)
    return StageResult(run_name, result.checkpoint.path, bundle_dir, run_id, version, dict(result.metrics or {}))
