"""API keys and per-key rate limits for the HTTP app; plain Python, testable without Ray.

Keys come from the app args (``api_keys``), from a file named by ``api_keys_file`` or by the
environment variable ``BASSRAY_API_KEYS_FILE`` (a mounted secret), one key per line as
``name:secret`` or a bare ``secret``. Clients send ``Authorization: Bearer <secret>``; the name is
what ``/stats`` counts, so secrets never appear in stats or logs.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import time
from collections import defaultdict, deque
from pathlib import Path

from bassray.serving.validation import RequestError

API_KEYS_FILE_ENV = "BASSRAY_API_KEYS_FILE"
MIN_KEY_LENGTH = 16  # shorter secrets are guessable; `python -c "import secrets; print(secrets.token_urlsafe())"`
ANONYMOUS = "anonymous"  # the caller's name when the server has no keys (loopback clients only)


class KeyConfigError(ValueError):
    """The key configuration cannot be used; raised at start-up, never per request."""


def parse_api_keys(lines: list[str] | str, source: str = "api_keys") -> dict[str, str]:
    """``["name:secret" | "secret", ...]`` (or the text of a keys file) -> ``{secret: name}``."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    keys: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, secret = line.rpartition(":")
        if not sep:
            # A bare secret is named by a digest prefix: stable, and safe to show in /stats.
            name = "key-" + hashlib.sha256(secret.encode()).hexdigest()[:8]
        name, secret = name.strip(), secret.strip()
        if len(secret) < MIN_KEY_LENGTH:
            raise KeyConfigError(f"{source} entry {number}: the key is {len(secret)} characters; use at least "
                                 f"{MIN_KEY_LENGTH} (python -c \"import secrets; print(secrets.token_urlsafe())\")")
        if secret in keys:
            raise KeyConfigError(f"{source} entry {number}: the same key is listed twice")
        keys[secret] = name
    return keys


def load_api_keys(api_keys: list[str] | None = None, api_keys_file: str | None = None) -> dict[str, str]:
    """All configured keys: the listed ones plus those in the keys file (argument, else environment)."""
    keys = parse_api_keys(api_keys or [])
    path = api_keys_file or os.environ.get(API_KEYS_FILE_ENV)
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise KeyConfigError(f"cannot read the API keys file {path}: {exc.strerror or exc}") from None
        from_file = parse_api_keys(text, source=str(path))
        if not from_file:
            raise KeyConfigError(f"the API keys file {path} holds no key: one `name:secret` per line")
        keys.update(from_file)
    return keys


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class KeyRing:
    """Who is calling: the key's name, or 401 (no key) / 403 (wrong key, or a remote caller of a
    server that has no keys: without keys only this machine may generate)."""

    def __init__(self, keys: dict[str, str]):
        self.keys = dict(keys)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def identify(self, authorization: str | None, client_host: str | None) -> str:
        if not self.keys:
            if is_loopback(client_host):
                return ANONYMOUS
            raise RequestError(403, "this server has no API keys configured, so it answers only its own machine "
                                    "(127.0.0.1); its operator must set api_keys or BASSRAY_API_KEYS_FILE")
        if not authorization:
            raise RequestError(401, "this server needs an API key: send the header `Authorization: Bearer <key>`",
                               headers={"WWW-Authenticate": 'Bearer realm="bassray"'})
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise RequestError(401, "malformed Authorization header: expected `Authorization: Bearer <key>`",
                               headers={"WWW-Authenticate": 'Bearer realm="bassray", error="invalid_request"'})
        name = None
        for secret, key_name in self.keys.items():  # compare every key in constant time
            if hmac.compare_digest(secret.encode(), token.encode()):
                name = key_name
        if name is None:
            raise RequestError(403, "the API key is not valid for this server",
                               headers={"WWW-Authenticate": 'Bearer realm="bassray", error="invalid_token"'})
        return name


class RateLimiter:
    """At most ``per_minute`` requests per caller in any 60 s window (sliding log; one per ingress
    replica, so a cluster's limit is per_minute × ingress replicas)."""

    def __init__(self, per_minute: int | None, clock=time.monotonic):
        self.per_minute, self.clock = per_minute, clock
        self.calls: dict[str, deque[float]] = defaultdict(deque)

    def admit(self, caller: str) -> None:
        if not self.per_minute:
            return
        now, calls = self.clock(), self.calls[caller]
        while calls and calls[0] <= now - 60.0:
            calls.popleft()
        if len(calls) >= self.per_minute:
            retry = max(1, math.ceil(calls[0] + 60.0 - now))
            raise RequestError(429, f"rate limit: at most {self.per_minute} requests a minute for this key; "
                                    f"retry in {retry} s", headers={"Retry-After": str(retry)})
        calls.append(now)
