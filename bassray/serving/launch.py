"""`bassray serve`: the Ray Serve app of bassray/serving/app.py from a bundle folder, a bundle URI
(s3://...) or a model in the MLflow registry (models:/bassray-diffusion/3, /latest or @alias)."""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def serve_forever(source: str, *, host: str, port: int, replicas: int, app_args: dict[str, Any],
                  tracking_uri: str, cache_dir: str | Path, stop: threading.Event | None = None) -> None:
    """Start (or join) Ray, run the app on ``host:port`` and block until SIGINT/SIGTERM."""
    from ray import serve

    from bassray.distributed.runner import ensure_ray
    from bassray.serving.app import build_app

    args = dict(app_args, num_replicas=replicas, bundle=source, tracking_uri=tracking_uri,
                bundle_cache=str(cache_dir))
    app = build_app(args)  # resolves and checks the bundle before Ray starts
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
