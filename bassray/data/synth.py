"""Render composed songs with a SoundFont of sampled GM instruments and write them as shards.

Rendering uses ``midirenderer`` (a self-contained wheel; it renders a MIDI file to 48 kHz stereo
WAV bytes). Each stem is rendered on its own, conformed to the config's rate, given a fixed gain
and pan, and the song's stems are scaled together so their sum never clips.
"""
from __future__ import annotations

import io
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pretty_midi
import soundfile as sf

from bassray.audio import conform
from bassray.config import Config
from bassray.data.compose import Song, compose_ensemble_song, compose_song, cut_ground_truth
from bassray.data.ingest import segment_bounds
from bassray.data.patterns import DRUM_GROOVES, ENSEMBLE_RHYTHMS
from bassray.data.shards import TrackSegment, split_at, write_manifest, write_shards

log = logging.getLogger(__name__)

RENDER_RATE = 48000   # midirenderer's fixed output rate
MIX_PEAK = 0.89       # about -1 dBFS for the sum of all stems
TRACK_PREFIX = "synth"
# Starting a spawned worker (it imports torch) costs about as much as rendering a few songs.
_MIN_SONGS_FOR_POOL = 8

_worker_soundfont: bytes | None = None  # a pool worker's SoundFont, read once per process


def default_soundfont() -> Path:
    """TimGM6mb.sf2 shipped inside pretty_midi's wheel (full General MIDI, 6 MB)."""
    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


def read_soundfont(soundfont: str | Path | None) -> bytes:
    path = Path(soundfont) if soundfont else default_soundfont()
    if not path.is_file():
        raise FileNotFoundError(f"SoundFont {path} not found: pass an existing General MIDI .sf2 "
                                f"file, or leave it out to use pretty_midi's TimGM6mb.sf2")
    return path.read_bytes()


def render_midi(midi: pretty_midi.PrettyMIDI, soundfont_bytes: bytes, seconds: float,
                sample_rate: int, channels: int) -> np.ndarray:
    """MIDI -> float32 [channels, round(seconds * sample_rate)] audio."""
    import midirenderer  # optional at import time: only rendering needs it

    buffer = io.BytesIO()
    midi.write(buffer)
    try:
        wav = midirenderer.render_wave_from(soundfont_bytes, buffer.getvalue())
    except (ValueError, RuntimeError) as exc:
        raise RuntimeError(f"midirenderer could not render a stem: {exc}; check that the "
                           f"SoundFont is a valid .sf2 file") from exc
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    audio = audio.T  # [C, T] at 48 kHz
    frames = int(round(seconds * rate))
    if audio.shape[1] < frames:
        audio = np.pad(audio, ((0, 0), (0, frames - audio.shape[1])))
    audio = conform(np.ascontiguousarray(audio[:, :frames]), rate, sample_rate, channels)
    length = int(round(seconds * sample_rate))
    out = np.zeros((channels, length), dtype=np.float32)
    n = min(length, audio.shape[1])
    out[:, :n] = audio[:, :n]
    return out


def _pan_gains(pan: float, channels: int) -> np.ndarray:
    """Balance gains per channel (-1 left .. +1 right); 1 at the centre. Mono gets no pan."""
    if channels != 2:
        return np.ones(channels, dtype=np.float32)
    angle = (pan + 1.0) * np.pi / 4.0
    return (np.sqrt(2.0) * np.array([np.cos(angle), np.sin(angle)])).astype(np.float32)


def render_song(song: Song, soundfont_bytes: bytes, sample_rate: int,
                channels: int) -> tuple[dict[str, np.ndarray], float]:
    """All stems of ``song`` as float32 [channels, samples], scaled by one gain so the mix of all
    stems peaks at about -1 dBFS; returns (stems, that gain)."""
    stems = {}
    for name in song.stems:
        audio = render_midi(song.stem_midi(name), soundfont_bytes, song.duration, sample_rate, channels)
        gain = 10.0 ** (song.gains_db[name] / 20.0) * _pan_gains(song.pans[name], channels)
        stems[name] = audio * gain[:, None]
    gain = mix_gain(stems)
    return {name: (w * gain).astype(np.float32) for name, w in stems.items()}, gain


# A dataset's songs go through the drum grooves in seeded blocks, one of each per block, and each
# groove's songs are spread over the splits in proportion (a golden-ratio sequence from a seeded
# start). Drawn per song, a groove's share wandered with the seed: seed 0's 160 songs trained on 28 %
# kick-locked songs and held out 46 % (docs/articulation.md).
GROOVES = tuple(sorted(DRUM_GROOVES))
_GOLDEN = (5 ** 0.5 - 1) / 2


@dataclass(frozen=True)
class _Texture:
    track_prefix: str
    grooves: tuple[str, ...]          # what the songs go through in blocks: drum grooves or rhythms
    compose: Callable[[int, float, str], Song]


