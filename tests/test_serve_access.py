"""API keys, rate limits, the streamed body reader and the stats tally, without Ray or a server."""
from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from bassray.serving.access import (ANONYMOUS, API_KEYS_FILE_ENV, KeyConfigError, KeyRing, RateLimiter,
                                    load_api_keys, parse_api_keys)
from bassray.serving.body import parse_form, read_body
from bassray.serving.stats import ServingStats, percentiles
from bassray.serving.validation import Limits, RequestError

ALICE, BOB = "alice-secret-0123456789", "0123456789abcdefXYZ"


def test_keys_parse_names_and_refuse_weak_or_repeated_ones(tmp_path, monkeypatch):
    keys = parse_api_keys(f"# team keys\nalice:{ALICE}\n\n{BOB}\n")
    assert keys[ALICE] == "alice" and keys[BOB].startswith("key-") and BOB not in keys[BOB]
    with pytest.raises(KeyConfigError, match="at least 16"):
        parse_api_keys(["short"])
    with pytest.raises(KeyConfigError, match="twice"):
        parse_api_keys([f"a:{ALICE}", f"b:{ALICE}"])
    path = tmp_path / "keys"
    path.write_text(f"bob:{BOB}\n")
    monkeypatch.setenv(API_KEYS_FILE_ENV, str(path))
    assert load_api_keys([f"alice:{ALICE}"]) == {ALICE: "alice", BOB: "bob"}
    monkeypatch.setenv(API_KEYS_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(KeyConfigError, match="cannot read"):
        load_api_keys()


def test_keyring_answers_401_403_and_names_the_caller():
    ring = KeyRing({ALICE: "alice"})
    assert ring.identify(f"Bearer {ALICE}", "10.0.0.7") == "alice"
    for header, status in ((None, 401), ("Basic abc", 401), ("Bearer", 401), (f"Bearer {BOB}", 403),
                           (f"Bearer {ALICE}x", 403)):
        with pytest.raises(RequestError) as err:
            ring.identify(header, "127.0.0.1")
        assert err.value.status == status, header
        assert "Bearer" in err.value.headers["WWW-Authenticate"]


def test_without_keys_only_this_machine_is_served():
    ring = KeyRing({})
    assert ring.identify(None, "127.0.0.1") == ANONYMOUS and ring.identify(None, "::1") == ANONYMOUS
    for host in ("10.1.2.3", "203.0.113.9", None, "not-an-ip"):
        with pytest.raises(RequestError) as err:
            ring.identify(f"Bearer {ALICE}", host)
        assert err.value.status == 403 and "127.0.0.1" in err.value.reason


def test_rate_limit_is_a_sliding_minute_per_key():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    limiter.admit("a"), limiter.admit("a"), limiter.admit("b")
    now[0] = 30.0
    with pytest.raises(RequestError) as err:
        limiter.admit("a")
    assert err.value.status == 429 and err.value.headers["Retry-After"] == "30"
    now[0] = 60.5  # the first two calls left the window
    limiter.admit("a")
    RateLimiter(None).admit("anyone")  # off


def _request(chunks, headers=(), stall_after: int | None = None) -> Request:
    """An ASGI request whose body arrives as ``chunks``; after ``stall_after`` chunks it stalls."""
    queue = list(chunks)
    sent = [0]

    async def receive():
        if stall_after is not None and sent[0] >= stall_after:
            await asyncio.sleep(3600)
        sent[0] += 1
        body = queue.pop(0) if queue else b""
        return {"type": "http.request", "body": body, "more_body": bool(queue)}

    scope = {"type": "http", "method": "POST", "path": "/generate", "headers": [
        (k.lower().encode(), v.encode()) for k, v in headers]}
    request = Request(scope, receive)
    request.sent = sent
    return request


LIMITS = Limits(max_upload_bytes=100_000, max_seconds=10, stall_timeout_s=0.2)


def test_body_over_the_limit_is_refused_while_it_streams():
    request = _request([b"x" * 10_000] * 1000)  # 10 MB, chunked (no Content-Length)
    with pytest.raises(RequestError) as err:
        asyncio.run(read_body(request, LIMITS))
    assert err.value.status == 413
    assert request.sent[0] < 20  # stopped reading after ~170 kB of 10 MB
    with pytest.raises(RequestError) as err:  # a declared size is refused before any read
        asyncio.run(read_body(_request([b""], headers=[("Content-Length", "5000000")]), LIMITS))
    assert err.value.status == 413
    assert asyncio.run(read_body(_request([b"ab", b"cd"]), LIMITS)) == b"abcd"


def test_stalled_body_is_dropped():
    with pytest.raises(RequestError) as err:
        asyncio.run(read_body(_request([b"x"] * 5, stall_after=2), LIMITS))
    assert err.value.status == 408 and "stalled" in err.value.reason


def test_form_parsing_bounds_parts_and_content_type():
    boundary = "b0undary"
    part = lambda name, value: f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"  # noqa: E731
    headers = [("Content-Type", f"multipart/form-data; boundary={boundary}")]
    ok = (part("steps", "4") + f"--{boundary}--\r\n").encode()
    form = asyncio.run(parse_form(_request([ok], headers), ok))
    assert form["steps"] == "4"
    bomb = ("".join(part(f"f{i}", "1") for i in range(200)) + f"--{boundary}--\r\n").encode()
    huge = (part("steps", "9" * 200_000) + f"--{boundary}--\r\n").encode()
    for body in (bomb, huge):
        with pytest.raises(RequestError) as err:
            asyncio.run(parse_form(_request([body], headers), body))
        assert err.value.status == 400
    with pytest.raises(RequestError) as err:
        asyncio.run(parse_form(_request([b"{}"], [("Content-Type", "application/json")]), b"{}"))
    assert err.value.status == 415


def test_stats_merge_replicas_and_percentiles():
    stats = ServingStats()
    stats.record_batch("g1", 3, [2, 1], 0.5, queue_length=4, memory={"rss_mb": 100.0})
    stats.record_batch("g2", 1, [1], 1.5, queue_length=1)
    for status, key in ((200, "alice"), (200, "alice"), (429, "bob"), (413, "alice")):
        stats.record_request("i1", status, key, 0.25)
    summary = stats.summary()
    assert summary["requests"] == 4 and summary["queue_length"] == 5
    assert summary["batch_sizes"] == {"1": 1, "3": 1} and summary["ddim_batch_sizes"] == {"1": 2, "2": 1}
    assert summary["status_codes"] == {"200": 2, "413": 1, "429": 1}
    assert summary["keys"]["alice"] == {"requests": 3, "status_codes": {"200": 2, "413": 1}}
    assert summary["latency_s"]["count"] == 2  # 200s only
    assert {g["replica"] for g in summary["replicas"]["generator"]} == {"g1", "g2"}
    p = percentiles(range(1, 101))
    assert p["p50"] == pytest.approx(50.5) and p["p99"] == pytest.approx(99.01) and p["count"] == 100
    assert percentiles([])["p50"] is None
