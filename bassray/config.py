"""Typed configuration for every stage, loaded from YAML presets in ``bassray/configs/``.

``load_config("tiny")`` or ``load_config("path/to/my.yaml")`` returns a :class:`Config`; dotted
overrides such as ``["unet.base_channels=32"]`` change single fields without a new file.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class AudioConfig:
    sample_rate: int = 44100
    channels: int = 2


@dataclass
class DataConfig:
    # Which stem the model learns to generate; everything else is conditioning.
    target_stem: str = "bass"
    segment_seconds: float = 60.0
    shard_target_mb: float = 256.0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    crop_seconds: float = 1.5
    crops_per_segment: int = 8
    # A crop whose target stem is quieter than this (RMS, dBFS) counts as silent and is dropped.
    silence_db: float = -45.0
    # How many random stem-subset mixes per track the latent encoder writes (K in docs/design.md).
    latent_mixes_per_track: int = 4
    synth_song_seconds: float = 30.0
    # Length tolerance between stems of one track at ingest, in seconds.
    stem_length_tolerance_s: float = 0.5


@dataclass
class AutoencoderConfig:
    latent_dim: int = 64
    n_fft: int = 1024
    hop_length: int = 256
    # Channels of the residual blocks at each time resolution; len(downsample_factors) + 1 entries.
    # These defaults give ~37.8M parameters at 44.1 kHz stereo (the paper's ~37M); wider where
    # time is coarse, where a parameter costs least compute.
    channels: list[int] = field(default_factory=lambda: [384, 384, 512, 512, 512])
    downsample_factors: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    blocks_per_stage: int = 2
    kernel_size: int = 3
    log_eps: float = 1e-5
    # How the decoder emits phase: "direct" (a unit 2-vector per bin and frame, as in the paper) or
    # "harmonic" (one f0 per frame; every bin's phase follows its nearest harmonic). The bass
    # autoencoder needs "harmonic" to keep pitch (bassray/models/harmonic_phase.py).
    phase: str = "direct"
    # "harmonic": the latent carries the f0 of this many parts of each latent frame (S | 16), in 3 x S
    # channels (pitch class on a circle and height).
    pitch_parts: int = 4
    # "harmonic": decode the carried f0 to the nearest equal-tempered semitone (A = 440 Hz), so a
    # generated latent between two notes plays one of them; off for music not tuned to A440.
    pitch_snap: bool = True
    # The last 12 latent channels carry the input's chroma per latent frame (the mix autoencoder).
    chroma: bool = False
    # The latent carries the input's level and onset strength in each of this many parts of every
    # latent frame (3 x parts channels; 0 = off, the paper's latent): bassray/models/rhythm_code.py.
    rhythm_parts: int = 0
    # The rhythm code's low-band onset counts power arriving below this frequency (Hz). 150 holds a
    # bass line's fundamentals (E1 = 41 Hz and up), where hats and cymbals have nothing; a mix's kick drum alone sounds below about 60 (its snare and the keys'
    # low notes reach 150): bassray/models/rhythm_code.py.
    rhythm_low_band_hz: float = 150.0
    # Training only: Gaussian noise on the learnt latent channels before decoding, each example at a
    # level drawn from [0, latent_noise] x the channel's spread (0 = off, the paper's autoencoder).
    # The decoder learns to turn a latent near a true one into a clean note, as a generated one is,
    # and to take timing and pitch from the codes, which stay exact.
    latent_noise: float = 0.0


@dataclass
class CriticConfig:
    # One residual block per entry, with 2x time down-sampling between entries.
    channels: list[int] = field(default_factory=lambda: [256, 256, 256])
    n_mels: int = 128
    kernel_size: int = 3
    # Critic inputs use the autoencoder's STFT (paper: hop 256, window 4 * hop).
    n_fft: int = 1024
    hop_length: int = 256
    log_eps: float = 1e-5


@dataclass
class AutoencoderTrainConfig:
    batch_size: int = 32
    learning_rate: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    max_steps: int = 500_000
    rec_weight: float = 25.0
    mssd_weight: float = 0.002
    adv_weight: float = 1.0
    mssd_hops: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512, 2048, 4096])
    # Critics join after this many generator steps: adversarial loss on an untrained decoder is noise.
    adversarial_start_step: int = 0
    log_every: int = 50
    eval_every: int = 2000
    checkpoint_every: int = 2000
    # torch threads in each training worker (0: as Ray sets them, one per whole CPU the worker holds;
    # a worker holding 0.5 CPU then computes on one thread while the data tasks leave a core idle).
    torch_threads: int = 0


@dataclass
class UNetConfig:
    # 144 x [1, 2, 2, 4] gives ~40.5M parameters: the paper's ~42M.
    base_channels: int = 144
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2, 4])
    blocks_per_level: int = 2
    # Levels (0 = full resolution) that get self-attention with Dynamic Positional Bias.
    attention_levels: list[int] = field(default_factory=lambda: [2, 3])
    num_heads: int = 8
    time_embed_dim: int = 64
    dpb_hidden: int = 64
    kernel_size: int = 3
    dropout: float = 0.0
    # Self-conditioning (Chen et al. 2022, "Analog Bits"): the network also sees its own previous x0
    # estimate, so a sampler commits to a note instead of hovering between neighbours on the pitch
    # code's circle. Trained on half the batches; costs one extra forward pass there.
    self_condition: bool = False
    # Diffuse the bass latent's pitch as twelve class channels per part (+1 the class sounding, -1
    # the rest) instead of its point on the circle of fifths, so that an estimate unsure between two
    # classes keeps both apart instead of averaging them (bassray/models/pitch_classes.py).
    pitch_classes: bool = False


LR_SCHEDULES = ("constant", "cosine")


@dataclass
class DiffusionTrainConfig:
    batch_size: int = 128
    learning_rate: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    max_steps: int = 500_000
    crop_frames: int = 256
    cond_dropout: float = 0.15
    # Std of Gaussian noise added to kept mix latents in training (conditioning augmentation):
    # 0 on large collections; on a few dozen songs it keeps the model from memorising them.
    cond_noise: float = 0.0
    # v-loss weight of the target channels that carry the bass's f0 (1 = plain MSE). These 12 of 32
    # channels decide the notes; with equal weight the tiny model learnt their marginal, not their
    # relation to the mix (generated chord-tone agreement = the unconditional model's).
    pitch_loss_weight: float = 1.0
    # The same for the target latent's rhythm-code channels (an autoencoder with rhythm_parts > 0).
    rhythm_loss_weight: float = 1.0
    # Fraction of training examples whose learnt mix channels are zeroed, keeping the chroma
    # channels. The notes come from the chroma: on the small recipe's latents a U-Net that saw the
    # chroma alone picked chord tones as well as one that saw everything (0.68 vs 0.66, in-process),
    # and the learnt channels are what it memorises songs by. 0.5 with four times the songs: 0.71.
    learnt_mix_dropout: float = 0.0
    # Tempo augmentation (bassray/data/time_stretch.py): the share of training crops read stretched,
    # by a factor drawn log-uniform in tempo_stretch_range (above 1 plays slower), so that a pattern
    # the songs hold at one tempo is heard at many.
    tempo_stretch_probability: float = 0.0
    tempo_stretch_range: list[float] = field(default_factory=lambda: [0.67, 1.5])
    ema_decay: float = 0.999
    # "constant", or "cosine": a linear warm-up over lr_warmup_steps, then a cosine decay to 1 % of
    # learning_rate at max_steps (DeepSpeed's WarmupCosineLR), so a short run ends on settled weights.
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    # CPU threads per worker for the U-Net; 0 keeps Ray's setting (the worker's CPU share, at least
    # 1). Latent crops cost little to read, so on CPU the U-Net can have the cores to itself.
    torch_threads: int = 0
    log_every: int = 50
    eval_every: int = 5000
    checkpoint_every: int = 5000

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"diffusion_training.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                             f"not {self.lr_schedule!r}")
        span = list(self.tempo_stretch_range)
        if not (0 <= self.tempo_stretch_probability <= 1 and len(span) == 2 and 0 < span[0] <= span[1]):
            raise ValueError(f"diffusion_training.tempo_stretch_probability must be in [0, 1] and "
                             f"tempo_stretch_range two factors 0 < low <= high, got "
                             f"{self.tempo_stretch_probability} and {self.tempo_stretch_range}")
        if not 0 <= self.lr_warmup_steps < self.max_steps:
            raise ValueError(f"diffusion_training.lr_warmup_steps must be at least 0 and below max_steps "
                             f"({self.max_steps}), got {self.lr_warmup_steps}")


# The starting noise's scale a sampler accepts (sampler.temperature; 1 = the model's own noise).
TEMPERATURE_RANGE = (0.0, 2.0)


@dataclass
class SamplerConfig:
    steps: int = 64  # DDIM's
    cfg_weight: float = 1.0
    rescale_phi: float = 0.0
    # "ddim" (the paper's) or "dpmpp-2m" (DPM-Solver++(2M): second order, fewer steps for the same ODE)
    method: str = "ddim"
    # DPM-Solver++(2M)'s steps where none are asked for: the fewest whose musical fit and FAD are
    # within noise of DDIM-64, with a margin (tiny: 6 measured, README "Fig. 2"; paper: untested on
    # a trained model, 16 from its exactness on Gaussian data and the solver's paper).
    dpmpp_steps: int = 16
    # Harmony snap (bassray.models.harmony): a generated note may move one step round the circle of
    # fifths to a class the mix's chroma plays; the width (in fifths) sets how much the chroma counts.
    # 0 = off (the paper's method).
    harmony_snap: float = 0.0
    # Median filter of a generated bass line's pitch track over this many quarter frames before
    # decoding (odd; 1 = off): isolated flips of class or octave are attacks and noise a listener
    # hears (bassray.models.harmonic_phase.median_pitch_code).
    pitch_median: int = 1
    # Hold each note's pitch between attacks (bassray.models.harmonic_phase.held_pitch_code): where the
    # bass latent carries a rhythm code, the pitch changes only where the code's onsets peak above
    # this value. 0 = off.
    hold_pitch: float = 0.0
    # Scale of the starting noise (1 = the paper's; bassray.diffusion.sampler._start). Below 1 the
    # deterministic solvers land nearer the latents the model finds most likely for the mix.
    temperature: float = 1.0
    # Cap on the guidance weight of the bass latent's learnt channels (timbre, decay); the rhythm and
    # pitch codes keep cfg_weight. None = no cap (the paper's). The notes need strong guidance, the
    # learnt channels turn noisy under it (bassray.diffusion.sampler.group_weights).
    learnt_cfg_max: float | None = None

    def __post_init__(self):
        from bassray.sampler_names import SAMPLERS
        if self.learnt_cfg_max is not None and self.learnt_cfg_max < 0:
            raise ValueError(f"sampler.learnt_cfg_max must be >= 0 or null (null = no cap), "
                             f"got {self.learnt_cfg_max}")
        lo, hi = TEMPERATURE_RANGE
        if not lo <= self.temperature <= hi:
            raise ValueError(f"sampler.temperature must be in [{lo:g}, {hi:g}] (1 = the model's own noise), "
                             f"got {self.temperature}")
        if self.hold_pitch < 0:
            raise ValueError(f"sampler.hold_pitch must be >= 0 (0 = off), got {self.hold_pitch}")
        if self.method not in SAMPLERS:
            raise ValueError(f"sampler.method must be one of {', '.join(SAMPLERS)}, not {self.method!r}")
        if not 0.0 <= self.harmony_snap <= 4.0:
            raise ValueError(f"sampler.harmony_snap must be in [0, 4] (fifths), got {self.harmony_snap}")
        if self.pitch_median < 1 or self.pitch_median % 2 == 0:
            raise ValueError(f"sampler.pitch_median must be an odd number of quarter frames >= 1, got {self.pitch_median}")
        if self.steps < 1 or self.dpmpp_steps < 1:
            raise ValueError(f"sampler.steps and sampler.dpmpp_steps must be >= 1, got {self.steps}, {self.dpmpp_steps}")

    def steps_for(self, method: str | None = None) -> int:
        """Default step count of ``method`` (default: this config's)."""
        from bassray.sampler_names import default_steps
        return default_steps(dataclasses.asdict(self), method or self.method)


PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


@dataclass
class DistributedConfig:
    num_workers: int = 1
    cpus_per_worker: float = 0.5
    use_gpu: bool = False
    zero_stage: int = 1
    # "auto" = bf16 on GPUs with native bf16 (compute capability 8.0+), fp32 otherwise; or "fp32" / "bf16".
    precision: str = "auto"
    # Ray Train's placement of the workers: PACK (Ray's default: as few nodes as fit) or SPREAD
    # (one per node where possible), or their STRICT_ forms.
    placement_strategy: str = "PACK"
    # CPUs each Ray Data read/crop task reserves. Below 1 where nodes are small: on 1-CPU nodes
    # whose training workers hold 0.5 CPU, a 1-CPU read task would never be scheduled.
    data_cpus_per_task: float = 1.0
    # Batches Ray Data prepares ahead of the training step (Ray's default is 1); the loop logs the
    # part of its time spent waiting as perf/data_wait_fraction.
    prefetch_batches: int = 2
    # torch.compile of the trained modules: none, default, reduce-overhead (adds CUDA graphs on a
    # GPU) or max-autotune. Off by default: on the CPU it bought nothing measurable (README).
    compile: str = "none"

    def __post_init__(self):
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"distributed.compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if self.prefetch_batches < 0:
            raise ValueError(f"distributed.prefetch_batches must be >= 0, got {self.prefetch_batches}")
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            raise ValueError(f"distributed.placement_strategy must be one of {PLACEMENT_STRATEGIES}, "
                             f"got {self.placement_strategy!r}")
        if not 0 < self.data_cpus_per_task <= 64:
            raise ValueError(f"distributed.data_cpus_per_task must be in (0, 64], got {self.data_cpus_per_task}")


@dataclass
class Config:
    name: str = "paper"
    audio: AudioConfig = field(default_factory=AudioConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mix_autoencoder: AutoencoderConfig = field(default_factory=lambda: AutoencoderConfig(latent_dim=64, chroma=True))
    bass_autoencoder: AutoencoderConfig = field(
        default_factory=lambda: AutoencoderConfig(latent_dim=32, phase="harmonic"))
    critic: CriticConfig = field(default_factory=CriticConfig)
    autoencoder_training: AutoencoderTrainConfig = field(default_factory=AutoencoderTrainConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion_training: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def autoencoder_for(self, stem: str) -> AutoencoderConfig:
        """The autoencoder config for a stem kind: 'mix' or the target stem."""
        if stem == "mix":
            return self.mix_autoencoder
        if stem == self.data.target_stem:
            return self.bass_autoencoder
        raise ValueError(f"unknown stem kind {stem!r}: use 'mix' or {self.data.target_stem!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, for experiment-tracker params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.to_dict())
        return out


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown config keys at {where or 'top level'}: {sorted(unknown)}; "
                         f"valid keys are {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            base = dataclasses.asdict(getattr(cls(), key))
            base.update(value or {})
            kwargs[key] = _build(typ, base, f"{where}.{key}".strip("."))
        else:
            kwargs[key] = value
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    return _build(Config, data, "")


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_value(value)
    return data


def load_config(name_or_path: str | Path = "tiny", overrides: list[str] | None = None) -> Config:
    """Load a preset by name (``tiny``, ``paper``) or a YAML file, then apply dotted overrides."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        presets = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no config {name_or_path!r}: give a YAML path or one of {presets}")
    data = yaml.safe_load(path.read_text()) or {}
    data = apply_overrides(data, list(overrides or []))
    return config_from_dict(data)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config.to_dict(), indent=2))


def load_config_json(path: str | Path) -> Config:
    return config_from_dict(json.loads(Path(path).read_text()))
