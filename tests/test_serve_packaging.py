"""The Serve app as users start it: `serve run` with a deploy config whose bundle is a registry alias
(what a RayService does), and both `serve run` and `bassray serve` from a wheel installed in a fresh
venv, run outside the checkout."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bassray.bench.untrained_bundle import write_untrained_bundle
from bassray.config import load_config
from ray_cluster import REPO, cluster_env
from serve_client import serve_on_a_free_port

pytestmark = pytest.mark.slow
SERVE_CLI = "import sys; from ray.serve.scripts import cli; sys.exit(cli())"


def _deploy_config(tmp_path: Path, port: int, args: dict) -> Path:
    config = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    config.pop("grpc_options", None)
    app = config["applications"][0]
    app["args"] = {**args, "device": "cpu", "max_replicas": 1, "cpus_per_replica": 0.5}
    app["deployments"] = [{"name": "BassGenerator", "autoscaling_config": {"min_replicas": 1, "max_replicas": 1}}]
    path = tmp_path / "serve-config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_serve_run_serves_a_registry_alias(tmp_path):
    """The shipped deploy config with `bundle: models:/NAME@ALIAS`, through `serve run`."""
    import mlflow

    from bassray.distributed.tracking import RunTracker, default_tracking_uri
    home = tmp_path / "home"
    tracking_uri = default_tracking_uri(home)
    tracker = RunTracker(tracking_uri, "bassray-diffusion", "served", str(home / "mlartifacts"))
    bundle = write_untrained_bundle(home / "trained" / "diffusion", load_config("tiny"))
    version = tracker.register_bundle(bundle, "bassray-diffusion")
    tracker.register_bundle(bundle, "bassray-diffusion")  # a newer version the alias does not name
    tracker.finish()
    mlflow.MlflowClient(tracking_uri).set_registered_model_alias("bassray-diffusion", "production", version)

    def command(port: int) -> list[str]:
        config = _deploy_config(tmp_path, port, {"bundle": "models:/bassray-diffusion@production",
                                                 "tracking_uri": tracking_uri,
                                                 "bundle_cache": str(tmp_path / "cache")})
        return [sys.executable, "-c", SERVE_CLI, "run", str(config)]

    env = cluster_env(BASSRAY_HOME=str(home))
    env.pop("MLFLOW_TRACKING_URI", None)
    info, _ = serve_on_a_free_port(command, env, REPO, tmp_path / "serve-run.log")
    assert info["model"]["registry"] == {"model": "bassray-diffusion", "model_version": version,
                                         "run_id": tracker.run_id}
    assert (tmp_path / "cache" / "bassray-diffusion" / version / "bundle.json").exists()


def test_an_installed_wheel_serves_outside_the_checkout(tmp_path):
    """Build the wheel, install it without the checkout into a fresh venv (its dependencies come from
    this environment through a path file), then serve with `serve run` and `bassray serve`."""
    # No PYTHONPATH anywhere here: a checkout on it (as when the suite runs from a snapshot) would
    # shadow the wheel, and pip would take the checkout's metadata for an installed bassray.
    env = cluster_env(BASSRAY_HOME=str(tmp_path / "home"), PYTHONPATH="")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(REPO)], env=env, check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("bassray-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               env=env, check=True, capture_output=True, text=True).stdout.strip())
    # This environment's packages, as plain path entries: their own path files (the checkout's
    # editable install among them) are not read, so `bassray` can only come from the wheel.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", str(wheel)],
                   env=env, check=True, capture_output=True, timeout=300)
    where = subprocess.run([python, "-c", "import bassray.serving.app as a; print(a.__file__)"], cwd=tmp_path,
                           env=env, check=True, capture_output=True, text=True).stdout.strip()
    assert where.startswith(str(site)), where
    assert (Path(where).with_name("page.html")).exists()

    bundle = write_untrained_bundle(tmp_path / "bundle", load_config("tiny"))
    info, _ = serve_on_a_free_port(
        lambda port: [python, "-c", SERVE_CLI, "run", str(_deploy_config(tmp_path, port, {"bundle": str(bundle)}))],
        env, tmp_path, tmp_path / "wheel-serve-run.log")
    assert info["model"]["sample_rate"] == 16000
    serve_on_a_free_port(
        lambda port: [python, "-m", "bassray.cli", "serve", str(bundle), "--port", str(port), "--device", "cpu"],
        env, tmp_path, tmp_path / "wheel-bassray-serve.log")
