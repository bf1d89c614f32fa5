"""Request checks and audio conversion for the HTTP app; plain functions, testable without Ray.

Every rejection is a ``RequestError`` carrying the HTTP status and a reason that says what to change.
"""
from __future__ import annotations

import io
import math
import secrets
import struct
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import soundfile as sf

from bassray.audio import AudioReadError, conform, read_audio
from bassray.config import TEMPERATURE_RANGE
from bassray.sampler_names import SAMPLERS, default_steps

# Parameter ranges accepted by POST /generate.
STEPS_RANGE = (1, 1000)
CFG_RANGE = (0.0, 20.0)
RESCALE_RANGE = (0.0, 1.0)
HARMONY_RANGE = (0.0, 4.0)  # harmony snap width in fifths (bassray.models.harmony); 0 = off
SEED_RANGE = (0, 2**63 - 1)
# What an uploaded file may be: below 8 kHz there is no music to accompany, above 192 kHz and
# beyond stereo nobody mixes a song (and the resampler's memory grows with both).
SAMPLE_RATE_RANGE = (8000, 192000)
MAX_CHANNELS = 2
MIN_SECONDS = 0.5  # shorter than a beat: nothing to play a bass line under
FORM_SLACK_BYTES = 65536  # multipart boundaries and the small form fields around the files
TRUE_WORDS, FALSE_WORDS = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


