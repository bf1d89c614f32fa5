"""Real compositions from music21's corpus, written as MIDI files for `bassray data render`.

The corpus ships inside music21's wheel (Palestrina's masses, Monteverdi's madrigals, trecento
ballate, Beethoven's, Mozart's and Haydn's quartets, J. S. Bach's chorales, ...). Each multi-part
work becomes one MIDI file: its lowest part (by median pitch) is the bass, played by a GM bass an
octave down where it sits above C3 (as a violone or a 16-foot stop doubles a continuo line), and the
upper parts are the mix, each on a seeded GM instrument that `render` varies again within its family.

Splits are by composer, so no held-out composer is heard in training: J. S. Bach's works are the
test set and are never trained on (``bach`` and ``cpebach`` are both kept out of training, so that
no Bach ever is), and :data:`VALIDATION_COMPOSERS` are the validation set. Files land in
``OUT/{split}/{composer}/{work}.mid``; `render` keeps those folders as the splits.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

TEST_COMPOSERS = ("bach",)              # J. S. Bach: held out for evaluation
VALIDATION_COMPOSERS = ("monteverdi",)
NEVER_TRAINED = ("bach", "cpebach")     # every Bach in the corpus, whatever else is asked
# Folders of single-line tunes, examples and exercises, not composers' multi-part works.
NOT_WORKS = ("airdsAirs", "demos", "essenFolksong", "leadSheet", "miscFolk", "nottingham-dataset",
             "oneills1850", "ryansMammoth", "theoryExercises")
MIN_PARTS = 3                           # a bass and at least two upper parts: a harmony to follow
BASS_PROGRAM = 32                       # GM acoustic bass; `render` varies it within 32-39
OCTAVE_DOWN_ABOVE = 48                  # a bass part whose median pitch is above C3 sounds 8vb
# Upper parts: instruments that hold a line (keyboards, organ, guitar, strings, choir, reeds, pipes).
UPPER_PROGRAMS = (0, 4, 19, 24, 40, 41, 48, 52, 56, 68, 71, 73)
# Parts by these names are percussion (a cantata's timpani), not a voice of the harmony: left out.
UNPITCHED_PART_NAMES = ("timpani", "percussion", "drum")
# The bass is the lowest part among those sounding for at least this share of the work, so a part
# that rests for most of it (the timpani's closing roll in BWV 149.7) is never the bass.
BASS_MIN_SOUNDING = 0.25
# Longer works are cut at the first bar line past this many quarter notes before music21 writes
# them (a whole quartet with its repeats runs to an hour, and takes minutes to write).
MAX_QUARTERS = 480.0


# music21 writes 10080 ticks a quarter, which puts a quartet movement past the 10^7 ticks at which
# pretty_midi calls a file corrupt; 480 (a divisor of 10080) keeps every duplet and triplet exact.
TICKS_PER_QUARTER = 480


def with_coarser_ticks(path: Path, ticks_per_quarter: int = TICKS_PER_QUARTER) -> None:
    """Rewrite a MIDI file at ``ticks_per_quarter``, every event at its rescaled absolute tick."""
    import mido
    midi = mido.MidiFile(str(path))
    scale = ticks_per_quarter / midi.ticks_per_beat
    for track in midi.tracks:
        absolute, placed = 0, 0
        for message in track:
            absolute += message.time
            tick = round(absolute * scale)
            message.time, placed = tick - placed, tick
    midi.ticks_per_beat = ticks_per_quarter
    midi.save(str(path))


class CorpusSkip(Exception):
    """A corpus entry that cannot become a song (one line, an opus of tunes, unparsable)."""


@dataclass
class CorpusWork:
    composer: str
    path: Path                      # in music21's corpus
    split: str

    @property
    def name(self) -> str:
        """The path inside the composer's folder, as one file name (``opus18no1-movement1``)."""
        parts = self.path.with_suffix("").parts
        start = parts.index("corpus") + 2 if "corpus" in parts else len(parts) - 1  # corpus/<composer>/...
        return "-".join(parts[start:])


def split_of(composer: str) -> str | None:
    """The split a composer's works go to; None for a composer that may not be trained on, or a
    folder that holds no multi-part works."""
    if composer in NOT_WORKS:
        return None
    if composer in TEST_COMPOSERS:
        return "test"
    if composer in VALIDATION_COMPOSERS:
        return "val"
    return None if composer in NEVER_TRAINED else "train"


def corpus_composers() -> list[str]:
    """Every composer folder of music21's corpus (needs music21: ``pip install music21``)."""
    try:
        from music21 import corpus
    except ImportError as exc:
        raise ImportError("the music21 corpus needs music21: pip install music21") from exc
    names = set()
    for path in corpus.getCorePaths():
        parts = Path(path).parts
        names.add(parts[parts.index("corpus") + 1])
    return sorted(n for n in names if not n.startswith("_"))


def corpus_works(*, works_per_composer: int, test_works: int, val_works: int, seed: int = 0,
                 composers: Sequence[str] | None = None) -> list[CorpusWork]:
    """The works to export: up to ``works_per_composer`` per training composer, ``test_works`` of
    the test composers and ``val_works`` of the validation ones, each drawn with ``seed``."""
    from music21 import corpus
    chosen = []
    for composer in composers or corpus_composers():
        split = split_of(composer)
        if split is None:
            continue
        # One file per work: the corpus keeps some works in two encodings (movement1.krn, .mxl).
        paths = list({CorpusWork(composer, p, split).name: p for p in
                      sorted((Path(p) for p in corpus.getComposer(composer)), reverse=True)}.values())[::-1]
        limit = {"test": test_works, "val": val_works}.get(split, works_per_composer)
        rng = np.random.default_rng([seed, *composer.encode()])
        picked = sorted(rng.permutation(len(paths))[:limit]) if len(paths) > limit else range(len(paths))
        chosen += [CorpusWork(composer, paths[i], split) for i in picked]
    return chosen


