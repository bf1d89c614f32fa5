"""``bassray generate``: a bass line for a mix file, written at the input's sample rate and length."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bassray.audio import conform, read_audio, write_audio
from bassray.home import bassray_home
from bassray.inference import BassGenerator, GenerationSettings

log = logging.getLogger(__name__)


def default_bundle() -> Path:
    home = bassray_home()
    candidates = sorted((home / "bundles").glob("*diffusion*"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f"no diffusion bundle under {home}/bundles: run `bassray quickstart` "
                                f"or pass --bundle")
    return candidates[-1]


def variation_path(path: Path, index: int, count: int) -> Path:
    return path if count == 1 else path.with_name(f"{path.stem}-{index}{path.suffix}")


def generate_files(generator: BassGenerator, mix_path: Path, output: Path, *, steps: int,
                   cfg_weight: float, rescale_phi: float, seed: int, num_samples: int = 1,
                   style_path: Path | None = None, with_mix: Path | None = None,
                   match_level: bool = True, midi: Path | None = None, sampler: str | None = None,
                   harmony: float | None = None, temperature: float | None = None) -> list[Path]:
    mix, in_rate = read_audio(mix_path)
    rate, channels = generator.sample_rate, generator.channels
    style = None
    if style_path is not None:
        style_audio, style_rate = read_audio(style_path)
        style = conform(style_audio, style_rate, rate, channels)
    model_mix = conform(mix, in_rate, rate, channels)
    settings = [GenerationSettings(steps=steps, cfg_weight=cfg_weight, rescale_phi=rescale_phi,
                                   seed=seed + i, style_audio=style, match_level=match_level, sampler=sampler,
                                   harmony=harmony, temperature=temperature)
                for i in range(num_samples)]
    with tqdm(total=steps, desc=sampler or generator.config.sampler.method, unit="step") as bar:
        basses = generator.generate([model_mix] * num_samples, settings,
                                    progress=lambda step, total: bar.update(1))
    written = []
    beats = None
    for i, bass in enumerate(basses):
        # Back to the input's rate, channels and exact length.
        out = conform(bass, rate, in_rate, mix.shape[0])
        out = np.pad(out, ((0, 0), (0, max(0, mix.shape[1] - out.shape[1]))))[:, : mix.shape[1]]
        written.append(write_audio(variation_path(output, i, num_samples), out, in_rate))
        if with_mix is not None:
            written.append(write_audio(variation_path(with_mix, i, num_samples), mix + out, in_rate))
        if midi is not None:  # the bass line as notes, for a DAW
            from bassray.transcribe import notes_to_midi, song_beats, transcribe
            path = variation_path(midi, i, num_samples)
            beats = song_beats(mix, in_rate) if beats is None else beats   # the song's tempo map, once
            notes_to_midi(transcribe(out, in_rate), path, beats=beats)
            written.append(path)
    return written


def generate_command(args) -> int:
    from bassray.precision import describe, resolve_precision, torch_dtype
    bundle = args.bundle or default_bundle()
    precision = "bf16" if args.bf16 else args.precision
    print(f"precision: {describe(precision, args.device)}", file=sys.stderr)
    generator = BassGenerator.from_bundle(bundle, device=args.device,
                                          dtype=torch_dtype(resolve_precision(precision, args.device)))
    sampler = generator.config.sampler
    paths = generate_files(
        generator, args.mix, args.output, steps=args.steps or sampler.steps_for(args.sampler),
        cfg_weight=sampler.cfg_weight if args.cfg is None else args.cfg,
        rescale_phi=sampler.rescale_phi if args.rescale is None else args.rescale,
        seed=args.seed, num_samples=args.num_samples, style_path=args.style, with_mix=args.with_mix,
        match_level=not args.model_level, midi=args.midi, sampler=args.sampler, harmony=args.harmony,
        temperature=args.temperature)
    for path in paths:
        print(path)
    return 0