# What a synthetic song is: a band (drums, bass, comping, lead; bassray.data.compose.compose_song) or
# an ensemble without drums (compose_ensemble_song). Each texture's songs have their own seeds and
# track keys, so the two can be trained on together.
_TEXTURES = {
    "band": _Texture(TRACK_PREFIX, GROOVES, lambda seed, seconds, groove: compose_song(seed, seconds, groove=groove)),
    "ensemble": _Texture("ensemble", ENSEMBLE_RHYTHMS,
                         lambda seed, seconds, rhythm: compose_ensemble_song(seed, seconds, rhythm=rhythm)),
}
TEXTURES = tuple(_TEXTURES)


def _texture(name: str) -> _Texture:
    if name not in _TEXTURES:
        raise ValueError(f"unknown song texture {name!r}; textures are {', '.join(TEXTURES)}")
    return _TEXTURES[name]


def track_key(index: int, texture: str = "band") -> str:
    return f"{_texture(texture).track_prefix}-{index:06d}"


def song_seed(seed: int, index: int, texture: str = "band") -> int:
    """Seed of song ``index``: independent of how many songs a run makes (band songs keep the seeds
    they had before there were other textures)."""
    _texture(texture)
    number = TEXTURES.index(texture)
    entropy = [seed, index, number] if number else [seed, index]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def song_groove(seed: int, index: int, texture: str = "band") -> tuple[str, int]:
    """Song ``index``'s drum groove (an ensemble's rhythm) and how many songs of it come before it."""
    grooves = _texture(texture).grooves
    block, slot = divmod(index, len(grooves))
    order = np.random.default_rng([seed, block, len(grooves)]).permutation(len(grooves))
    return grooves[int(order[slot])], block


def song_split(seed: int, index: int, val_fraction: float, test_fraction: float, split_seed: int,
               texture: str = "band") -> str:
    """Song ``index``'s split, stratified by groove: of the first n songs of one groove, within
    two of n x fraction are held out in each of test and val."""
    groove, rank = song_groove(seed, index, texture)
    start = np.random.default_rng([split_seed, seed, _texture(texture).grooves.index(groove)]).random()
    return split_at((start + rank * _GOLDEN) % 1.0, val_fraction, test_fraction)


def indexed_song(seed: int, index: int, seconds: float, texture: str = "band") -> Song:
    """Song ``index`` of the dataset with ``seed`` and ``texture``."""
    return _texture(texture).compose(song_seed(seed, index, texture), seconds,
                                     song_groove(seed, index, texture)[0])


def _init_worker(soundfont: str | None, pool_worker: bool = False) -> None:
    global _worker_soundfont
    if pool_worker:
        import torch  # resampling runs in torch: one thread per worker, the pool is the parallelism
        torch.set_num_threads(1)
    _worker_soundfont = read_soundfont(soundfont)


_Rendered = tuple[int, Song, dict[str, np.ndarray], float, float]  # index, song, stems, gain, s


def _render_task(task: tuple[int, int, float, int, int, str]) -> _Rendered:
    """(song index, dataset seed, seconds, rate, channels, texture) -> the rendered song."""
    index, seed, seconds, sample_rate, channels, texture = task
    started = time.perf_counter()
    song = indexed_song(seed, index, seconds, texture)
    stems, gain = render_song(song, _worker_soundfont, sample_rate, channels)
    return index, song, stems, gain, time.perf_counter() - started


def song_segments(index: int, song: Song, stems: dict[str, np.ndarray], gain: float,
                  config: Config, split: str | None = None, texture: str = "band") -> Iterator[TrackSegment]:
    """Cut one rendered song into segments of at most ``config.data.segment_seconds``, each with
    the ground truth of its own time span."""
    return truth_segments(track_key(index, texture), song.ground_truth(), stems, gain, config, split)


def truth_segments(track_id: str, truth: dict[str, Any], stems: dict[str, np.ndarray], gain: float,
                   config: Config, split: str | None = None) -> Iterator[TrackSegment]:
    """Segments of any rendered song whose ground truth has the synthetic songs' format; ``split``
    is the collection's own split for it, if it has one."""
    rate = config.audio.sample_rate
    length = next(iter(stems.values())).shape[1]
    bounds = segment_bounds(length, rate, config.data.segment_seconds)
    for segment, (start, end) in enumerate(bounds):
        meta = cut_ground_truth(truth, start / rate, end / rate)
        meta.update(segment_index=segment, segment_count=len(bounds), gain=gain)
        if split:
            meta["official_split"] = split
        yield TrackSegment(key=f"{track_id}-s{segment:03d}", track_id=track_id, sample_rate=rate,
                           stems={n: np.ascontiguousarray(w[:, start:end]) for n, w in stems.items()},
                           meta=meta)


def mix_gain(stems: dict[str, np.ndarray]) -> float:
    """One gain for all stems so that their sum (and each stem) peaks at about -1 dBFS."""
    mix = sum(stems.values())
    peak = max(float(np.abs(mix).max()), max(float(np.abs(w).max()) for w in stems.values()))
    return MIX_PEAK / peak if peak > 0 else 1.0


