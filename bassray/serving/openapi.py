"""What ``/openapi.json`` (and so ``/docs``) says about the app: the multipart body of ``/generate``
with every parameter's type and range, every status code the app answers with its JSON error shape,
and the bearer-key scheme when the server has keys.

The routes read the body themselves (to count bytes while it streams), so FastAPI cannot infer it:
it is declared here, from the same ranges ``serve.validation`` enforces.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from bassray.sampler_names import SAMPLERS
from bassray.serving.validation import (CFG_RANGE, HARMONY_RANGE, RESCALE_RANGE, SEED_RANGE, STEPS_RANGE,
                                       TEMPERATURE_RANGE)


class ErrorBody(BaseModel):
    detail: str  # what went wrong and what to change


def _error(description: str, **headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {"model": ErrorBody, "description": description}
    if headers:
        out["headers"] = {name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()}
    return out


AUTH_RESPONSES = {
    401: _error("no API key, or a malformed Authorization header", **{"WWW-Authenticate": "Bearer"}),
    403: _error("a wrong API key, or a remote caller of a server without keys"),
}
READ_RESPONSES: dict[int | str, dict[str, Any]] = {**AUTH_RESPONSES, 503: _error("no stats board")}

GENERATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the bass line (or mix + bass) as a 32-bit float WAV at the mix's rate, channel "
                         "count and exact length",
          "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}},
                      "application/zip": {"schema": {"type": "string", "format": "binary"},
                                          "description": "with midi=true: NAME.wav and NAME.mid"}},
          "headers": {name: {"description": text, "schema": {"type": "string"}} for name, text in (
              ("X-Bassray-Seed", "the seed used (drawn when not given)"),
              ("X-Bassray-Steps", "sampler steps used"),
              ("X-Bassray-Sampler", "the sampler used"), ("X-Bassray-Harmony", "the harmony snap width used"), ("X-Bassray-Sample-Rate", "the WAV's rate"))}},
    400: _error("an unreadable or empty file, NaN samples, or a malformed multipart body"),
    **AUTH_RESPONSES,
    408: _error("the upload stalled"),
    413: _error("the upload or a file's duration is over this server's limit"),
    415: _error("the body is not multipart/form-data"),
    422: _error("a missing mix, or a parameter out of range or of the wrong type; an unsupported sample "
                "rate, channel count or a too-short file"),
    429: _error("too many requests: the queue is full or the key's rate limit is reached",
                **{"Retry-After": "seconds to wait"}),
    500: _error("the model failed"),
    503: _error("the generators are full or restarting", **{"Retry-After": "seconds to wait"}),
    504: _error("generation took longer than the server's limit"),
}


def _range(kind: str, bounds: tuple, description: str) -> dict[str, Any]:
    lo, hi = bounds
    return {"type": kind, "minimum": lo, "maximum": hi, "description": description}


GENERATE_OPENAPI: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {
    "schema": {
        "type": "object",
        "required": ["mix"],
        "properties": {
            "mix": {"type": "string", "format": "binary",
                    "description": "the music to accompany: WAV, FLAC, OGG or MP3, mono or stereo, 8-192 kHz"},
            "style": {"type": "string", "format": "binary",
                      "description": "optional: a bass recording whose timbre the result should take"},
            "steps": _range("integer", STEPS_RANGE, "sampler steps (default: the model's for the chosen sampler)"),
            "sampler": {"type": "string", "enum": list(SAMPLERS),
                        "description": "ddim, or dpmpp-2m (DPM-Solver++(2M), fewer steps); default: the model's"},
            "cfg": _range("number", CFG_RANGE, "classifier-free guidance weight"),
            "rescale": _range("number", RESCALE_RANGE, "guidance rescale phi"),
            "harmony": _range("number", HARMONY_RANGE, "harmony snap width in fifths (0 = off): a note may move "
                              "one step round the circle of fifths to a pitch class the mix plays; default: the model's"),
            "temperature": _range("number", TEMPERATURE_RANGE, "scale of the starting noise (1 = the model's own; "
                                  "lower keeps nearer the lines the model finds likeliest); default: the model's"),
            "seed": _range("integer", SEED_RANGE, "random seed (default: drawn, returned in X-Bassray-Seed)"),
            "with_mix": {"type": "boolean", "description": "return mix + bass instead of the bass alone"},
            "midi": {"type": "boolean", "description": "return a zip of the WAV and the bass line's notes "
                                                       "as a MIDI file"},
        },
    },
    "encoding": {"mix": {"contentType": "audio/*, application/octet-stream"},
                 "style": {"contentType": "audio/*, application/octet-stream"}},
}}}}


def install_openapi(app, keys_required: bool) -> None:
    """Declare the bearer-key scheme on the routes that check keys, when this server has keys."""
    original = getattr(app, "_fastapi_openapi", app.openapi)
    app._fastapi_openapi = original  # installing twice must not wrap the wrapper

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            if keys_required:
                schema.setdefault("components", {}).setdefault("securitySchemes", {})["apiKey"] = {
                    "type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"}
                for path in ("/generate", "/info", "/stats"):
                    for operation in schema["paths"].get(path, {}).values():
                        operation["security"] = [{"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi_schema = None
    app.openapi = openapi