class RequestError(Exception):
    """A request the server refuses: ``status`` is the HTTP code, ``reason`` goes to the client."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, dict(headers or {})


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int
    max_seconds: float
    stall_timeout_s: float = 30.0
    generation_timeout_s: float = 300.0

    def as_dict(self) -> dict[str, Any]:
        return {"max_upload_mb": self.max_upload_bytes / 1e6, "max_seconds": self.max_seconds,
                "min_seconds": MIN_SECONDS, "sample_rate": list(SAMPLE_RATE_RANGE), "max_channels": MAX_CHANNELS,
                "stall_timeout_s": self.stall_timeout_s, "generation_timeout_s": self.generation_timeout_s,
                "steps": list(STEPS_RANGE), "cfg": list(CFG_RANGE), "rescale": list(RESCALE_RANGE),
                "harmony": list(HARMONY_RANGE), "temperature": list(TEMPERATURE_RANGE),
                "seed": list(SEED_RANGE), "sampler": list(SAMPLERS)}


@dataclass(frozen=True)
class GenerateParams:
    steps: int
    cfg_weight: float
    rescale_phi: float
    seed: int
    with_mix: bool
    midi: bool = False
    sampler: str = "ddim"
    harmony: float = 0.0
    temperature: float = 1.0


def _field(form: Mapping[str, Any], name: str) -> str | None:
    """A form field as text; absent and empty (an untouched HTML input) both mean 'use the default'."""
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(422, f"{name} must be a plain form field, not a file")
    value = value.strip()
    return value or None


def _number(form: Mapping[str, Any], name: str, kind: type, bounds: tuple, default: Any) -> Any:
    text = _field(form, name)
    if text is None:
        return default
    lo, hi = bounds
    try:
        value = kind(text)
    except ValueError:
        raise RequestError(422, f"{name} must be {'an integer' if kind is int else 'a number'} "
                                f"in {lo}..{hi}, got {text!r}") from None
    if (isinstance(value, float) and not math.isfinite(value)) or not lo <= value <= hi:
        raise RequestError(422, f"{name} must be in {lo}..{hi}, got {text}")
    return value


def parse_params(form: Mapping[str, Any], defaults: Mapping[str, Any]) -> GenerateParams:
    """Form fields steps, cfg, rescale, harmony, temperature, seed, sampler, with_mix, midi -> checked values (``defaults``:
    the bundle's sampler settings). A missing seed draws a random one; the response reports it."""
    flags = {}
    for name in ("with_mix", "midi"):
        text = (_field(form, name) or "false").lower()
        if text not in TRUE_WORDS | FALSE_WORDS:
            raise RequestError(422, f"{name} must be true or false, got {text!r}")
        flags[name] = text in TRUE_WORDS
    sampler = _sampler(form, defaults)
    return GenerateParams(
        steps=_number(form, "steps", int, STEPS_RANGE, default_steps(defaults, sampler)),
        cfg_weight=_number(form, "cfg", float, CFG_RANGE, float(defaults["cfg_weight"])),
        rescale_phi=_number(form, "rescale", float, RESCALE_RANGE, float(defaults["rescale_phi"])),
        harmony=_number(form, "harmony", float, HARMONY_RANGE, float(defaults.get("harmony_snap", 0.0))),
        temperature=_number(form, "temperature", float, TEMPERATURE_RANGE, float(defaults.get("temperature", 1.0))),
        seed=_number(form, "seed", int, SEED_RANGE, secrets.randbelow(2**31)),
        with_mix=flags["with_mix"], midi=flags["midi"], sampler=sampler)


def _sampler(form: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    name = (_field(form, "sampler") or str(defaults.get("method", "ddim"))).lower()
    if name not in SAMPLERS:
        raise RequestError(422, f"sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")
    return name


def check_declared_size(content_length: str | None, limits: Limits) -> None:
    """Refuse an oversized body from its header, before reading it (form fields get 64 KiB slack)."""
    if content_length is None:
        return  # chunked upload: the file sizes are checked after parsing
    try:
        declared = int(content_length)
    except ValueError:
        raise RequestError(400, f"Content-Length {content_length!r} is not a number") from None
    if declared < 0:
        raise RequestError(400, f"Content-Length {content_length!r} is negative")
    if declared > limits.max_upload_bytes + FORM_SLACK_BYTES:
        raise RequestError(413, f"upload of {declared / 1e6:.1f} MB is larger than this server's limit of "
                                f"{limits.max_upload_bytes / 1e6:.1f} MB: send a shorter or compressed file "
                                f"(FLAC, OGG or MP3)")


def check_uploaded_size(total_bytes: int, limits: Limits) -> None:
    if total_bytes > limits.max_upload_bytes:
        raise RequestError(413, f"uploaded files total {total_bytes / 1e6:.1f} MB, more than this server's "
                                f"limit of {limits.max_upload_bytes / 1e6:.1f} MB: send a shorter or "
                                f"compressed file (FLAC, OGG or MP3)")


def decode_upload(data: bytes, field: str, limits: Limits) -> tuple[np.ndarray, int]:
    """Encoded file bytes -> ``([C, T] float32, rate)``; the duration is checked from the header
    first, so an over-long file is refused without decoding it."""
    if not data:
        raise RequestError(400, f"the {field} file is empty")
    try:
        with sf.SoundFile(io.BytesIO(data)) as probe:
            rate, channels, frames = int(probe.samplerate), int(probe.channels), int(probe.frames)
    except Exception as exc:  # soundfile raises several types for unreadable input
        raise RequestError(400, f"cannot read the {field} file as audio: {exc}. "
                                f"Send WAV, FLAC, OGG or MP3.") from None
    check_format(field, rate, channels)
    check_wav_chunks(field, data, limits)
    check_duration(field, frames / rate, limits)
    try:
        audio, rate = read_audio(data, name=f"the {field} file")
    except AudioReadError as exc:
        raise RequestError(400, f"{exc}") from None
    if not np.isfinite(audio).all():
        raise RequestError(400, f"the {field} file holds NaN or infinite samples")
    check_header(field, rate, audio.shape[0], audio.shape[1], limits)  # some headers only estimate frames
    return audio, rate


def check_header(field: str, rate: int, channels: int, frames: int, limits: Limits) -> None:
    """Refuse a file by what its header says, before decoding it."""
    check_format(field, rate, channels)
    check_duration(field, frames / rate, limits)


def check_format(field: str, rate: int, channels: int) -> None:
    lo, hi = SAMPLE_RATE_RANGE
    if not lo <= rate <= hi:
        raise RequestError(422, f"the {field} file's sample rate is {rate} Hz; this server accepts {lo}..{hi} Hz")
    if not 1 <= channels <= MAX_CHANNELS:
        raise RequestError(422, f"the {field} file has {channels} channels; this server accepts mono or stereo: "
                                f"downmix it first")


def check_duration(field: str, seconds: float, limits: Limits) -> None:
    if seconds > limits.max_seconds:
        raise RequestError(413, f"the {field} file is {seconds:.1f} s long; this server accepts at most "
                                f"{limits.max_seconds:g} s: cut it into shorter parts")
    if seconds < MIN_SECONDS:
        raise RequestError(422, f"the {field} file is {seconds:.3f} s long; it must hold at least "
                                f"{MIN_SECONDS:g} s of music")


def wav_data_chunk(data: bytes) -> tuple[int, int, int, int] | None:
    """For a RIFF/WAVE file: ``(rate, block_align, declared data bytes, data bytes present)`` from
    its chunks, or None when it is not a WAV or declares no size (0 or 0xFFFFFFFF: streamed)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, rate, block = 12, None, None
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if chunk == b"fmt " and pos + 24 <= len(data):
            _, _, rate, _, block = struct.unpack("<HHIIH", data[pos + 8:pos + 22])
        elif chunk == b"data":
            if rate is None or not block or size in (0, 0xFFFFFFFF):
                return None
            return rate, block, size, len(data) - pos - 8
        pos += 8 + size + (size & 1)
    return None


def check_wav_chunks(field: str, data: bytes, limits: Limits) -> None:
    """A WAV whose data chunk claims more than the file holds: refused by what it claims (libsndfile
    would quietly read the part that is there)."""
    chunk = wav_data_chunk(data)
    if chunk is None:
        return
    rate, block, declared, present = chunk
    claimed_s = declared / block / max(rate, 1)
    if claimed_s > limits.max_seconds:
        raise RequestError(413, f"the {field} file's header claims {claimed_s:.1f} s of audio; this server accepts "
                                f"at most {limits.max_seconds:g} s")
    if declared > present + block:
        raise RequestError(400, f"the {field} file is truncated: its header claims {claimed_s:.1f} s, the file "
                                f"holds {present / block / max(rate, 1):.1f} s; upload the whole file")
def to_input_format(audio: np.ndarray, model_rate: int, rate: int, channels: int, length: int) -> np.ndarray:
    """Model output ``[C', T']`` -> the input's rate, channel count and exact length ``[channels, length]``."""
    out = conform(audio, model_rate, rate, channels)
    return np.pad(out, ((0, 0), (0, max(0, length - out.shape[1]))))[:, :length]


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    """32-bit float WAV: lossless, so quiet outputs survive and equal seeds give equal bytes."""
    buf = io.BytesIO()
    sf.write(buf, np.ascontiguousarray(np.asarray(audio, np.float32).T), rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def safe_name(filename: str | None) -> str:
    """The upload's file stem, reduced to characters safe in a Content-Disposition header (no
    quotes, slashes or control characters; a path in the name is dropped)."""
    stem = Path((filename or "mix").replace("\\", "/")).stem
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_. ") else "_" for c in stem).strip(" .")
    return safe[:100] or "mix"


def wav_and_midi_zip(name: str, audio: bytes, bass: np.ndarray, rate: int, mix: np.ndarray | None = None) -> bytes:
    """A zip of the WAV and the bass line's notes as MIDI (transcribed from the bass alone), in the
    tempo of ``mix``'s tracked beats where it is given."""
    import zipfile

    from bassray.transcribe import midi_bytes, song_beats, transcribe
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.wav", audio)
        beats = song_beats(mix, rate) if mix is not None else None
        archive.writestr(f"{name}.mid", midi_bytes(transcribe(bass, rate), beats=beats))
    return buffer.getvalue()
