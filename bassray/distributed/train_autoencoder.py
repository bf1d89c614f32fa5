"""Stage 1 on Ray Train: an autoencoder and its two critics as two DeepSpeed engines, fed 1.5 s
crops by Ray Data, tracked in MLflow on rank 0, checkpointed and resumable."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import torch

from bassray.config import Config
from bassray.data.shards import resolve_data_dirs
from bassray.distributed.deepspeed_config import deepspeed_config, own_extension_build_dir, resolve_precision
from bassray.distributed.perf import StepWindow, compile_for_training, counted_step_flops, measured_peak_flops
from bassray.distributed.runner import (bassray_home, ensure_ray, infinite_batches, launch_stage,
                                        export_and_register, restore_checkpoint, save_checkpoint_and_report,
                                        setup_worker)
from bassray.distributed.tracking import RunTracker, default_tracking_uri

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    run_name: str
    checkpoint_path: str
    bundle_dir: Path
    mlflow_run_id: str
    model_version: str
    metrics: dict[str, Any]


def write_registry_note(bundle_dir: Path, model_name: str, version: str, run_id: str) -> None:
    """Record in the bundle which MLflow model version it is, so later stages can cite it."""
    (Path(bundle_dir) / "registry.json").write_text(json.dumps(
        {"model_name": model_name, "version": version, "run_id": run_id}))


def _eval_crops(config: Config, data_dir: str, stem: str, count: int = 4) -> np.ndarray | None:
    """A fixed set of held-out crops (validation split) for reconstruction metrics and examples."""
    from bassray.data.eval_crops import held_out_crops
    try:
        return held_out_crops(config, data_dir, stem, count=count, split="val")
    except FileNotFoundError:
        log.warning("no validation shards in %s: skipping reconstruction examples", data_dir)
        return None


def _eval_songs(config: Config, data_dir: str, stem: str, count: int = 2, seconds: float = 8.0
                ) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """A few validation segments of the stem (the first ``seconds``) with their ground truth, for the
    pitch metrics; chord ground truth only exists for the target stem of annotated songs."""
    from bassray.data.shards import iter_segments, list_shards
    out = []
    try:
        paths = list_shards(data_dir, "val")
    except FileNotFoundError:
        return out
    for seg in iter_segments(paths):
        if stem == "mix":
            audio = np.sum(list(seg.stems.values()), axis=0)
        elif stem in seg.stems:
            audio = seg.stems[stem]
        else:
            continue
        out.append((audio[:, : int(seconds * seg.sample_rate)].astype(np.float32), seg.meta))
        if len(out) >= count:
            break
    return out


@torch.no_grad()
def evaluate_reconstruction(model: torch.nn.Module, crops: torch.Tensor, hops: list[int],
                            songs: list[tuple[np.ndarray, dict[str, Any]]] | None = None,
                            score_chords: bool = False) -> tuple[dict[str, float], torch.Tensor]:
    """Log-mel L1 and MSSD on crops; on whole songs, the pitch metrics that a listener would
    notice: pitch accuracy against the input, chroma cosine, a constant-Q distance and, where
    chords are known and ``score_chords`` (the target stem, not a mix), the reconstruction's
    chord-tone agreement beside the input's."""
    from bassray.eval.musical_fit import bass_fit, mean_metrics, reconstruction_fidelity, track_pitch
    from bassray.train.autoencoder_losses import log_mel_l1, mssd
    was_training = model.training
    model.eval()
    recon = model.decode(model.encode(crops), length=crops.shape[-1])
    metrics = {"val/log_mel_l1": float(log_mel_l1(crops, recon, model.sample_rate)),
               "val/mssd": float(mssd(crops, recon, hops))}
    fidelity, fits, true_fits = [], [], []
    for audio, meta in songs or []:
        x = torch.from_numpy(audio)[None].to(crops.device, crops.dtype)
        song_recon = model.decode(model.encode(x), length=x.shape[-1])[0].float().cpu().numpy()
        tracks = (track_pitch(audio, model.sample_rate), track_pitch(song_recon, model.sample_rate))
        fidelity.append(reconstruction_fidelity(audio, song_recon, model.sample_rate, tracks=tracks))
        if meta.get("chords") and score_chords:
            fits.append(bass_fit(song_recon, model.sample_rate, meta, track=tracks[1]))
            true_fits.append(bass_fit(audio, model.sample_rate, meta, track=tracks[0]))
    metrics.update({f"val/{k}": v for k, v in mean_metrics(fidelity).items()})
    if fits:
        metrics["val/chord_tone"] = mean_metrics(fits)["chord_tone"]
        metrics["val/chord_tone_input"] = mean_metrics(true_fits)["chord_tone"]
    model.train(was_training)
    return metrics, recon


