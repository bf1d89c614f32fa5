"""Fréchet audio distance (FAD) over a pluggable embedding; plain numpy/scipy.

FAD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to the frame
embeddings of two sets of audio (Kilgour et al. 2019). Computed in float64 with scipy's matrix square
root; every result names its embedding and its sample counts, since a FAD means nothing without them.

Embeddings: ``chroma-mfcc`` works offline and needs no training (constant-Q chroma, which sees bass
pitch classes, plus MFCCs for timbre, per 0.5 s frame). ``vggish``, ``panns`` and ``clap`` wrap the
usual pretrained models from a local weights file (none can be downloaded here) through their own
packages, and say what is missing when the file or the package is not there.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol

import numpy as np


class Embedding(Protocol):
    name: str
    sample_rate: int

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """``[C, T]`` or ``[T]`` audio at ``sample_rate`` -> ``[frames, dim]`` float embeddings."""


@dataclass(frozen=True)
class GaussianStats:
    mean: np.ndarray  # [D] float64
    cov: np.ndarray   # [D, D] float64
    clips: int        # audio files the frames came from
    frames: int       # embedding frames the Gaussian was fitted to


@dataclass(frozen=True)
class FadResult:
    fad: float
    embedding: str
    clips_a: int
    frames_a: int
    clips_b: int
    frames_b: int

    def __str__(self) -> str:
        return (f"FAD {self.fad:.4f} ({self.embedding}; {self.clips_a} clips / {self.frames_a} frames "
                f"against {self.clips_b} clips / {self.frames_b} frames)")


def gaussian_stats(embeddings: Iterable[np.ndarray]) -> GaussianStats:
    """Mean and covariance (float64) of all frames of a set of clips' embeddings ``[frames, D]``."""
    per_clip = [np.asarray(e, dtype=np.float64).reshape(-1, np.asarray(e).shape[-1]) for e in embeddings]
    if not per_clip:
        raise ValueError("no clips to fit: FAD needs embeddings of at least two frames")
    frames = np.concatenate(per_clip)
    if frames.shape[0] < 2:
        raise ValueError(f"FAD needs at least two embedding frames, got {frames.shape[0]}")
    if not np.isfinite(frames).all():
        raise ValueError("the embeddings hold NaN or infinite values")
    return GaussianStats(frames.mean(axis=0), np.cov(frames, rowvar=False), len(per_clip), frames.shape[0])


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray,
                     eps: float = 1e-6) -> float:
    """The Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b), in float64."""
    from scipy import linalg
    mu_a, mu_b = np.atleast_1d(np.asarray(mu_a, np.float64)), np.atleast_1d(np.asarray(mu_b, np.float64))
    cov_a, cov_b = np.atleast_2d(np.asarray(cov_a, np.float64)), np.atleast_2d(np.asarray(cov_b, np.float64))
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape:
        raise ValueError(f"shapes differ: means {mu_a.shape} vs {mu_b.shape}, covariances {cov_a.shape} vs {cov_b.shape}")
    diff = mu_a - mu_b
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # a singular product: regularise both (as the FID reference does)
        offset = np.eye(cov_a.shape[0]) * eps
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)  # numerical noise can leave tiny imaginary parts
    value = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # rounding can take an exact 0 a hair below


def fad(clips_a: Iterable[np.ndarray], clips_b: Iterable[np.ndarray], embedding: Embedding) -> FadResult:
    """FAD between two sets of audio clips (each ``[C, T]`` at ``embedding.sample_rate``)."""
    a = gaussian_stats(embedding(c) for c in clips_a)
    b = gaussian_stats(embedding(c) for c in clips_b)
    return fad_from_stats(a, b, embedding.name)


def fad_from_stats(a: GaussianStats, b: GaussianStats, embedding_name: str) -> FadResult:
    return FadResult(frechet_distance(a.mean, a.cov, b.mean, b.cov), embedding_name, a.clips, a.frames,
                     b.clips, b.frames)