def _cut(score, max_quarters: float):
    """``score`` up to the first bar line at or past ``max_quarters`` (as is when shorter)."""
    if score.highestTime <= max_quarters or not score.parts:
        return score
    bars = list(score.parts[0].getElementsByClass("Measure"))
    last = next((m.number for m in bars if m.offset + m.duration.quarterLength >= max_quarters), None)
    return score if last is None else score.measures(bars[0].number, last)


def sounding_seconds(part) -> float:
    """How long a pretty_midi part sounds: the union of its notes' spans, in seconds."""
    spans = sorted((n.start, n.end) for n in part.notes)
    total, reach = 0.0, float("-inf")
    for start, end in spans:
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def write_work_midi(work: CorpusWork, out_file: Path, seed: int) -> dict[str, Any]:
    """Parse ``work``, write it as MIDI with its lowest part on a bass, and return what was written;
    raises :class:`CorpusSkip` for an entry that is not a multi-part work."""
    import pretty_midi
    from music21 import converter, stream
    try:
        score = converter.parse(str(work.path))
    except Exception as exc:  # music21 raises many kinds on files it cannot read
        raise CorpusSkip(f"unparsable ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not isinstance(score, stream.Score):
        raise CorpusSkip(f"a {type(score).__name__}, not one score")
    score = _cut(score, MAX_QUARTERS)
    with tempfile.TemporaryDirectory(prefix="bassray-m21-") as tmp:
        midi_path = Path(tmp) / "work.mid"
        try:
            score.write("midi", fp=str(midi_path))
            with_coarser_ticks(midi_path)
            midi = pretty_midi.PrettyMIDI(str(midi_path))
        except Exception as exc:
            raise CorpusSkip(f"music21 could not write it as MIDI ({type(exc).__name__}: {str(exc)[:100]})") from None
    parts = [i for i in midi.instruments
             if i.notes and not any(word in i.name.lower() for word in UNPITCHED_PART_NAMES)]
    if len(parts) < MIN_PARTS:
        raise CorpusSkip(f"{len(parts)} sounding part(s); needs a bass and at least two upper parts")
    medians = [float(np.median([n.pitch for n in p.notes])) for p in parts]
    end = max(n.end for p in parts for n in p.notes)
    steady = [i for i, p in enumerate(parts) if sounding_seconds(p) >= BASS_MIN_SOUNDING * end]
    bass = min(steady or range(len(parts)), key=lambda i: medians[i])
    rng = np.random.default_rng([seed, *work.name.encode()])
    for index, part in enumerate(parts):
        part.is_drum = False   # music21 may give a part channel 10; every corpus part is pitched
        if index == bass:
            part.program, part.name = BASS_PROGRAM, "bass"
            if medians[index] > OCTAVE_DOWN_ABOVE:
                for note in part.notes:
                    note.pitch -= 12
        else:
            part.program = int(rng.choice(UPPER_PROGRAMS))
    midi.instruments = parts
    out_file.parent.mkdir(parents=True, exist_ok=True)
    midi.write(str(out_file))
    return {"file": str(out_file), "parts": len(parts), "seconds": round(float(midi.get_end_time()), 1),
            "bass_octave_down": bool(medians[bass] > OCTAVE_DOWN_ABOVE)}


def export_corpus(out_dir: str | Path, *, works_per_composer: int = 40, test_works: int = 32,
                  val_works: int = 16, seed: int = 0, composers: Sequence[str] | None = None,
                  progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Write the chosen corpus works as ``out_dir/{split}/{composer}/{work}.mid``; a file already
    there is kept (a re-run resumes). Returns, and writes as ``out_dir/corpus.json``, counts per split
and the skipped entries with their reasons."""
    out = Path(out_dir)
    works = corpus_works(works_per_composer=works_per_composer, test_works=test_works, val_works=val_works,
                         seed=seed, composers=composers)
    written: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    skipped, started = [], time.perf_counter()
    for index, work in enumerate(works):
        target = out / work.split / work.composer / f"{work.name}.mid"
        if not target.exists():
            try:
                write_work_midi(work, target, seed)
            except CorpusSkip as exc:
                skipped.append({"work": f"{work.composer}/{work.path.name}", "reason": str(exc)})
                continue
        written[work.split].append(f"{work.composer}/{target.name}")
        if progress:
            progress(index + 1, len(works), f"{work.composer}/{work.path.name}")
    summary = {"out": str(out), "works": len(works), "seed": seed,
               "files": {s: len(v) for s, v in written.items()},
               "composers": {s: sorted({f.split("/")[0] for f in v}) for s, v in written.items()},
               "skipped": skipped, "seconds": round(time.perf_counter() - started, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus.json").write_text(json.dumps(summary, indent=2))
    log.info("music21 corpus: %s files (train/val/test) in %s, %d skipped, %.0f s",
             "/".join(str(len(written[s])) for s in ("train", "val", "test")), out, len(skipped), summary["seconds"])
    return summary
