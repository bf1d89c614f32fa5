"""Stage 2 on Ray Train: the conditional latent diffusion U-Net as a DeepSpeed engine fed latent
crops by Ray Data, with EMA weights, MLflow tracking on rank 0, checkpoints and resume."""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch

from bassray.config import Config
from bassray.distributed.deepspeed_config import deepspeed_config, lr_scheduler_config, own_extension_build_dir
from bassray.distributed.perf import StepWindow, compile_for_training, counted_step_flops, measured_peak_flops
from bassray.distributed.runner import (bassray_home, ensure_ray, infinite_batches, launch_stage,
                                        export_and_register, optimizer_steps, restore_checkpoint,
                                        save_checkpoint_and_report,
                                        setup_worker)
from bassray.distributed.tracking import RunTracker, default_tracking_uri
from bassray.distributed.train_autoencoder import StageResult

log = logging.getLogger(__name__)

EMA_FILE = "ema.pt"


def autoencoder_versions(mix_bundle: str | Path, target_bundle: str | Path) -> dict[str, str]:
    """Which registered autoencoder versions a diffusion model belongs to (from their registry.json)."""
    out = {}
    for role, bundle in (("mix_autoencoder", mix_bundle), ("target_autoencoder", target_bundle)):
        note = Path(bundle) / "registry.json"
        out[role] = str(bundle)
        if note.exists():
            info = json.loads(note.read_text())
            out[f"{role}_version"] = f"{info['model_name']}/{info['version']}"
    return out


def _log_generated_example(tracker: RunTracker, generator, config: Config, mix: torch.Tensor,
                           step: int) -> None:
    """Generate a bass line for one held-out mix crop with the EMA weights; log audio + spectrogram."""
    from bassray.audio import log_magnitude
    latent = generator.sample_latents(mix[:1], steps=config.sampler.steps, cfg_weight=[1.0],
                                      rescale_phi=[0.0], seeds=[step])
    audio = generator.decode_target(latent)[0]  # [C, T]
    mix_audio = generator.decode_mix(mix[:1])[0]
    rate = config.audio.sample_rate
    tracker.log_audio("generated_bass", audio, rate, step)
    tracker.log_audio("conditioning_mix_decoded", mix_audio, rate, step)
    spec = lambda a: log_magnitude(torch.from_numpy(a).mean(0), 1024, 256).numpy()  # noqa: E731
    tracker.log_spectrograms("generated", {"conditioning mix": spec(mix_audio),
                                           "generated bass": spec(audio)}, step)


# A small latent collection is read several times per epoch (see latent_pairs_dataset): each
# epoch restarts Ray Data's pipeline, which cost the quickstart's trainer 6.4 s a time (a 20-step
# window at 42 instead of 265 crops/s, every ~1,000 steps with 32 files an epoch); with 256, its
# 2 latent shards make an epoch of about 8,000 steps.
LATENT_FILES_PER_EPOCH = 256


# What the diffusion runs log of each bass line on the validation songs (val/<metric>_<kind>).
VALIDATION_METRICS = ("chord_tone_coverage", "chord_tone", "chord_voiced_share", "onset_f1", "note_rate",
                      "sounding_iou", "harmonic_share", "pitch_change_f1", "pitch_changes_per_s", "register_error_st")


def _validation_metrics(basses: list, songs: list[dict[str, Any]], kind: str) -> dict[str, float]:
    """``songs``: held-out rows, each with its analysed ``true_bass`` (analysed once per run)."""
    from bassray.eval.evaluate import mean_scores
    scores = mean_scores(basses, [s["true_bass"] for s in songs])
    return {f"val/{m}_{kind}": scores[m] for m in VALIDATION_METRICS if m in scores}


def _musical_fit_songs(loop_config: dict[str, Any], config: Config) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """A few validation songs with chords (audio shards given as eval_data_dir), or none, and their
    ceiling (true bass) and floor (another song's bass), scored once for the whole run."""
    from bassray.eval.evaluate import held_out_songs, true_basses
    if not loop_config.get("eval_data_dir"):
        return [], {}
    try:
        songs = held_out_songs(loop_config["eval_data_dir"], ["val"], config.data.target_stem, limit=4)
    except FileNotFoundError as exc:
        log.warning("no validation songs with chords (%s): generated chord-tone agreement is skipped", exc)
        return [], {}
    for song, truth in zip(songs, true_basses(songs)):
        song["true_bass"] = truth
    return songs, {**_validation_metrics([s["target"] for s in songs], songs, "true"),
                   **_validation_metrics([s["other_target"] for s in songs], songs, "other_song")}


