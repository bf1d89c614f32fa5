import dataclasses
import re

import pytest
import yaml

from bassray.config import PRESET_DIR, Config, config_from_dict, load_config, load_config_json, save_config


PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_round_trip(name, tmp_path):
    config = load_config(name)
    assert config.name == name
    # The paper's latents are learnt channels only (64 mix, 32 bass); every other preset keeps the
    # same learnt channels as paper-pitch (52 mix, 20 bass) beside its codes.
    from bassray.models.latent_layout import LatentLayout
    mix, bass = LatentLayout.of(config.mix_autoencoder), LatentLayout.of(config.bass_autoencoder)
    assert (mix.learnt, bass.learnt) == ((64, 32) if name == "paper" else (52, 20))
    save_config(config, tmp_path / "c.json")
    assert load_config_json(tmp_path / "c.json") == config


# What a preset may change from `paper` without saying so: sizes, rates, step counts, logging and
# placement. Everything else is a departure from the paper's method and its header must list it.
SCALE_FIELDS = re.compile(r"^(name|audio\..*|data\..*|critic\..*|unet\..*|distributed\..*"
                          r"|.*\.(channels|blocks_per_stage|batch_size|max_steps|crop_frames|torch_threads"
                          r"|adversarial_start_step|log_every|eval_every|checkpoint_every)"
                          r"|sampler\.(steps|dpmpp_steps))$")
DEPARTURE = re.compile(r"^#\s+([a-z_]+\.[a-z_]+):\s*([^#]+?)\s*(#.*)?$")


def documented_departures(name: str) -> dict[str, object]:
    """``field: value`` lines of the preset header's "Departures from `paper`" block."""
    lines = (PRESET_DIR / f"{name}.yaml").read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("# Departures from `paper`")), None)
    found = {}
    for line in lines[start + 1:] if start is not None else []:
        if not line.startswith("#"):
            break
        match = DEPARTURE.match(line)
        if match:
            found[match.group(1)] = yaml.safe_load(match.group(2))
    return found


@pytest.mark.parametrize("name", [p for p in PRESETS if p != "paper"])
def test_each_preset_lists_its_departures_from_the_paper(name):
    paper, preset = load_config("paper").flat(), load_config(name).flat()
    documented = documented_departures(name)
    for key, value in documented.items():
        assert key in preset, f"{name}.yaml lists an unknown field {key}"
        assert preset[key] == value, f"{name}.yaml says {key}: {value}, but sets {preset[key]}"
        assert paper[key] != value, f"{name}.yaml lists {key}: {value}, which is the paper's value"
    silent = sorted(k for k in preset if preset[k] != paper[k] and not SCALE_FIELDS.match(k) and k not in documented)
    assert not silent, f"{name}.yaml departs from paper without saying so in its header: {silent}"


def test_the_departure_check_reads_what_it_checks():
    assert documented_departures("paper-pitch")["bass_autoencoder.phase"] == "harmonic"
    assert SCALE_FIELDS.match("unet.base_channels") and not SCALE_FIELDS.match("sampler.harmony_snap")


def test_paper_runs_the_papers_method():
    config = load_config("paper")
    assert not config.mix_autoencoder.chroma and config.bass_autoencoder.phase == "direct"
    assert config.mix_autoencoder.rhythm_parts == config.bass_autoencoder.rhythm_parts == 0
    assert config.bass_autoencoder.latent_noise == 0
    assert (config.sampler.method, config.sampler.steps) == ("ddim", 64)
    assert config.sampler.harmony_snap == 0 and config.sampler.pitch_median == 1 and config.sampler.hold_pitch == 0
    assert config.diffusion_training.pitch_loss_weight == config.diffusion_training.rhythm_loss_weight == 1


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
    """Every preset but the paper's own method carries the f0 (harmonic phase) in its bass latent and
    the chroma in its mix latent: without them the bass loses its pitch (tests/test_autoencoder_pitch.py)."""
    for name in (p for p in PRESETS if p != "paper"):
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
