"""End to end on local Ray with DeepSpeed on the CPU: shards -> both autoencoders (two workers,
resumed) -> latents -> diffusion model -> generation from the registered bundles."""
from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from bassray.config import load_config
from bassray.data.latents import LatentStats
from bassray.data.sine_stems import sine_segments
from bassray.data.shards import write_shards
from bassray.eval.evaluate import FLOOR_TO_CEILING

pytestmark = pytest.mark.slow

STEPS = ["autoencoder_training.log_every=1", "autoencoder_training.eval_every=2",
         "autoencoder_training.checkpoint_every=2", "autoencoder_training.adversarial_start_step=1",
         "autoencoder_training.batch_size=4", "diffusion_training.batch_size=4",
         "diffusion_training.log_every=1", "diffusion_training.eval_every=2",
         "diffusion_training.checkpoint_every=2", "sampler.steps=2"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    config = load_config("tiny")
    write_shards(sine_segments(10, 6.0, config.audio.sample_rate, config.audio.channels, seed=0), out,
                 shard_target_mb=0.2, val_fraction=0.2, test_fraction=0.1, split_seed=0)
    return out


def _metric_steps(tracking_uri: str, run_id: str, key: str) -> list[int]:
    client = mlflow.MlflowClient(tracking_uri)
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_stages_train_resume_register_and_generate(shards, bassray_home, ray_session, tmp_path):
    from bassray.distributed.encode_latents import encode_latents
    from bassray.distributed.tracking import default_tracking_uri
    from bassray.distributed.train_autoencoder import train_autoencoder
    from bassray.distributed.train_ldm import train_ldm
    from bassray.inference import BassGenerator, GenerationSettings
    from bassray.bundles.checkpoints import read_checkpoint_state

    uri = default_tracking_uri(bassray_home)
    # Mix autoencoder on two workers, 2 steps; then the same run name resumes to 4 steps.
    first = train_autoencoder(load_config("tiny", STEPS + ["autoencoder_training.max_steps=2"]), "mix",
                              shards, num_workers=2, root=bassray_home, run_name="ae-mix")
    resumed = train_autoencoder(load_config("tiny", STEPS + ["autoencoder_training.max_steps=4"]), "mix",
                                shards, num_workers=2, root=bassray_home, run_name="ae-mix")
    assert resumed.mlflow_run_id == first.mlflow_run_id
    assert _metric_steps(uri, first.mlflow_run_id, "gen/rec") == [1, 2, 3, 4]  # continued, not restarted
    assert int(resumed.model_version) == int(first.model_version) + 1
    data_counts = mlflow.MlflowClient(uri).get_run(first.mlflow_run_id).data.metrics
    for key in ("perf/mfu", "perf/data_wait_fraction"):  # speed of both engines' steps, per window
        values = [m.value for m in mlflow.MlflowClient(uri).get_metric_history(first.mlflow_run_id, key)]
        assert len(values) == 4 and all(0 <= v < 1 for v in values)
    assert data_counts["data/shards"] > 0 and data_counts["data/crops"] > 0  # pipeline stats recorded
    versions = mlflow.MlflowClient(uri).search_model_versions("name='bassray-mix-autoencoder'")
    assert len(versions) == 2
    bundle_meta = json.loads((resumed.bundle_dir / "registry.json").read_text())
    assert bundle_meta["version"] == resumed.model_version

    bass = train_autoencoder(load_config("tiny", STEPS + ["autoencoder_training.max_steps=2"]), "bass",
                             shards, num_workers=1, root=bassray_home, run_name="ae-bass")
    latents = tmp_path / "latents"
    summary = encode_latents(load_config("tiny"), shards, latents, resumed.bundle_dir, bass.bundle_dir)
    assert summary["tracks"]["train"] > 0
    # The level at which generation places the bass: the training median of bass minus mix.
    offset = LatentStats.load(latents).target_minus_mix_db
    assert offset is not None and -60 < offset < 20
    config = load_config("tiny", STEPS + ["diffusion_training.max_steps=2", "diffusion_training.crop_frames=4"])
    ldm = train_ldm(config, latents, resumed.bundle_dir, bass.bundle_dir, num_workers=1,
                    root=bassray_home, run_name="ldm")
    assert read_checkpoint_state(ldm.checkpoint_path)["step"] == 2  # local storage path here
    version = mlflow.MlflowClient(uri).get_model_version("bassray-diffusion", ldm.model_version)
    assert version.tags["mix_autoencoder_version"] == f"bassray-mix-autoencoder/{resumed.model_version}"
    for key in ("val/v_loss_true_mix", "val/v_loss_null_mix", "val/v_loss_mismatched_mix"):
        assert _metric_steps(uri, ldm.mlflow_run_id, key) == [2]
    mfu = mlflow.MlflowClient(uri).get_metric_history(ldm.mlflow_run_id, "perf/mfu")
    assert sorted(m.step for m in mfu) == [1, 2] and all(0 < m.value < 1 for m in mfu)  # against a sound peak
    wait = mlflow.MlflowClient(uri).get_metric_history(ldm.mlflow_run_id, "perf/data_wait_fraction")
    assert len(wait) == 2 and all(0 <= m.value <= 1 for m in wait)

    # `bassray export` turns the run's newest checkpoint into an equivalent bundle.
    from bassray.cli import main as cli_main
    exported = tmp_path / "exported"
    assert cli_main(["export", str(bassray_home / "ray_results" / "ldm"), "-o", str(exported)]) == 0
    assert BassGenerator.from_bundle(exported).sample_rate == config.audio.sample_rate

    generator = BassGenerator.from_bundle(ldm.bundle_dir)
    mix = np.random.default_rng(0).normal(0, 0.1, size=(2, 12345)).astype(np.float32)
    out = generator.generate([mix], [GenerationSettings(steps=2)])[0]
    assert out.shape == mix.shape and np.isfinite(out).all()

    # The contrastive model on Ray Train, registered (the report's matching and style distances use it).
    from bassray.distributed.train_contrastive import train_contrastive
    from bassray.models.contrastive import ContrastiveConfig
    contrastive = train_contrastive(load_config("tiny"), shards, max_steps=2, batch_size=4, checkpoint_every=2,
                                    contrastive=ContrastiveConfig(crop_seconds=2.0, channels=16, embed_dim=16),
                                    root=bassray_home, run_name="contrastive")
    assert mlflow.MlflowClient(uri).get_model_version("bassray-contrastive", contrastive.model_version)
    assert _metric_steps(uri, contrastive.mlflow_run_id, "loss") == [2]

    # `bassray evaluate`: musical fit of generated bass lines on held-out songs with chords, then
    # every experiment section on small grids.
    eval_shards = tmp_path / "eval_shards"
    rate = config.audio.sample_rate
    write_shards(_songs_with_chords(3, rate), eval_shards, shard_target_mb=0.2,
                 val_fraction=0.0, test_fraction=1.0, split_seed=0)
    # Train songs for the program classifier, written apart (a write replaces a folder's shard set).
    write_shards(_songs_with_chords(4, rate, first=3), tmp_path / "train_shards", shard_target_mb=0.2,
                 val_fraction=0.0, test_fraction=0.0, split_seed=0)
    for shard in (tmp_path / "train_shards").glob("train-*.tar"):
        shard.rename(eval_shards / shard.name)
    report_dir = tmp_path / "report"
    assert cli_main(["evaluate", str(ldm.bundle_dir), str(eval_shards), "--songs", "3", "--steps", "2",
                     "--actors", "1", "--out", str(report_dir), "--contrastive", str(contrastive.bundle_dir),
                     "--steps-grid", "1,2", "--weights", "1,3", "--phis", "0,0.7", "--fit-songs", "2",
                     "--matching-songs", "3", "--length-songs", "2", "--length-multiples", "1,2"]) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert report["songs"] == 3 and len(report["per_song"]) == 3
    kinds = report["kinds"]
    # tiny ships with the harmony snap on, so the network's own samples are scored beside it
    assert set(kinds) == {"true", "reconstruction", "generated", "generated_no_snap", "unconditional", "other_song",
                          "beat_grid", "mix_onsets"}
    for reference in ("beat_grid", "mix_onsets"):  # rhythm-only references
        assert set(kinds[reference]) == {"onset_f1", "note_rate"}
    assert set(report["generated_no_snap_floor_to_ceiling"]) == set(FLOOR_TO_CEILING)
    assert kinds["true"]["chord_tone"] >= 0.8  # the ceiling: a bass on its chords' roots
    # Articulation against the true bass: the ceiling scores itself perfectly on what it is its own reference for
    assert kinds["true"]["sounding_iou"] == 1.0 and kinds["true"]["register_st"] == 0.0
    assert all(c in kinds[k] for k in ("generated", "unconditional", "other_song")
               for c in ("sounding_iou", "harmonic_share", "register_st"))
    assert "pitch_accuracy" in report["reconstruction_fidelity"]
    text = (report_dir / "report.md").read_text()
    assert "| true bass (ceiling) |" in text and "Fréchet audio distance" in text
    assert "| generated bass without the harmony snap |" in text and "## Articulation" in text
    fad = report["fad"]  # every kind against the true basses, naming embedding and counts
    assert set(fad) == {"other_songs", "reconstruction", "generated", "generated_no_snap",
                        "unconditional"}  # other songs: train split
    assert all(r["embedding"] == "chroma-mfcc" and r["clips"] == 3 and r["fad"] >= 0 for r in fad.values())
    for row in report["per_song"]:
        for kind in ("mix", "generated", "generated_no_snap", "true", "reconstruction", "unconditional", "other_song"):
            assert (report_dir / "audio" / f"{row['key']}.{kind}.wav").exists()
    assert [(p["sampler"], p["steps"]) for p in report["fad_steps"]["points"]] == [
        ("ddim", 1), ("ddim", 2), ("dpmpp-2m", 1), ("dpmpp-2m", 2)]
    assert len(report["fad_guidance"]["points"]) == 4
    for section in ("fad_steps", "fad_guidance"):
        assert (report_dir / report[section]["plot"]).exists()
        assert all(p["fad"] >= 0 and 0 <= p["chord_tone"] <= 1 for p in report[section]["points"])
    # Every section records the snap width it decoded with, and scores the same samples without it.
    width = config.sampler.harmony_snap
    assert width > 0 and all(p["harmony"] == width and 0 <= p["chord_tone_no_snap"] <= 1
                             for s in ("fad_steps", "fad_guidance") for p in report[s]["points"])
    assert report["matching"]["harmony"] == report["style"]["harmony"] == report["length"]["harmony"] == width
    assert set(report["matching"]["top1"]) == {"generated", "generated_no_snap", "true", "shuffled"}
    assert (report_dir / "matching.png").exists()
    assert set(report["style"]["table"]) == {"grounded", "ungrounded", "grounded, without the harmony snap",
                                             "ungrounded, without the harmony snap", "true bass (another program)"}
    assert "contrastive_distance" in report["style"]["table"]["grounded"]
    assert [len(v) for v in report["length"]["multiples"].values()] == [1, 2]
    assert all("chord_tone_no_snap" in s for v in report["length"]["multiples"].values() for s in v)
    assert text.count(f"harmony snap at width {width:g}") == 5  # both sweeps, matching, style, length
    assert report["skipped"] == {} and "Sections not in this report" not in text  # every section ran
    page = (report_dir / "report.html").read_text()
    assert "<audio" in page and "Length generalisation" in page and "Style grounding" in page

    # A section run alone merges into the report it finds.
    assert cli_main(["evaluate", str(ldm.bundle_dir), str(eval_shards), "--songs", "3", "--out", str(report_dir),
                     "--only", "fad-steps", "--steps-grid", "3", "--samplers", "dpmpp-2m", "--fit-songs", "1"]) == 0
    merged = json.loads((report_dir / "report.json").read_text())
    assert [(p["sampler"], p["steps"]) for p in merged["fad_steps"]["points"]] == [("dpmpp-2m", 3)]
    assert merged["per_song"] == report["per_song"] and merged["style"] == report["style"]


def _songs_with_chords(n: int, rate: int, first: int = 0):
    """Songs with ground truth: a harmonic bass on each bar's chord root, a sine triad as the other
    stem, one chord per second. Even songs' bass is bright (GM program 33), odd songs' dull (38)."""
    from bassray.data.shards import TrackSegment
    segments = []
    for i in range(first, first + n):
        harmonics = 6 if i % 2 == 0 else 2
        roots = [(i * 5 + 7 * b) % 12 for b in range(4)]
        t = np.arange(4 * rate) / rate
        bass, keys = np.zeros_like(t), np.zeros_like(t)
        for b, root in enumerate(roots):
            on = (t >= b) & (t < b + 1)
            f0 = 440.0 * 2 ** ((36 + root - 69) / 12)
            tt = t[on] - b
            bass[on] = np.exp(-2 * tt) * sum(0.3 / h * np.sin(2 * np.pi * h * f0 * tt) for h in range(1, harmonics))
            keys[on] = sum(0.05 * np.sin(2 * np.pi * 440.0 * 2 ** ((60 + root + k - 69) / 12) * tt) for k in (0, 4, 7))
        meta = {"chords": [{"start": float(b), "end": float(b + 1), "root": r, "intervals": [0, 4, 7]}
                           for b, r in enumerate(roots)],
                "tempo": 120.0, "programs": {"bass": 33 if i % 2 == 0 else 38}, "parts": {"bass": {"notes": [[36 + r, float(b), float(b + 1), 100]
                                                            for b, r in enumerate(roots)]}}}
        stereo = lambda x: np.stack([x, x]).astype(np.float32)  # noqa: E731
        segments.append(TrackSegment(key=f"song{i}", track_id=f"song{i}", sample_rate=rate,
                                     stems={"bass": stereo(bass), "piano": stereo(keys)}, meta=meta))
    return segments