def _generated_fit(generator, config: Config, songs: list[dict[str, Any]], step: int) -> dict[str, float]:
    """Musical fit and articulation of bass lines generated for held-out songs: what a listener
    hears, unlike the v-loss; with the harmony snap on, also of the same samples without it."""
    from bassray.inference import GenerationSettings
    settings = [GenerationSettings(steps=config.sampler.steps, cfg_weight=config.sampler.cfg_weight,
                                   rescale_phi=config.sampler.rescale_phi, seed=step + i) for i in range(len(songs))]
    snapped, unsnapped = generator.generate_with_and_without_snap([s["mix"] for s in songs], settings)
    out = _validation_metrics(snapped, songs, "generated")
    if config.sampler.harmony_snap > 0 and generator.can_snap_to_harmony:
        out.update(_validation_metrics(unsnapped, songs, "generated_no_snap"))
    return out


def ldm_train_loop(loop_config: dict[str, Any]) -> None:
    import deepspeed

    own_extension_build_dir()

    from bassray.data.latents import load_latent_pairs
    from bassray.eval.conditioning import conditioning_losses, conditioning_losses_by_time
    from bassray.models.pitch_classes import pitch_class_parts
    from bassray.models.unet1d import unet_for
    from bassray.train.diffusion_step import DiffusionObjective
    from bassray.train.ema import EMA

    setup = setup_worker(loop_config)
    config, rank, world, device = setup.config, setup.rank, setup.world, setup.device
    train_cfg = config.diffusion_training
    use_gpu = config.distributed.use_gpu
    if train_cfg.torch_threads > 0:
        torch.set_num_threads(train_cfg.torch_threads)

    model = unet_for(config)
    micro = train_cfg.batch_size // world
    step_flops = 0.0
    if rank == 0:  # FLOPs of one real step, counted on one crop (they grow linearly with the batch)
        from bassray.train.diffusion_step import self_condition_rate
        from bassray.train.step_flops import diffusion_step_flops
        crop = lambda dim: torch.randn(1, dim, train_cfg.crop_frames)  # noqa: E731
        step_flops = train_cfg.batch_size * counted_step_flops(
            lambda: diffusion_step_flops(model, crop(model.target_dim), crop(model.cond_dim), self_condition_rate(config)))
    compile_for_training([model], config.distributed.compile)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(),
        config=deepspeed_config(config.distributed, global_batch=train_cfg.batch_size, num_workers=world,
                                lr=train_cfg.learning_rate, betas=train_cfg.betas,
                                weight_decay=train_cfg.weight_decay, use_gpu=use_gpu,
                                scheduler=lr_scheduler_config(train_cfg.lr_schedule, train_cfg.max_steps,
                                                              train_cfg.lr_warmup_steps)))
    state = restore_checkpoint({"unet": engine})
    ema = EMA(engine.module, train_cfg.ema_decay)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            ema.load_state_dict(torch.load(Path(directory) / EMA_FILE, map_location=device))
    start_step = int(state["step"]) if state else 0

    tracker, val, fit_songs, fit_bounds = None, None, [], {}
    if rank == 0:
        fit_songs, fit_bounds = _musical_fit_songs(loop_config, config)
        tracker = RunTracker(loop_config["tracking_uri"], loop_config["experiment"], loop_config["run_name"],
                             loop_config["artifact_root"], tags={"stage": "diffusion", "config": config.name})
        tracker.log_params({**config.flat(), "num_workers": world,
                            "worker_node_ids": ",".join(setup.node_ids),
                            "parameters": sum(p.numel() for p in model.parameters()),
                            **autoencoder_versions(loop_config["mix_bundle"], loop_config["target_bundle"])})
        if state:
            # Evidence that a resume restored the training state rather than re-initialising it.
            tracker.log_metrics({"resume/from_step": start_step, "resume/optimizer_steps": optimizer_steps(engine),
                                 "resume/ema_updates": ema.num_updates}, step=start_step)
        try:
            mix, target, tracks = load_latent_pairs(loop_config["latent_dir"], "val", train_cfg.crop_frames,
                                                    limit=128, crops_per_track=4, with_tracks=True,
                                                    class_parts=pitch_class_parts(config))
            val = (torch.from_numpy(mix).to(device), torch.from_numpy(target).to(device), tracks)
        except (FileNotFoundError, ValueError) as exc:
            log.warning("no validation latents (%s): validation losses are skipped", exc)

    objective = DiffusionObjective(config, device)
    batches = infinite_batches("train", micro, {"mix": torch.float32, "target": torch.float32},
                               shuffle_buffer=8 * micro, device=device,
                               prefetch_batches=config.distributed.prefetch_batches)
    gen = torch.Generator(device=device).manual_seed(loop_config["seed"] * 1000 + rank + start_step)
    peak_flops = (world * measured_peak_flops(next(engine.module.parameters()).dtype, device)
                  if tracker is not None and step_flops > 0 else 0.0)
    window = StepWindow(train_cfg.batch_size, step_flops, peak_flops)
    metrics: dict[str, float] = {}
    for step in range(start_step, train_cfg.max_steps):
        batch = window.next_batch(batches)
        loss, metrics = objective(engine, batch["target"], batch["mix"], generator=gen)
        engine.backward(loss)
        engine.step()
        ema.update(engine.module)
        window.step_done()
        done = step + 1
        if tracker is not None and (done % train_cfg.log_every == 0 or done == train_cfg.max_steps):
            metrics.update({**window.metrics(), "lr": engine.get_lr()[0]})
            tracker.log_metrics(metrics, step=done)
            log.info("step %d/%d loss=%.4f", done, train_cfg.max_steps, metrics.get("loss", float("nan")))
        if tracker is not None and val is not None and (
                done % train_cfg.eval_every == 0 or done == train_cfg.max_steps):
            with window.excluded():
                ema_model = copy.deepcopy(engine.module)
                ema.copy_to(ema_model)
                losses = {**conditioning_losses(ema_model, val[0], val[1], groups=val[2]),
                          **conditioning_losses_by_time(ema_model, val[0], val[1], groups=val[2])}
                val_metrics = {f"val/{k}": v for k, v in losses.items()}
                tracker.log_metrics(val_metrics, step=done)
                metrics.update(val_metrics)
                try:
                    from bassray.inference import BassGenerator
                    generator = BassGenerator.from_parts(ema_model, loop_config["mix_bundle"],
                                                         loop_config["target_bundle"], loop_config["latent_dir"], config)
                    if fit_songs:
                        fit = {**_generated_fit(generator, config, fit_songs, done), **fit_bounds}
                        tracker.log_metrics(fit, step=done)
                        metrics.update(fit)
                    _log_generated_example(tracker, generator, config, val[0], done)
                except Exception as exc:  # evaluation is a nicety; never lose the run for it
                    log.warning("could not score or log generated examples: %s", exc)
        if done % train_cfg.checkpoint_every == 0 or done == train_cfg.max_steps:
            with window.excluded():
                save_checkpoint_and_report(
                    {"unet": engine}, {"stage": "diffusion", "step": done, "config": loop_config["config"],
                                       "latent_dir": loop_config["latent_dir"],
                                       "mix_bundle": loop_config["mix_bundle"],
                                       "target_bundle": loop_config["target_bundle"]},
                    {"step": done, **{k: float(v) for k, v in metrics.items()}},
                    extra=lambda d: torch.save(ema.state_dict(), d / EMA_FILE))


