"""`bassray serve`: the Ray Serve app of serve/app.py from a bundle folder, a bundle URI
(s3://...) or a model in the MLflow registry (models:/bassray-diffusion/3, or /latest)."""
from __future__ import annotations

import logging
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MODEL_URI = re.compile(r"^models:/(?P<name>[^/]+)/(?P<version>\d+|latest)$")


def resolve_model_uri(uri: str, tracking_uri: str, cache_dir: str | Path) -> dict[str, str]:
    """``models:/NAME/VERSION`` (or ``/latest``) -> {"bundle": local folder, "model": NAME,
    "model_version", "run_id"}: the registered version's bundle artifacts, downloaded once into
    ``cache_dir/NAME/VERSION`` through the tracking server."""
    import mlflow
    match = MODEL_URI.match(uri)
    if match is None:
        raise ValueError(f"{uri!r} is not a registry URI: use models:/NAME/VERSION or models:/NAME/latest")
    name, version = match["name"], match["version"]
    client = mlflow.MlflowClient(tracking_uri)
    try:
        if version == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise ValueError(f"model {name!r} has no versions in {tracking_uri}")
            found = max(versions, key=lambda v: int(v.version))
        else:
            found = client.get_model_version(name, version)
    except mlflow.exceptions.MlflowException as exc:
        raise ValueError(f"{uri} is not in the registry at {tracking_uri}: {exc.message}") from exc
    target = Path(cache_dir) / name / str(found.version)
    if not (target / "bundle.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=found.source, dst_path=str(partial),
                                                              tracking_uri=tracking_uri))
        if not (downloaded / "bundle.json").exists():
            raise ValueError(f"{uri} (source {found.source}) holds no bundle.json")
        shutil.rmtree(target, ignore_errors=True)
        downloaded.rename(target)  # complete or absent: a killed download is never served
        shutil.rmtree(partial, ignore_errors=True)
    log.info("serving %s version %s (run %s) from %s", name, found.version, found.run_id, target)
    return {"bundle": str(target), "model": name, "model_version": str(found.version),
            "run_id": found.run_id or ""}


def serve_forever(source: str, *, host: str, port: int, replicas: int, app_args: dict[str, Any],
                  tracking_uri: str, cache_dir: str | Path, stop: threading.Event | None = None) -> None:
    """Start (or join) Ray, run the app on ``host:port`` and block until SIGINT/SIGTERM."""
    from ray import serve

    from bassray.distributed.runner import ensure_ray
    from serve.app import build_app

    args = dict(app_args, num_replicas=replicas)
    if source.startswith("models:/"):
        args.update(resolve_model_uri(source, tracking_uri, cache_dir))
    else:
        args["bundle"] = source
    app = build_app(args)  # checks the bundle before Ray starts
    ensure_ray()
    # After ray.init, whose failure-signal handler would otherwise abort the process on SIGTERM.
    stop = stop or threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name="bassray", route_prefix="/")
    log.info("bassray is serving on http://%s:%d (Ctrl-C stops it)", host, port)
    print(f"serving on http://{host}:{port}", flush=True)
    stop.wait()
    serve.shutdown()
    import ray
    ray.shutdown()  # explicitly, not in an atexit hook: one of those aborted the process (SIGABRT)