def autoencoder_train_loop(loop_config: dict[str, Any]) -> None:
    import deepspeed

    own_extension_build_dir()

    from bassray.audio import log_magnitude
    from bassray.models.autoencoder import Autoencoder
    from bassray.models.critics import Critics
    from bassray.train.autoencoder_losses import critic_loss, generator_loss

    setup = setup_worker(loop_config)
    config, rank, world, device = setup.config, setup.rank, setup.world, setup.device
    stem = loop_config["stem"]
    train_cfg = config.autoencoder_training
    use_gpu = config.distributed.use_gpu
    if train_cfg.torch_threads > 0:
        torch.set_num_threads(train_cfg.torch_threads)

    model = Autoencoder(config.autoencoder_for(stem), config.audio)
    critics = Critics(config.critic, config.audio)
    step_flops = 0.0
    if rank == 0:  # FLOPs of one real step, counted on one crop (they grow linearly with the batch)
        from bassray.train.step_flops import autoencoder_step_flops
        crop = 0.1 * torch.randn(1, config.audio.channels, int(round(config.data.crop_seconds * config.audio.sample_rate)))
        step_flops = train_cfg.batch_size * counted_step_flops(
            lambda: autoencoder_step_flops(model, critics, crop, train_cfg))
    compile_for_training([model, critics], config.distributed.compile)
    engine_cfg = dict(dist=config.distributed, global_batch=train_cfg.batch_size, num_workers=world,
                      lr=train_cfg.learning_rate, betas=train_cfg.betas, use_gpu=use_gpu)
    ae_engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                              config=deepspeed_config(**engine_cfg))
    critic_engine, _, _, _ = deepspeed.initialize(model=critics, model_parameters=critics.parameters(),
                                                  config=deepspeed_config(**engine_cfg))
    engines = {"autoencoder": ae_engine, "critics": critic_engine}
    state = restore_checkpoint(engines) or {"step": 0}
    start_step = int(state["step"])
    dtype = torch.bfloat16 if resolve_precision(config.distributed, use_gpu) == "bf16" else torch.float32

    tracker = None
    eval_crops, eval_songs = None, []
    if rank == 0:
        tracker = RunTracker(loop_config["tracking_uri"], loop_config["experiment"],
                             loop_config["run_name"], loop_config["artifact_root"],
                             tags={"stage": "autoencoder", "stem": stem, "config": config.name})
        tracker.log_params({**config.flat(), "stem": stem, "num_workers": world,
                            "worker_node_ids": ",".join(setup.node_ids),
                            "parameters": sum(p.numel() for p in model.parameters())})
        crops = _eval_crops(config, loop_config["data_dir"], stem)
        eval_crops = torch.from_numpy(crops).to(device) if crops is not None else None
        eval_songs = _eval_songs(config, loop_config["data_dir"], stem)

    micro_batch = train_cfg.batch_size // world
    batches = infinite_batches("train", micro_batch, {"audio": torch.float32},
                               shuffle_buffer=4 * micro_batch, device=device,
                               prefetch_batches=config.distributed.prefetch_batches)
    peak_flops = world * measured_peak_flops(dtype, device) if tracker is not None and step_flops > 0 else 0.0
    window = StepWindow(train_cfg.batch_size, step_flops, peak_flops)
    metrics: dict[str, float] = {}
    for step in range(start_step, train_cfg.max_steps):
        wav = window.next_batch(batches)["audio"].to(dtype)  # [B, C, T]
        adversarial = step >= train_cfg.adversarial_start_step

        # Generator step: critics frozen and called through .module (two DeepSpeed engines: the critics must not update here).
        critics.requires_grad_(False)
        loss, metrics, fake = generator_loss(ae_engine, critic_engine.module, wav, train_cfg,
                                             adversarial=adversarial)
        ae_engine.backward(loss)
        ae_engine.step()
        if adversarial:
            critics.requires_grad_(True)
            c_loss, c_metrics = critic_loss(critic_engine, wav, fake.detach())
            critic_engine.backward(c_loss)
            critic_engine.step()
            metrics.update(c_metrics)
        window.step_done()
        done = step + 1

        if tracker is not None and (done % train_cfg.log_every == 0 or done == train_cfg.max_steps):
            metrics.update({**window.metrics(), "lr": ae_engine.get_lr()[0]})
            tracker.log_metrics(metrics, step=done)
            log.info("step %d/%d %s", done, train_cfg.max_steps,
                     " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
        if tracker is not None and eval_crops is not None and (
                done % train_cfg.eval_every == 0 or done == train_cfg.max_steps):
            with window.excluded():
                val_metrics, recon = evaluate_reconstruction(ae_engine.module, eval_crops.to(dtype),
                                                             train_cfg.mssd_hops, eval_songs,
                                                             score_chords=stem != "mix")
                tracker.log_metrics(val_metrics, step=done)
                rate = config.audio.sample_rate
                for i in range(min(2, recon.shape[0])):
                    tracker.log_audio(f"recon{i}", recon[i].float().cpu().numpy(), rate, done)
                    tracker.log_audio(f"orig{i}", eval_crops[i].float().cpu().numpy(), rate, done)
                ae_cfg = config.autoencoder_for(stem)
                tracker.log_spectrograms("recon", {
                    "original": log_magnitude(eval_crops[0].float().mean(0), ae_cfg.n_fft, ae_cfg.hop_length).cpu().numpy(),
                    "reconstruction": log_magnitude(recon[0].float().mean(0), ae_cfg.n_fft, ae_cfg.hop_length).cpu().numpy(),
                }, done)
                metrics.update(val_metrics)
        if done % train_cfg.checkpoint_every == 0 or done == train_cfg.max_steps:
            with window.excluded():
                save_checkpoint_and_report(engines, {"stage": "autoencoder", "step": done, "stem": stem,
                                            "config": loop_config["config"]},
                                           {"step": done, **{k: float(v) for k, v in metrics.items()}})
    if tracker is not None:
        tracker.log_metrics({"final_step": float(train_cfg.max_steps)}, step=train_cfg.max_steps)


def train_autoencoder(config: Config, stem: str, data_dir: str | Path, *, num_workers: int | None = None,
                      use_gpu: bool | None = None, run_name: str | None = None,
                      root: str | Path | None = None, seed: int = 0,
                      experiment: str = "bassray-autoencoders") -> StageResult:
    """Train (or resume) one autoencoder; export, log and register its bundle. Runs on the current
    Ray cluster, or a local one."""
    from bassray.distributed.datasets import autoencoder_dataset
    from bassray.distributed.pipeline_stats import PipelineStats
    home = bassray_home(root)
    if num_workers is not None:
        config.distributed.num_workers = num_workers
    if use_gpu is not None:
        config.distributed.use_gpu = use_gpu
    config.autoencoder_for(stem)  # validates the stem kind early
    run_name = run_name or f"autoencoder-{stem}-{config.name}"
    data_dir = resolve_data_dirs(data_dir)
    ensure_ray()
    tracking_uri = default_tracking_uri(home)
    loop_config = {"config": config.to_dict(), "stem": stem, "seed": seed, "data_dir": data_dir,
                   "tracking_uri": tracking_uri, "experiment": experiment, "run_name": run_name,
                   "artifact_root": str(home / "mlartifacts")}
    stats = PipelineStats()
    dataset = autoencoder_dataset(data_dir, "train", stem, config, seed=seed, stats=stats)
    result = launch_stage(autoencoder_train_loop, loop_config, {"train": dataset}, run_name=run_name, home=home,
                          config=config)
    model_name = f"bassray-{stem}-autoencoder"
    # Skipped corrupt members, unreadable shards and silent crops of this run, for the record.
    counts = {f"data/{k}": float(v) for k, v in stats.log_summary("autoencoder crops").items()}
    bundle_dir, run_id, version = export_and_register(
        result, label="autoencoder training", home=home, run_name=run_name, tracking_uri=tracking_uri,
        experiment=experiment, model_name=model_name, tags={"config": config.name, "stem": stem},
        metrics=counts, step=config.autoencoder_training.max_steps)
    write_registry_note(bundle_dir, model_name, version, run_id)
    return StageResult(run_name, result.checkpoint.path, bundle_dir, run_id, version,
                       dict(result.metrics or {}))
