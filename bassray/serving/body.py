"""Reading a request body under limits while it streams in.

The body is counted chunk by chunk as it arrives: past the size limit the app answers 413 at once
and reads no more (a chunked upload has no Content-Length to refuse it by); a body that stops
arriving for ``stall_timeout_s`` is answered 408. The bytes read so far are then parsed as a form
from memory, so the multipart parser never touches the network.
"""
from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from bassray.serving.validation import FORM_SLACK_BYTES, Limits, RequestError, check_declared_size

MAX_FILES, MAX_FIELDS = 4, 16  # mix, style; steps, cfg, rescale, seed, with_mix and a few spare
MAX_PART_BYTES = 64 * 1024  # a non-file form field (starlette's default is 1 MiB)


async def read_body(request: Request, limits: Limits) -> bytes:
    check_declared_size(request.headers.get("content-length"), limits)
    allowed = limits.max_upload_bytes + FORM_SLACK_BYTES
    chunks, total = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout=limits.stall_timeout_s)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise RequestError(408, f"the upload stalled: no data for {limits.stall_timeout_s:g} s after "
                                    f"{total / 1e6:.1f} MB; send the request again") from None
        except ClientDisconnect:
            raise RequestError(400, "the client disconnected before the upload ended") from None
        total += len(chunk)
        if total > allowed:
            raise RequestError(413, f"the upload is larger than this server's limit of "
                                    f"{limits.max_upload_bytes / 1e6:.1f} MB (stopped reading at "
                                    f"{total / 1e6:.1f} MB): send a shorter or compressed file (FLAC, OGG or MP3)")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_form(request: Request, body: bytes):
    """The multipart form in ``body`` (already read), with starlette's parser and bounded parts."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise RequestError(415, f"the body must be multipart/form-data (curl -F mix=@song.wav ...), "
                                f"got {content_type or 'no Content-Type'!r}")
    replayed = False

    async def replay() -> dict:
        nonlocal replayed
        if replayed:
            return {"type": "http.disconnect"}
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException
    try:
        return await Request(request.scope, receive=replay).form(
            max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=MAX_PART_BYTES)
    except (HTTPException, MultiPartException) as exc:  # starlette's: too many parts, a huge field, ...
        detail = getattr(exc, "detail", None) or getattr(exc, "message", str(exc))
        raise RequestError(400, f"malformed multipart/form-data body: {detail}") from None
    except (ValueError, KeyError, AssertionError) as exc:  # a broken boundary or header inside the body
        raise RequestError(400, f"malformed multipart/form-data body: {exc}") from None
