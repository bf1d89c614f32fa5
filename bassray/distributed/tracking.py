"""MLflow tracking for training runs: one thin wrapper used by rank 0 of every stage.

The default store is local (``sqlite:///<root>/mlflow.db``, artifacts under ``<root>/mlartifacts``);
``MLFLOW_TRACKING_URI`` points at a server instead. Artifact locations are always explicit: on Ray
workers the default artifact path lands in Ray's session directory and is lost.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from bassray.remote import is_uri

log = logging.getLogger(__name__)


def default_tracking_uri(root: str | Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve()}/mlflow.db"


class RunTracker:
    """Start (or resume) one MLflow run and log to it."""

    def __init__(self, tracking_uri: str, experiment: str, run_name: str,
                 artifact_root: str | None, run_id: str | None = None, tags: dict | None = None):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        # An explicit client, never mlflow.set_tracking_uri: that also sets MLFLOW_TRACKING_URI in
        # os.environ, so every later run in the process (and its subprocesses) would log here.
        self.client = mlflow.MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = None
            if artifact_root:
                location = (f"{artifact_root.rstrip('/')}/{experiment}" if is_uri(artifact_root)
                            else str(Path(artifact_root).resolve() / experiment))
            experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            experiment_id = found.experiment_id
        if run_id is None:
            # Resume the run of the same name, so a resumed training continues one MLflow run.
            runs = self.client.search_runs([experiment_id], f"tags.mlflow.runName = '{run_name}'",
                                           max_results=1)
            run_id = runs[0].info.run_id if runs else None
        if run_id is None:
            run = self.client.create_run(experiment_id, run_name=run_name, tags=tags or {})
            run_id = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self._last_step: dict[str, int] = {}

    def log_params(self, params: dict[str, Any]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        for key, value in params.items():
            if key not in existing:  # MLflow refuses to change a param; a resumed run keeps its own
                self.client.log_param(self.run_id, key, str(value)[:6000])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log each metric at ``step``, once: a training that resumes from a checkpoint repeats the
        steps between that checkpoint and the failure, and those steps are already in the run, so
        they are skipped (the history stays one value per step, without gaps)."""
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()
                 if value is not None and np.isfinite(value) and step > self._logged_through(key)]
        if batch:  # one write for all of them: a metric at a time cost 19 ms a call on a local store
            self.client.log_batch(self.run_id, metrics=batch)
            self._last_step.update({m.key: step for m in batch})

    def _logged_through(self, key: str) -> int:
        if key not in self._last_step:
            history = self.client.get_metric_history(self.run_id, key)
            self._last_step[key] = max((m.step for m in history), default=-1)
        return self._last_step[key]

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def log_audio(self, name: str, audio: np.ndarray, sample_rate: int, step: int) -> None:
        from bassray.audio import write_audio
        with tempfile.TemporaryDirectory() as tmp:
            path = write_audio(Path(tmp) / f"{name}-step{step:07d}.wav", audio, sample_rate)
            self.log_artifact(path, "audio")

    def log_spectrograms(self, name: str, spectrograms: dict[str, np.ndarray], step: int) -> None:
        """One figure with a row per labelled log-magnitude spectrogram ``[freq, frames]``."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(len(spectrograms), 1, figsize=(8, 2.2 * len(spectrograms)),
                                 squeeze=False)
        for ax, (label, spec) in zip(axes[:, 0], spectrograms.items()):
            ax.imshow(spec, origin="lower", aspect="auto", cmap="magma")
            ax.set_title(label, fontsize=9)
            ax.set_axis_off()
        fig.tight_layout()
        self.client.log_figure(self.run_id, fig, f"spectrograms/{name}-step{step:07d}.png")
        plt.close(fig)

    def register_bundle(self, bundle_dir: str | Path, model_name: str,
                        tags: dict[str, str] | None = None) -> str:
        """Log a bundle directory as an artifact and register it as a new model version."""
        self.log_artifacts(bundle_dir, "bundle")
        try:
            self.client.get_registered_model(model_name)
        except mlflow.exceptions.MlflowException:
            self.client.create_registered_model(model_name)
        source = f"runs:/{self.run_id}/bundle"
        version = self.client.create_model_version(model_name, source, run_id=self.run_id,
                                                   tags=tags or {})
        log.info("registered %s version %s from %s", model_name, version.version, source)
        return str(version.version)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)