def train_ldm(config: Config, latent_dir: str | Path, mix_bundle: str | Path, target_bundle: str | Path,
              *, num_workers: int | None = None, use_gpu: bool | None = None, run_name: str | None = None,
              root: str | Path | None = None, seed: int = 0, experiment: str = "bassray-diffusion",
              eval_data_dir: str | Path | None = None) -> StageResult:
    """Train (or resume) the diffusion model; export, log and register the self-contained bundle.
    With ``eval_data_dir`` (audio shards with chords), evaluations also log the chord-tone agreement
    of bass lines generated for a few validation songs."""
    from bassray.distributed.latent_datasets import latent_pairs_dataset
    from bassray.distributed.pipeline_stats import PipelineStats
    home = bassray_home(root)
    if num_workers is not None:
        config.distributed.num_workers = num_workers
    if use_gpu is not None:
        config.distributed.use_gpu = use_gpu
    run_name = run_name or f"diffusion-{config.name}"
    resolve = lambda p: str(Path(p).resolve())  # noqa: E731
    ensure_ray()
    tracking_uri = default_tracking_uri(home)
    loop_config = {"config": config.to_dict(), "seed": seed, "latent_dir": resolve(latent_dir),
                   "mix_bundle": resolve(mix_bundle), "target_bundle": resolve(target_bundle),
                   "eval_data_dir": str(eval_data_dir) if eval_data_dir else None,
                   "tracking_uri": tracking_uri, "experiment": experiment, "run_name": run_name,
                   "artifact_root": str(home / "mlartifacts")}
    counts = PipelineStats()
    dataset = latent_pairs_dataset(latent_dir, "train", config, seed=seed, counts=counts,
                                   min_files_per_epoch=LATENT_FILES_PER_EPOCH)
    result = launch_stage(ldm_train_loop, loop_config, {"train": dataset}, run_name=run_name, home=home,
                          config=config)
    bundle_dir, run_id, version = export_and_register(
        result, label="diffusion training", home=home, run_name=run_name, tracking_uri=tracking_uri,
        experiment=experiment, model_name="bassray-diffusion",
        tags={"config": config.name, **autoencoder_versions(mix_bundle, target_bundle)},
        # Skipped corrupt members, unreadable shards and too-short tracks of this run, for the record.
        metrics={f"data/{k}": float(v) for k, v in counts.log_summary("latent crops").items()},
        step=config.diffusion_training.max_steps)
    return StageResult(run_name, result.checkpoint.path, bundle_dir, run_id, version,
                       dict(result.metrics or {}))
