"""`bassray serve`'s body-bounding front, in front of a small upstream that counts what reaches it
(no Ray): oversized bodies are refused with 413 and never reach the upstream beyond the limit;
everything else passes through unchanged."""
from __future__ import annotations

import asyncio
import http.client
import json
import threading

import pytest
from aiohttp import web

from bassray.serving.front import BodyLimitFront
from ray_cluster import free_ports

LIMIT = 1_000_000
MB = b"x" * 1_000_000


class CountingUpstream:
    """An aiohttp server on 127.0.0.1 that reads every body and remembers how many bytes came."""

    def __init__(self, port: int):
        self.port, self.received = port, []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def handle(request: web.Request) -> web.Response:
            n = 0
            try:
                async for chunk in request.content.iter_chunked(65536):
                    n += len(chunk)
            finally:
                self.received.append(n)
            return web.json_response({"bytes": n, "path": request.path_qs, "method": request.method},
                                     headers={"X-Upstream": "yes"})

        def run():
            asyncio.set_event_loop(self.loop)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            self.runner = web.AppRunner(app, shutdown_timeout=1.0)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", port).start())
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.runner.cleanup())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def front():
    upstream_port, front_port = free_ports(2)
    upstream = CountingUpstream(upstream_port)
    proxy = BodyLimitFront("127.0.0.1", front_port, f"http://127.0.0.1:{upstream_port}", LIMIT).start()
    yield front_port, upstream
    proxy.stop()
    upstream.stop()


def _post(port: int, body, headers: dict | None = None, chunked: bool = False) -> tuple[int, dict, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/generate?steps=2", body=body, encode_chunked=chunked, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


def test_small_requests_pass_through_unchanged(front):
    port, upstream = front
    status, headers, answer = _post(port, b"a" * 1000, {"Content-Type": "application/octet-stream"})
    assert status == 200 and headers["X-Upstream"] == "yes"
    assert answer == {"bytes": 1000, "path": "/generate?steps=2", "method": "POST"}
    status, _, answer = _post(port, iter([b"b" * 500, b"c" * 500]), chunked=True)
    assert status == 200 and answer["bytes"] == 1000
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/info")
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["method"] == "GET"


def test_a_declared_oversized_body_is_refused_before_anything_is_forwarded(front):
    port, upstream = front
    status, _, answer = _post(port, MB * 5)
    assert status == 413 and "upload limit" in answer["detail"]
    assert upstream.received == []


def test_a_chunked_oversized_body_is_cut_off_at_the_limit(front):
    port, upstream = front
    status, _, answer = _post(port, iter([MB] * 20), chunked=True)
    assert status == 413 and "stopped reading" in answer["detail"]
    # The upstream got at most the limit (plus the chunk that crossed it), never the 20 MB.
    assert sum(upstream.received) <= LIMIT + 65536