class ChromaMfccEmbedding:
    """Per 0.5 s frame: mean constant-Q chroma (12, from 32.7 Hz up, so bass notes count) and mean
    MFCCs (20). Deterministic, needs no weights."""

    def __init__(self, sample_rate: int = 16000, frame_seconds: float = 0.5, n_mfcc: int = 20):
        self.name, self.sample_rate = "chroma-mfcc", sample_rate
        self.frame_seconds, self.n_mfcc = frame_seconds, n_mfcc

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        import librosa
        mono = np.asarray(audio, np.float32)
        mono = mono.mean(axis=0) if mono.ndim == 2 else mono
        hop = 512
        chroma = librosa.feature.chroma_cqt(y=mono, sr=self.sample_rate, hop_length=hop,
                                            fmin=librosa.note_to_hz("C1"), n_octaves=6)
        mfcc = librosa.feature.mfcc(y=mono, sr=self.sample_rate, n_mfcc=self.n_mfcc, hop_length=hop)
        features = np.concatenate([chroma[:, :mfcc.shape[1]], mfcc[:, :chroma.shape[1]]])  # [32, n]
        per_frame = max(1, int(round(self.frame_seconds * self.sample_rate / hop)))
        n = features.shape[1] // per_frame
        if n == 0:
            return features.mean(axis=1, keepdims=True).T
        return features[:, :n * per_frame].reshape(features.shape[0], n, per_frame).mean(axis=2).T


class PretrainedEmbedding:
    """A pretrained audio model from a local weights file, through its own package."""

    PACKAGES = {"vggish": "torchvggish", "panns": "panns_inference", "clap": "laion_clap"}
    RATES = {"vggish": 16000, "panns": 32000, "clap": 48000}

    def __init__(self, name: str, weights: str | Path | None, device: str = "cpu"):
        if name not in self.PACKAGES:
            raise ValueError(f"unknown embedding {name!r}: choose from {sorted(self.PACKAGES)}, chroma-mfcc "
                             f"or contrastive")
        if weights is None or not Path(weights).is_file():
            raise FileNotFoundError(
                f"the {name} embedding needs its weights file (got {weights!r}); this machine cannot download "
                f"it: fetch the published checkpoint elsewhere, copy it here and pass its path "
                f"(bassray evaluate --fad-embedding {name} --fad-weights PATH)")
        try:
            module = __import__(self.PACKAGES[name])
        except ImportError:
            raise ImportError(f"the {name} embedding needs the {self.PACKAGES[name]} package: "
                              f"pip install {self.PACKAGES[name].replace('_', '-')}") from None
        self.name, self.sample_rate = name, self.RATES[name]
        self._embed = _pretrained_loader(name, module, str(weights), device)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        mono = np.asarray(audio, np.float32)
        return self._embed(mono.mean(axis=0) if mono.ndim == 2 else mono)


def _pretrained_loader(name: str, module, weights: str, device: str) -> Callable[[np.ndarray], np.ndarray]:
    """Each package's own way to load a checkpoint and embed a mono waveform."""
    import torch
    if name == "panns":
        model = module.AudioTagging(checkpoint_path=weights, device=device)
        return lambda y: model.inference(y[None])[1]  # (clipwise, embedding [1, 2048])
    if name == "clap":
        model = module.CLAP_Module(enable_fusion=False)
        model.load_ckpt(weights)
        return lambda y: model.get_audio_embedding_from_data(x=y[None], use_tensor=False)
    model = module.vggish()  # torchvggish's VGGish; its state dict from the local file
    model.load_state_dict(torch.load(weights, map_location=device))
    model.eval()
    return lambda y: model.forward(y, fs=16000).detach().cpu().numpy()


class ContrastiveBassEmbedding:
    """The trained contrastive model's bass encoder (jobs/train_contrastive.py), one embedding per
    crop-length window, windows overlapping by half."""

    def __init__(self, model):
        self.model, self.name = model, "contrastive-bass"
        self.sample_rate = model.cfg.sample_rate
        self.window = int(model.cfg.crop_seconds * self.sample_rate)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        import torch

        from bassray.models.contrastive import windows
        mono = np.asarray(audio, np.float32)
        mono = mono.mean(axis=0) if mono.ndim == 2 else mono
        with torch.no_grad():
            crops = windows(torch.from_numpy(np.ascontiguousarray(mono)), self.window, self.window // 2)
            return self.model.embed_bass(crops).numpy().astype(np.float64)


def load_embedding(name: str = "chroma-mfcc", weights: str | Path | None = None, sample_rate: int = 16000,
                   device: str = "cpu") -> Embedding:
    """``chroma-mfcc`` (no weights), ``contrastive`` (weights = a contrastive bundle folder), or a
    pretrained ``vggish`` / ``panns`` / ``clap`` (weights = its checkpoint file)."""
    if name == "chroma-mfcc":
        return ChromaMfccEmbedding(sample_rate)
    if name == "contrastive":
        if weights is None:
            raise FileNotFoundError("the contrastive embedding needs a contrastive bundle: train one with "
                                    "`python jobs/train_contrastive.py --data SHARDS` and pass its folder")
        from bassray.bundles.contrastive import load_contrastive
        return ContrastiveBassEmbedding(load_contrastive(weights, device))
    return PretrainedEmbedding(name, weights, device)
