"""A client of a served bassray app for the tests that start one: JSON reads and one small
/generate request (2 s of noise at 16 kHz, 2 steps), and a server process of the test's own,
started on a free port, checked and stopped by PID."""
from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

from ray_cluster import free_port


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def generate_once(port: int) -> tuple[np.ndarray, int]:
    """POST /generate with a 2 s mix; the decoded answer and its sample rate."""
    buffer = io.BytesIO()
    sf.write(buffer, np.random.default_rng(0).normal(0, 0.1, 16000 * 2).astype(np.float32), 16000, format="WAV")
    boundary = "bassrayboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"steps\"\r\n\r\n2\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"mix\"; filename=\"mix.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode() + buffer.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/generate", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
        return sf.read(io.BytesIO(response.read()))


class PortTaken(Exception):
    """The port chosen was free, but something (often the server's own Ray workers) bound it first."""


def serve_on_a_free_port(make_command: Callable[[int], list[str]], env: dict, cwd: Path, log: Path,
                         **kwargs) -> tuple[dict, int]:
    """:func:`serve_and_check` on a free port, choosing again where the port was taken before the
    server bound it (a race between choosing and binding that no choice can rule out)."""
    for _ in range(3):
        port = free_port()
        try:
            return serve_and_check(make_command(port), port, env, cwd, log, **kwargs)
        except PortTaken:
            continue
    raise AssertionError("three free ports were taken before the server could bind them:\n"
                         + log.read_text(errors="replace")[-4000:])


def serve_and_check(command: list[str], port: int, env: dict, cwd: Path, log: Path,
                    stop_signal: int = signal.SIGINT, timeout_s: float = 300) -> tuple[dict, int]:
    """Start a server process group of our own, wait for /healthz, generate once, stop it by PID
    with ``stop_signal``; its /info and its exit code."""
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                text = log.read_text(errors="replace")
                if "address already in use" in text:
                    raise PortTaken(port)
                raise AssertionError(text[-4000:])
            try:
                if get_json(f"http://127.0.0.1:{port}/healthz")["status"] == "ok":
                    break
            except (OSError, http.client.HTTPException):  # not up yet, or another program's port
                pass
            assert time.monotonic() < deadline, f"no answer in {timeout_s:.0f} s:\n" + log.read_text(errors="replace")[-4000:]
            time.sleep(1)
        info = get_json(f"http://127.0.0.1:{port}/info")
        audio, rate = generate_once(port)
        assert rate == 16000 and len(audio) == 32000
    finally:
        proc.send_signal(stop_signal)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return info, proc.returncode
