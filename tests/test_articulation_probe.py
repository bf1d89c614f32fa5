"""The latent-swap probe runs end to end on a bundle whose latents carry every code (rhythm, chroma,
pitch): each variant decodes and is scored, and the codes' onset peaks are scored too."""
from __future__ import annotations

import math

import pytest

from bassray.bench.untrained_bundle import write_untrained_bundle
from bassray.config import load_config
from bassray.data.synth import synthesize_dataset
from bassray.eval.articulation_probe import probe, probe_table


def test_the_probe_scores_every_variant(tmp_path):
    config = load_config("tiny", ["data.val_fraction=0.0", "data.test_fraction=1.0"])
    synthesize_dataset(tmp_path / "shards", 2, config, seed=0, song_seconds=4.0)
    bundle = write_untrained_bundle(tmp_path / "bundle", config)
    result = probe(str(bundle), str(tmp_path / "shards"), ("test",), songs=2, steps=2)
    variants = result["variants"]
    assert {"reconstruction", "generated", "generated, true rhythm code", "true, generated pitch code",
            "generated, pitch median of 5 parts"} <= set(variants)
    assert all(0.0 <= v["harmonic_share"] <= 1.0 for v in variants.values() if not math.isnan(v["harmonic_share"]))
    assert set(result["rhythm_code_onsets"]) == {"true", "generated"}
    assert "| generated |" in probe_table(result)
    # only songs slower than the given tempo: none is slower than 1 bpm, and the error says what to do
    with pytest.raises(ValueError, match="tempo-below"):
        probe(str(bundle), str(tmp_path / "shards"), ("test",), songs=2, steps=2, tempo_below=1.0)
