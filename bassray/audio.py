"""Audio I/O and signal helpers. Files go through soundfile (wav, flac, ogg, mp3); resampling
through torchaudio. Arrays are float32 ``[channels, samples]`` everywhere in bassray."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

READABLE_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")


class AudioReadError(RuntimeError):
    """A file (or in-memory blob) that could not be decoded as audio."""


def read_audio(source: str | Path | bytes, name: str | None = None) -> tuple[np.ndarray, int]:
    """Read audio into float32 ``[channels, samples]`` and its sample rate.

    ``source`` is a path or the encoded bytes of a file; ``name`` labels bytes in error messages.
    """
    label = name or (str(source) if not isinstance(source, (bytes, bytearray)) else "<bytes>")
    try:
        handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)
        data, rate = sf.read(handle, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, ...)
        raise AudioReadError(f"cannot read audio from {label}: {exc}. "
                             f"Supported formats: wav, flac, ogg, mp3.") from exc
    if data.shape[0] == 0:
        raise AudioReadError(f"cannot read audio from {label}: it holds no samples")
    return np.ascontiguousarray(data.T), int(rate)


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """(sample_rate, channels, frames) without decoding the whole file."""
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise AudioReadError(f"cannot read audio header of {path}: {exc}") from exc
    return int(info.samplerate), int(info.channels), int(info.frames)


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    if orig_rate == new_rate:
        return audio
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(audio)), orig_rate, new_rate)
    return out.numpy().astype(np.float32, copy=False)


def convert_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """Mono -> N copies; N -> mono by averaging; N -> M (other) by averaging then copying."""
    have = audio.shape[0]
    if have == channels:
        return audio
    mono = audio.mean(axis=0, keepdims=True)
    return np.repeat(mono, channels, axis=0).astype(np.float32, copy=False)


def conform(audio: np.ndarray, rate: int, sample_rate: int, channels: int) -> np.ndarray:
    """Resample and convert channels to a config's format."""
    return convert_channels(resample(audio, rate, sample_rate), channels)


def load_audio(path: str | Path | bytes, sample_rate: int, channels: int,
               name: str | None = None) -> np.ndarray:
    """Read a file and conform it to ``sample_rate`` / ``channels``."""
    audio, rate = read_audio(path, name=name)
    return conform(audio, rate, sample_rate, channels)


def write_audio(path: str | Path, audio: np.ndarray | torch.Tensor, sample_rate: int) -> Path:
    """Write ``[channels, samples]`` float audio; the format follows the suffix (wav, flac, ogg)."""
    path = Path(path)
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().float().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    subtype = "PCM_16" if path.suffix.lower() in (".wav", ".flac") else None
    sf.write(str(path), np.clip(audio.T, -1.0, 1.0), sample_rate, subtype=subtype)
    return path


def encode_flac(audio: np.ndarray, sample_rate: int) -> bytes:
    """FLAC bytes of ``[channels, samples]`` audio (16-bit), for shards."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(audio, dtype=np.float32).T, -1.0, 1.0), sample_rate,
             format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def rms_db(audio: np.ndarray | torch.Tensor, eps: float = 1e-10) -> float:
    """Root-mean-square level in dBFS."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    return float(10.0 * np.log10(np.mean(np.square(audio, dtype=np.float64)) + eps))


def log_magnitude(audio: torch.Tensor, n_fft: int, hop_length: int, eps: float = 1e-5) -> torch.Tensor:
    """``log(|STFT|^2 + eps)`` of ``[..., samples]`` with a Hann window: ``[..., n_fft//2+1, frames]``."""
    window = torch.hann_window(n_fft, device=audio.device, dtype=audio.dtype)
    lead = audio.shape[:-1]
    spec = torch.stft(audio.reshape(-1, audio.shape[-1]), n_fft, hop_length, window=window,
                      return_complex=True, center=True)
    power = spec.real.square() + spec.imag.square()
    return torch.log(power + eps).reshape(*lead, *power.shape[-2:])
