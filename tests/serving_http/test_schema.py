"""Schemathesis against the running app's /openapi.json with every check: the schema declares the
multipart body, each parameter's range, every status code and the error shape, so generated
requests and the answers they get must agree with it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from .conftest import bearer

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).resolve().parent / "schemathesis.toml"


def test_generate_declares_its_multipart_body_and_errors(apps):
    schema = requests.get(f"{apps.url}/openapi.json", timeout=10).json()
    operation = schema["paths"]["/generate"]["post"]
    body = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["mix"] and body["properties"]["mix"]["format"] == "binary"
    assert body["properties"]["steps"] == {"type": "integer", "minimum": 1, "maximum": 1000,
                                           "description": body["properties"]["steps"]["description"]}
    assert {"200", "400", "401", "403", "408", "413", "415", "422", "429", "503", "504"} <= set(operation["responses"])
    error = operation["responses"]["422"]["content"]["application/json"]["schema"]
    assert error["$ref"].endswith("/ErrorBody")


@pytest.mark.parametrize("app", ["open", "keyed"])
def test_schemathesis_finds_nothing(apps, app, tmp_path):
    url = apps.url if app == "open" else apps.keyed_url
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
               f"{url}/openapi.json", "--checks", "all", "--max-examples", "25", "--workers", "1",
               "--seed", "1", "--request-timeout", "60"]
    if app == "keyed":
        command += ["-H", f"Authorization: {bearer('carol')['Authorization']}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
