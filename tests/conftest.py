"""Shared fixtures. Ray starts once per session (few CPUs) for the slow tests that need it."""
from __future__ import annotations

import os

# Tests run their own local Ray; production configs keep token auth on.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray Train's controller takes reports every 2 s by default, and each checkpoint waits until its
# report is taken (runner.save_checkpoint_and_report): tests checkpoint every few steps, so poll faster.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance for the whole session, shut down at the end."""
    import ray
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture()
def bassray_home(tmp_path, monkeypatch):
    """Runs, bundles and the MLflow store go to a temporary folder, never the user's home."""
    home = tmp_path / "home"
    monkeypatch.setenv("BASSRAY_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home
