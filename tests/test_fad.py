"""FAD on cases with known answers: exact Gaussians, a set against itself, added noise, shapes."""
from __future__ import annotations

import numpy as np
import pytest

from bassray.eval.fad import (ChromaMfccEmbedding, fad, frechet_distance, gaussian_stats, load_embedding)


def test_frechet_distance_of_known_gaussians():
    assert frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3)) == pytest.approx(0.0, abs=1e-9)
    # Equal covariances: only the means count.
    assert frechet_distance(np.zeros(2), np.eye(2), np.array([3.0, 4.0]), np.eye(2)) == pytest.approx(25.0)
    # 1-D: (m1-m2)^2 + (s1-s2)^2.
    assert frechet_distance([0.0], [[4.0]], [1.0], [[9.0]]) == pytest.approx(1.0 + (2.0 - 3.0) ** 2)
    # Singular covariances still give a finite, symmetric answer.
    singular = np.diag([1.0, 0.0])
    d = frechet_distance(np.zeros(2), singular, np.ones(2), np.eye(2))
    assert np.isfinite(d) and d == pytest.approx(frechet_distance(np.ones(2), np.eye(2), np.zeros(2), singular))
    with pytest.raises(ValueError, match="shapes differ"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def _songs(n: int, rng: np.random.Generator, rate: int = 16000) -> list[np.ndarray]:
    """Bass-like clips: a few low notes each, with harmonics."""
    clips = []
    for _ in range(n):
        t = np.arange(2 * rate) / rate
        f0 = 41.2 * 2 ** (rng.integers(0, 24, size=4) / 12)
        f = np.repeat(f0, t.size // 4 + 1)[:t.size]
        phase = 2 * np.pi * np.cumsum(f) / rate
        clips.append((0.3 * np.sin(phase) + 0.1 * np.sin(2 * phase)).astype(np.float32)[None])
    return clips


def test_fad_of_a_set_against_itself_is_zero_and_grows_with_noise():
    rng = np.random.default_rng(0)
    clips = _songs(12, rng)
    embedding = ChromaMfccEmbedding(16000)
    same = fad(clips, clips, embedding)
    assert same.fad == pytest.approx(0.0, abs=1e-6)
    assert same.embedding == "chroma-mfcc" and same.clips_a == same.clips_b == 12 and same.frames_a >= 12 * 3
    assert "chroma-mfcc" in str(same) and "12 clips" in str(same)
    values = [fad(clips, [c + level * rng.standard_normal(c.shape).astype(np.float32) for c in clips],
                  embedding).fad for level in (0.01, 0.05, 0.2)]
    assert 0 < values[0] < values[1] < values[2], values


def test_stats_refuse_what_cannot_make_a_gaussian():
    with pytest.raises(ValueError, match="at least two"):
        gaussian_stats([np.zeros((1, 4))])
    with pytest.raises(ValueError, match="NaN"):
        gaussian_stats([np.full((3, 2), np.nan)])


@pytest.mark.parametrize("name", ["vggish", "panns", "clap"])
def test_pretrained_embeddings_say_what_file_is_missing(name, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"the {name} embedding needs its weights file"):
        load_embedding(name, tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="unknown embedding"):
        load_embedding("openl3", tmp_path / "w")
