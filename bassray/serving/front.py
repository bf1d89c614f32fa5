"""A body-bounding front for `bassray serve`: Ray Serve's HTTP proxy reads what a client sends into
memory ahead of the app (a 200 MB chunked body reaches it in full before the app's 413 goes out), so
`bassray serve` binds Ray's proxy to 127.0.0.1 and puts this streaming reverse proxy (aiohttp) on the
public address. It forwards each body in 64 KiB chunks and stops at the upload limit: a declared
Content-Length over it is refused at once, a chunked body is cut off at the limit, both with 413, so
the proxy behind never holds more than the limit per request.

It bounds bodies only; TLS belongs to the ingress or load balancer in front (docs/cluster.md).
Behind it every caller reaches the app from 127.0.0.1, so the app's keyless loopback mode would
admit anyone: `bassray serve` keeps refusing to bind any other host without API keys.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import AsyncIterator

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)
CHUNK = 65536
# Headers that describe one hop, not the message (RFC 9110 7.6.1), and those aiohttp sets itself.
HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                         "trailer", "transfer-encoding", "upgrade", "host", "content-length"})


class BodyTooLarge(Exception):
    pass


# aiohttp names an app key after the module that makes it, so it is made at import.
CLIENT_KEY = web.AppKey("client", aiohttp.ClientSession)


def _refusal(limit_bytes: int, read: int | None = None) -> web.Response:
    stopped = f" (stopped reading at {read / 1e6:.1f} MB)" if read is not None else ""
    body = {"detail": f"the request body is larger than this server's {limit_bytes / 1e6:.1f} MB upload limit"
                      f"{stopped}: send a shorter or compressed file"}
    return web.Response(status=413, text=json.dumps(body), content_type="application/json",
                        headers={"Connection": "close"})


def make_front_app(upstream: str, limit_bytes: int):
    """The aiohttp application forwarding every request to ``upstream`` (http://127.0.0.1:PORT)."""

    client_key = CLIENT_KEY

    async def startup(app):
        app[client_key] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                                              auto_decompress=False)

    async def cleanup(app):
        await app[client_key].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        declared = request.content_length
        if declared is not None and declared > limit_bytes:
            return _refusal(limit_bytes)
        sent = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal sent
            async for chunk in request.content.iter_chunked(CHUNK):
                sent += len(chunk)
                if sent > limit_bytes:
                    raise BodyTooLarge()
                yield chunk

        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        has_body = request.body_exists
        try:
            async with request.app[client_key].request(request.method, upstream + request.rel_url.path_qs, headers=headers,
                                             data=body() if has_body else None, allow_redirects=False) as answer:
                response = web.StreamResponse(status=answer.status, reason=answer.reason, headers={
                    k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS})
                if answer.content_length is not None:
                    response.content_length = answer.content_length
                await response.prepare(request)
                async for chunk in answer.content.iter_chunked(CHUNK):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except BodyTooLarge:
            return _refusal(limit_bytes, sent)
        except aiohttp.ClientError as exc:
            if sent > limit_bytes:  # the upstream closed while the generator was cut off
                return _refusal(limit_bytes, sent)
            log.warning("front: upstream failed: %s", exc)
            return web.Response(status=502, text=json.dumps({"detail": f"the server behind failed: {exc}"}),
                                content_type="application/json")

    app = web.Application(client_max_size=limit_bytes)
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


class BodyLimitFront:
    """Runs :func:`make_front_app` on ``host:port`` in a thread of its own; ``stop()`` ends it."""

    def __init__(self, host: str, port: int, upstream: str, limit_bytes: int):
        self.host, self.port, self.upstream, self.limit_bytes = host, port, upstream, limit_bytes
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bassray-front", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            runner = web.AppRunner(make_front_app(self.upstream, self.limit_bytes), access_log=None,
                                   shutdown_timeout=2.0)
            self._loop.run_until_complete(runner.setup())
            self._loop.run_until_complete(web.TCPSite(runner, self.host, self.port).start())
        except BaseException as exc:  # a port in use: the caller hears it from start()
            self._error = exc
            self._ready.set()
            return
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def start(self) -> "BodyLimitFront":
        self._thread.start()
        if not self._ready.wait(30):
            raise OSError(f"the front on {self.host}:{self.port} did not start in 30 s")
        if self._error is not None:
            raise OSError(f"cannot serve on {self.host}:{self.port}: {self._error}") from self._error
        log.info("front on http://%s:%d -> %s (bodies up to %.1f MB)", self.host, self.port, self.upstream,
                 self.limit_bytes / 1e6)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
