"""The keyed app: keys on every route that generates or reports, per-key counts and rate limits,
the generation timeout, and a schema that declares the key."""
from __future__ import annotations

import time

import pytest
import requests

from .conftest import GENERATION_TIMEOUT_S, RATE_PER_MINUTE, bearer, post, wav

pytestmark = pytest.mark.slow


def test_keys_guard_generate_info_and_stats_but_not_the_page(apps, mono_mix):
    for path in ("/info", "/stats"):
        assert requests.get(f"{apps.keyed_url}{path}", timeout=10).status_code == 401
        wrong = requests.get(f"{apps.keyed_url}{path}", headers={"Authorization": "Bearer " + "z" * 20}, timeout=10)
        assert wrong.status_code == 403
        assert requests.get(f"{apps.keyed_url}{path}", headers=bearer("alice"), timeout=10).status_code == 200
    assert requests.get(f"{apps.keyed_url}/", timeout=10).status_code == 200  # the page asks for the key
    info = requests.get(f"{apps.keyed_url}/info", headers=bearer("alice"), timeout=10).json()
    assert info["auth"] == "api key" and info["rate_limit_per_minute"] == RATE_PER_MINUTE
    assert post(apps.keyed_url, mono_mix, steps=2).status_code == 401
    ok = post(apps.keyed_url, mono_mix, steps=2, headers=bearer("alice"))
    assert ok.status_code == 200, ok.text
    stats = requests.get(f"{apps.keyed_url}/stats", headers=bearer("alice"), timeout=10).json()
    assert stats["keys"]["alice"]["status_codes"]["200"] >= 1
    assert stats["keys"]["anonymous"]["status_codes"]["401"] >= 1  # refused callers are counted too
    assert not any(secret in str(stats) for secret in ("a" * 20, "b" * 20))  # names, never secrets


def test_rate_limit_per_key_answers_429_with_retry_after(apps, mono_mix):
    codes = [post(apps.keyed_url, mono_mix, steps=1, headers=bearer("bob")).status_code
             for _ in range(RATE_PER_MINUTE + 2)]
    assert codes[:RATE_PER_MINUTE] == [200] * RATE_PER_MINUTE and codes[RATE_PER_MINUTE:] == [429, 429]
    limited = post(apps.keyed_url, mono_mix, steps=1, headers=bearer("bob"))
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
    assert "rate limit" in limited.json()["detail"]
    # Another key is not limited by bob's calls.
    assert post(apps.keyed_url, mono_mix, steps=1, headers=bearer("alice")).status_code == 200


def test_generation_over_the_time_limit_is_504_and_the_replica_carries_on(apps):
    import numpy as np
    noise = (0.2 * np.random.default_rng(3).standard_normal((1, 16000 * 15))).astype(np.float32)
    long_mix, short_mix = wav(noise, 16000), wav(noise[:, :16000 * 2], 16000)
    started = time.monotonic()
    slow = post(apps.keyed_url, long_mix, steps=1000, headers=bearer("carol"), timeout=120)
    assert slow.status_code == 504 and "limit" in slow.json()["detail"], slow.text
    assert time.monotonic() - started < GENERATION_TIMEOUT_S + 10
    before = requests.get(f"{apps.keyed_url}/stats", headers=bearer("carol"), timeout=10).json()
    # The cancelled work finishes in the background; then short requests are served as before,
    # by the same replica (it did not crash or restart).
    deadline = time.monotonic() + 120
    while True:
        again = post(apps.keyed_url, short_mix, steps=1, headers=bearer("carol"), timeout=60)
        if again.status_code == 200 or time.monotonic() > deadline:
            break
        assert again.status_code in (504, 429), again.text
        time.sleep(5)
    assert again.status_code == 200, again.text
    after = requests.get(f"{apps.keyed_url}/stats", headers=bearer("carol"), timeout=10).json()
    replicas = lambda s: {r["replica"] for r in s["replicas"]["generator"]}  # noqa: E731
    assert replicas(before) <= replicas(after) and len(replicas(after)) == 1
    assert after["keys"]["carol"]["status_codes"]["504"] >= 1


def test_schema_declares_the_key_only_where_keys_exist(apps):
    keyed = requests.get(f"{apps.keyed_url}/openapi.json", timeout=10).json()
    assert keyed["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"}
    assert keyed["paths"]["/generate"]["post"]["security"] == [{"apiKey": []}]
    open_schema = requests.get(f"{apps.url}/openapi.json", timeout=10).json()
    assert "securitySchemes" not in open_schema.get("components", {})
