import dataclasses

import pytest

from bassray.config import Config, config_from_dict, load_config, load_config_json, save_config


@pytest.mark.parametrize("name", ["tiny", "small", "paper"])
def test_presets_load_and_round_trip(name, tmp_path):
    config = load_config(name)
    assert config.name == name
    # Every preset keeps the paper's learnt channels (52 mix, 20 bass) beside its codes.
    from bassray.models.latent_layout import LatentLayout
    mix, bass = LatentLayout.of(config.mix_autoencoder), LatentLayout.of(config.bass_autoencoder)
    assert (mix.learnt, bass.learnt) == (52, 20)
    save_config(config, tmp_path / "c.json")
    assert load_config_json(tmp_path / "c.json") == config


def test_paper_preset_matches_the_paper():
    config = load_config("paper")
    assert (config.audio.sample_rate, config.audio.channels) == (44100, 2)
    hop_total = config.mix_autoencoder.hop_length
    for factor in config.mix_autoencoder.downsample_factors:
        hop_total *= factor
    assert hop_total == 4096
    assert config.diffusion_training.crop_frames == 256 and config.sampler.steps == 64
    assert config.sampler.steps_for("ddim") == 64 and config.sampler.steps_for("dpmpp-2m") == config.sampler.dpmpp_steps < 64


def test_presets_keep_pitch_in_the_latents():
    """Every preset's bass autoencoder carries the f0 (harmonic phase) and its mix autoencoder the
    chroma: without them the bass loses its pitch (tests/test_autoencoder_pitch.py)."""
    for name in ("tiny", "small", "paper"):
        config = load_config(name)
        assert config.bass_autoencoder.phase == "harmonic" and config.bass_autoencoder.pitch_parts > 0
        assert config.mix_autoencoder.chroma and config.mix_autoencoder.phase == "direct"


def test_overrides_change_single_fields():
    config = load_config("tiny", ["unet.base_channels=48", "data.target_stem=drums", "sampler.cfg_weight=2.5"])
    assert config.unet.base_channels == 48
    assert config.data.target_stem == "drums"
    assert config.sampler.cfg_weight == 2.5
    assert config.autoencoder_for("drums") is config.bass_autoencoder


def test_unknown_keys_and_presets_give_clear_errors():
    with pytest.raises(ValueError, match="unknown config keys"):
        config_from_dict({"unet": {"base_chanels": 3}})
    with pytest.raises(FileNotFoundError, match="tiny"):
        load_config("no-such-preset")
    with pytest.raises(ValueError, match="stem kind"):
        Config().autoencoder_for("vocals")


def test_flat_params_cover_every_field():
    flat = load_config("tiny").flat()
    assert flat["unet.num_heads"] == load_config("tiny").unet.num_heads
    sections = [f.name for f in dataclasses.fields(Config) if f.name != "name"]
    assert {key.split(".")[0] for key in flat if key != "name"} == set(sections)
    assert all("." in key for key in flat if key != "name")


def test_distributed_placement_and_data_cpus_are_checked():
    config = load_config("tiny", ["distributed.placement_strategy=SPREAD", "distributed.data_cpus_per_task=0.25"])
    assert config.distributed.placement_strategy == "SPREAD" and config.distributed.data_cpus_per_task == 0.25
    with pytest.raises(ValueError, match="placement_strategy"):
        load_config("tiny", ["distributed.placement_strategy=EVERYWHERE"])
    with pytest.raises(ValueError, match="data_cpus_per_task"):
        load_config("tiny", ["distributed.data_cpus_per_task=0"])
