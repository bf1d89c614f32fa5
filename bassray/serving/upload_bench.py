"""What Ray Serve's HTTP proxy holds while oversized uploads stream in, straight to the proxy and
through `bassray serve`'s body-bounding front (bassray/serving/front.py).

    python jobs/benchmark.py uploads [--uploads 4] [--mb 200] [--limit-mb 50]

Serves an untrained tiny bundle (the real app; its weights do not matter here) on 127.0.0.1, sends
``--uploads`` concurrent chunked bodies of ``--mb`` MB each, and samples the RSS of the proxy actor
(and of this process, which runs the front) every 10 ms. Prints the peak growth over the idle level,
the answers and the time to the last answer, for both routes.
"""
from __future__ import annotations

import argparse
import http.client
import tempfile
import threading
import time
from pathlib import Path

CHUNK = bytes(range(256)) * 4096  # 1 MiB of non-audio bytes: refused on size long before parsing


def _upload(port: int, megabytes: int, statuses: list, sent: list) -> None:
    boundary = "bassraybench"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"mix\"; filename=\"big.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(megabytes):
            sent.append(len(CHUNK))
            yield CHUNK
        yield f"\r\n--{boundary}--\r\n".encode()

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request("POST", "/generate", body=body(), encode_chunked=True,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        statuses.append(connection.getresponse().status)
    except (ConnectionError, http.client.HTTPException, OSError) as exc:  # closed on us after the 413
        statuses.append(type(exc).__name__)
    finally:
        connection.close()


class PeakRss:
    """Samples the RSS of some PIDs in a thread; ``peak_mb(pid)`` is the most seen minus the first."""

    def __init__(self, pids: list[int], every_s: float = 0.01):
        import psutil
        self.processes = {pid: psutil.Process(pid) for pid in pids}
        self.first = {pid: p.memory_info().rss for pid, p in self.processes.items()}
        self.peak = dict(self.first)
        self.every_s, self._stop = every_s, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid, process in self.processes.items():
                self.peak[pid] = max(self.peak[pid], process.memory_info().rss)
            time.sleep(self.every_s)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak_mb(self, pid: int) -> float:
        return (self.peak[pid] - self.first[pid]) / 2**20


def _proxy_pid() -> int:
    """Ray Serve's HTTP proxy among this process's own descendants (the Ray that ``run`` started)."""
    import psutil
    for _ in range(100):
        for child in psutil.Process().children(recursive=True):
            try:
                if "ProxyActor" in " ".join(child.cmdline()):
                    return child.pid
            except psutil.Error:
                continue
        time.sleep(0.1)
    raise RuntimeError("no ProxyActor process found under this process")


def measure(port: int, proxy_pid: int, uploads: int, megabytes: int) -> dict:
    import os
    statuses: list = []
    sent: list = []
    threads = [threading.Thread(target=_upload, args=(port, megabytes, statuses, sent)) for _ in range(uploads)]
    started = time.perf_counter()
    with PeakRss([proxy_pid, os.getpid()]) as rss:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.5)  # what the proxy still holds once the answers are out
    return {"statuses": sorted(map(str, statuses)), "seconds": time.perf_counter() - started,
            "proxy_peak_mb": rss.peak_mb(proxy_pid), "front_process_peak_mb": rss.peak_mb(os.getpid()),
            "client_sent_mb": sum(sent) / 2**20}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uploads", type=int, default=4)
    parser.add_argument("--mb", type=int, default=200, help="size of each upload")
    parser.add_argument("--limit-mb", type=float, default=50.0, help="the app's max_upload_mb")


def run(args: argparse.Namespace) -> None:
    import ray
    from ray import serve

    from bassray.bench.untrained_bundle import write_untrained_bundle
    from bassray.config import load_config
    from bassray.serving.app import build_app
    from bassray.serving.front import BodyLimitFront
    from bassray.serving.launch import _free_loopback_port
    from bassray.serving.validation import FORM_SLACK_BYTES

    scratch = tempfile.TemporaryDirectory(prefix="bassray-upload-bench-")
    bundle = write_untrained_bundle(Path(scratch.name) / "bundle", load_config("tiny"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    internal, public = _free_loopback_port(), _free_loopback_port()
    serve.start(http_options={"host": "127.0.0.1", "port": internal})
    serve.run(build_app({"bundle": str(bundle), "device": "cpu", "max_upload_mb": args.limit_mb,
                         "cpus_per_replica": 0.5}), name="bassray", route_prefix="/")
    proxy_pid = _proxy_pid()
    front = BodyLimitFront("127.0.0.1", public, f"http://127.0.0.1:{internal}",
                           int(args.limit_mb * 1e6) + FORM_SLACK_BYTES).start()
    try:
        rows = {"straight to Ray's proxy": measure(internal, proxy_pid, args.uploads, args.mb),
                "through the front (bassray serve)": measure(public, proxy_pid, args.uploads, args.mb)}
    finally:
        front.stop()
        serve.shutdown()
        ray.shutdown()
        scratch.cleanup()
    print(f"{args.uploads} concurrent chunked uploads of {args.mb} MB each, upload limit {args.limit_mb:g} MB "
          f"(peak RSS growth over idle; the front runs in this process)")
    print("| route | answers | proxy peak MB | front process peak MB | client sent MB | seconds |")
    print("|---|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {', '.join(r['statuses'])} | {r['proxy_peak_mb']:.0f} | {r['front_process_peak_mb']:.0f} "
              f"| {r['client_sent_mb']:.0f} | {r['seconds']:.1f} |")
