"""`bassray serve`: the Ray Serve app of bassray/serving/app.py from a bundle folder, a bundle URI
(s3://...) or a model in the MLflow registry (models:/bassray-diffusion/3, /latest or @alias)."""
from __future__ import annotations

import logging
import signal
import socket
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ValueError(f"cannot serve on {host}:{port} ({exc.strerror}): pick another --port") from exc


def serve_forever(source: str, *, host: str, port: int, replicas: int, app_args: dict[str, Any],
                  tracking_uri: str, cache_dir: str | Path, stop: threading.Event | None = None) -> None:
    """Start (or join) Ray, run the app behind a body-bounding front on ``host:port`` (Ray's own
    proxy listens on 127.0.0.1 only, see bassray/serving/front.py) and block until SIGINT/SIGTERM."""
    from ray import serve

    from bassray.distributed.runner import ensure_ray
    from bassray.serving.app import AppArgs, build_app
    from bassray.serving.front import BodyLimitFront
    from bassray.serving.validation import FORM_SLACK_BYTES

    args = dict(app_args, num_replicas=replicas, bundle=source, tracking_uri=tracking_uri,
                bundle_cache=str(cache_dir))
    app = build_app(args)  # resolves and checks the bundle before Ray starts
    _check_free(host, port)
    limit_bytes = int(AppArgs(**args).max_upload_mb * 1e6) + FORM_SLACK_BYTES
    ensure_ray()
    # After ray.init, whose failure-signal handler would otherwise abort the process on SIGTERM.
    stop = stop or threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    internal = _free_loopback_port()
    serve.start(http_options={"host": "127.0.0.1", "port": internal})
    serve.run(app, name="bassray", route_prefix="/")
    front = BodyLimitFront(host, port, f"http://127.0.0.1:{internal}", limit_bytes).start()
    log.info("bassray is serving on http://%s:%d (Ctrl-C stops it)", host, port)
    print(f"serving on http://{host}:{port}", flush=True)
    stop.wait()
    front.stop()
    serve.shutdown()
    import ray
    ray.shutdown()  # explicitly, not in an atexit hook: one of those aborted the process (SIGABRT)
