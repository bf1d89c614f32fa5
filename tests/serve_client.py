"""A client of a served bassray app for the tests that start one: JSON reads and one small
/generate request (2 s of noise at 16 kHz, 2 steps), with the standard library only."""
from __future__ import annotations

import io
import json
import urllib.request

import numpy as np
import soundfile as sf


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
