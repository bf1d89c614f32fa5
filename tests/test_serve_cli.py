"""`bassray serve models:/NAME/VERSION` as a user runs it: a subprocess that resolves the model
through the MLflow registry, serves it on 127.0.0.1 and stops on SIGTERM."""
from __future__ import annotations

import signal
import sys

import pytest

from bassray.bench.untrained_bundle import write_untrained_bundle
from bassray.config import load_config
from ray_cluster import REPO, cluster_env
from serve_client import serve_on_a_free_port

pytestmark = pytest.mark.slow


def registered_bundle(home) -> tuple[str, str]:
    from bassray.distributed.tracking import RunTracker, default_tracking_uri
    bundle = write_untrained_bundle(home / "trained" / "diffusion", load_config("tiny"))
    tracker = RunTracker(default_tracking_uri(home), "bassray-diffusion", "served", str(home / "mlartifacts"))
    version = tracker.register_bundle(bundle, "bassray-diffusion")
    tracker.finish()
    return version, tracker.run_id


def test_serve_a_registered_model(tmp_path):
    home = tmp_path / "home"
    version, run_id = registered_bundle(home)
    env = cluster_env(BASSRAY_HOME=str(home))
    env.pop("MLFLOW_TRACKING_URI", None)
    log = tmp_path / "serve.log"
    info, exit_code = serve_on_a_free_port(
        lambda port: [sys.executable, "-m", "bassray.cli", "serve", "models:/bassray-diffusion/latest",
                      "--port", str(port), "--device", "cpu"], env, REPO, log,
        stop_signal=signal.SIGTERM, timeout_s=240)  # SIGTERM: serve.shutdown(), then Ray's own at exit
    assert info["model"]["registry"] == {"model": "bassray-diffusion", "model_version": version, "run_id": run_id}
    assert (home / "bundle-cache" / "bassray-diffusion" / version / "bundle.json").exists()
    assert exit_code == 0, log.read_text(errors="replace")[-3000:]


def test_serve_refuses_before_starting_anything(tmp_path, monkeypatch, caplog):
    """Bad sources and unsafe settings end with exit code 2 and a reason, before Ray starts
    (in-process: the CLI checks everything ahead of ray.init)."""
    from bassray.cli import main
    monkeypatch.setenv("BASSRAY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BASSRAY_API_KEYS_FILE", raising=False)
    bundle = str(write_untrained_bundle(tmp_path / "bundle", load_config("tiny")))
    weak = tmp_path / "keys"
    weak.write_text("alice:short\n")
    for argv, reason in ((["models:/no-such-model/3"], "not in the registry"),
                         ([str(tmp_path)], "not a bundle folder"),
                         ([bundle, "--host", "0.0.0.0"], "needs API keys"),
                         ([bundle, "--host", "0.0.0.0", "--api-keys-file", str(weak)], "at least 16")):
        caplog.clear()
        assert main(["serve", *argv]) == 2, argv
        assert reason in caplog.text, (argv, caplog.text)