class _SynthRun:
    """Renders songs (in a pool of up to ``workers`` processes) and streams their segments."""

    def __init__(self, num_songs: int, config: Config, seed: int, soundfont: str | None,
                 seconds: float, workers: int, texture: str = "band"):
        self.num_songs, self.config, self.seed, self.texture = num_songs, config, seed, texture
        self.soundfont, self.seconds, self.workers = soundfont, seconds, workers
        self.stem_counts: dict[str, int] = {}
        self.render_seconds = 0.0

    def _results(self) -> Iterator[_Rendered]:
        audio = self.config.audio
        tasks = [(i, self.seed, self.seconds, audio.sample_rate, audio.channels, self.texture)
                 for i in range(self.num_songs)]
        if self.workers <= 1 or self.num_songs < _MIN_SONGS_FOR_POOL:
            _init_worker(self.soundfont)
            yield from map(_render_task, tasks)
            return
        # spawn, not fork: the parent may hold torch thread pools that a fork would deadlock on.
        context = multiprocessing.get_context("spawn")
        with context.Pool(self.workers, initializer=_init_worker, initargs=(self.soundfont, True)) as pool:
            yield from pool.imap(_render_task, tasks)

    def segments(self) -> Iterator[TrackSegment]:
        for index, song, stems, gain, took in self._results():
            self.render_seconds += took
            for name in stems:
                self.stem_counts[name] = self.stem_counts.get(name, 0) + 1
            log.info("synth: song %d/%d %s rendered in %.2fs (%s %s, %.0f BPM, %s, bass %s/%d, "
                     "stems %s)", index + 1, self.num_songs, track_key(index, self.texture), took, song.key,
                     song.mode, song.tempo, song.progression, song.patterns["bass"],
                     song.stems["bass"][0].program, ",".join(sorted(stems)))
            data = self.config.data
            split = song_split(self.seed, index, data.val_fraction, data.test_fraction, data.split_seed,
                               self.texture)
            yield from song_segments(index, song, stems, gain, self.config, split, self.texture)


def synthesize_dataset(out_dir: str | Path, num_songs: int, config: Config, seed: int = 0,
                       soundfont: str | Path | None = None, song_seconds: float | None = None,
                       workers: int | None = None, texture: str = "band") -> dict[str, Any]:
    """Compose and render ``num_songs`` songs into audio shards plus ``manifest.json`` in
    ``out_dir``; returns the manifest. Song ``i`` and its split depend only on (seed, i, song
    length, the config's split fractions and seed).

    ``texture``: "band" (drums, bass, comping, lead) or "ensemble" (no drums; bassray.data.compose).
    ``workers`` render processes (default: 2 when there are cores to spare beside the one that
    encodes FLAC and writes shards, else 1 -- on 2 busy cores a pool measured slower)."""
    if workers is None:
        workers = min(2, max(1, (os.cpu_count() or 1) - 1))
    if num_songs < 1:
        raise ValueError(f"num_songs must be at least 1, got {num_songs}")
    _texture(texture)   # an unknown texture fails here, before any rendering
    seconds = float(song_seconds if song_seconds is not None else config.data.synth_song_seconds)
    if seconds < config.data.crop_seconds:
        raise ValueError(f"songs of {seconds}s are shorter than one training crop "
                         f"({config.data.crop_seconds}s): pass a longer --seconds")
    soundfont_path = str(Path(soundfont).resolve()) if soundfont else None
    read_soundfont(soundfont_path)  # fail early with a clear message, before any worker starts
    data = config.data
    run = _SynthRun(num_songs, config, seed, soundfont_path, seconds, workers, texture)
    started = time.perf_counter()
    splits = write_shards(run.segments(), out_dir, shard_target_mb=data.shard_target_mb,
                          val_fraction=data.val_fraction, test_fraction=data.test_fraction,
                          split_seed=data.split_seed)
    wall = time.perf_counter() - started
    manifest = {
        "kind": "audio", "layout": "synthetic", "source": "synthetic", "seed": seed, "texture": texture,
        "soundfont": soundfont_path or str(default_soundfont()),
        "sample_rate": config.audio.sample_rate, "channels": config.audio.channels,
        "target_stem": data.target_stem, "segment_seconds": data.segment_seconds,
        "song_seconds": seconds,
        "counts": {
            "tracks_in": num_songs, "tracks_kept": num_songs, "tracks_skipped": 0,
            "segments": sum(s["segments"] for s in splits.values()),
            "hours": {name: s["hours"] for name, s in splits.items()},
        },
        "stems": dict(sorted(run.stem_counts.items())),
        "splits": splits,
        "shards": {name: s["shards"] for name, s in splits.items()},
        "skipped": [], "skipped_count": 0,
        "timing": {"wall_seconds": round(wall, 2), "seconds_per_song": round(wall / num_songs, 3),
                   "render_seconds_per_song": round(run.render_seconds / num_songs, 3)},
    }
    path = write_manifest(out_dir, manifest)
    log.info("synth: %d songs, %d segments in %.1fs (%.2fs per song); manifest %s", num_songs,
             manifest["counts"]["segments"], wall, wall / num_songs, path)
    return manifest
