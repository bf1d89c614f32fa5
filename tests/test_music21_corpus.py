"""Real compositions from music21's corpus: splits by composer with every Bach kept out of
training, a multi-part work written as MIDI whose lowest part is the bass, and the rendered song's
bass, mix and ground truth as `bassray data render` reads them."""
from __future__ import annotations

import json

import numpy as np
import pretty_midi
import pytest

pytest.importorskip("music21")

from bassray.data.midi_stems import midi_song  # noqa: E402
from bassray.data.music21_corpus import (BASS_PROGRAM, NOT_WORKS, OCTAVE_DOWN_ABOVE, CorpusSkip,  # noqa: E402
                                         CorpusWork, corpus_composers, corpus_works, export_corpus,
                                         split_of, write_work_midi)


def test_every_bach_is_held_out_and_tune_collections_are_left_out():
    assert split_of("bach") == "test"
    assert split_of("cpebach") is None
    assert split_of("monteverdi") == "val"
    assert split_of("palestrina") == "train"
    assert all(split_of(name) is None for name in NOT_WORKS)


def test_no_training_work_is_by_a_bach_and_the_limits_hold():
    composers = corpus_composers()
    assert {"bach", "palestrina", "monteverdi"} <= set(composers)
    works = corpus_works(works_per_composer=3, test_works=5, val_works=2, seed=0)
    train = [w for w in works if w.split == "train"]
    assert train and not any("bach" in w.composer or "bach" in str(w.path).lower() for w in train)
    assert {w.composer for w in works if w.split == "test"} == {"bach"}
    assert sum(w.split == "test" for w in works) == 5 and sum(w.split == "val" for w in works) == 2
    per_composer = {}
    for w in train:
        per_composer[w.composer] = per_composer.get(w.composer, 0) + 1
    assert max(per_composer.values()) <= 3
    everything = corpus_works(works_per_composer=10_000, test_works=0, val_works=0, seed=0)
    names = [(w.composer, w.name) for w in everything]
    assert len(names) == len(set(names))                 # one file per work, whatever its encodings
    again = corpus_works(works_per_composer=3, test_works=5, val_works=2, seed=0)
    assert [w.path for w in again] == [w.path for w in works]


def test_a_chorale_becomes_midi_with_its_lowest_part_on_a_bass_an_octave_down(tmp_path):
    work = next(w for w in corpus_works(works_per_composer=0, test_works=1, val_works=0, composers=["bach"]))
    out = tmp_path / "chorale.mid"
    info = write_work_midi(work, out, seed=0)
    midi = pretty_midi.PrettyMIDI(str(out))
    assert len(midi.instruments) == info["parts"] >= 3
    basses = [i for i in midi.instruments if i.program == BASS_PROGRAM]
    assert len(basses) == 1 and not any(i.is_drum for i in midi.instruments)
    medians = [np.median([n.pitch for n in i.notes]) for i in midi.instruments]
    assert np.median([n.pitch for n in basses[0].notes]) == min(medians)
    assert np.median([n.pitch for n in basses[0].notes]) <= OCTAVE_DOWN_ABOVE
    song = midi_song(out)
    assert "bass" in song.stems and len(song.stems) >= 2
    assert song.truth["chords"] and song.truth["parts"]["bass"]["notes"]


def test_a_single_line_tune_is_skipped_with_a_reason(tmp_path):
    from music21 import corpus
    path = next(p for p in corpus.getComposer("essenFolksong"))
    with pytest.raises(CorpusSkip):
        write_work_midi(CorpusWork("essenFolksong", path, "train"), tmp_path / "tune.mid", seed=0)


def test_export_writes_split_folders_and_resumes(tmp_path):
    summary = export_corpus(tmp_path, works_per_composer=1, test_works=1, val_works=0, seed=0,
                            composers=["bach", "corelli"])
    assert summary["files"] == {"train": 1, "val": 0, "test": 1}
    assert json.loads((tmp_path / "corpus.json").read_text())["files"] == summary["files"]
    assert sorted(p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*.mid")) == [
        ("test", "bach"), ("train", "corelli")]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.mid")}
    export_corpus(tmp_path, works_per_composer=1, test_works=1, val_works=0, seed=0, composers=["bach", "corelli"])
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.mid")} == before


def test_a_cantata_chorale_gets_its_bass_voice_not_the_timpani(tmp_path):
    # BWV 149.7 has trumpets and timpani beside the four voices; the timpani play 7 notes at the end,
    # lower than the bass voice. The bass must be the voice that sounds through the work.
    from music21 import corpus
    work = CorpusWork("bach", corpus.getWork("bach/bwv149.7"), "test")
    out = tmp_path / "bwv149.mid"
    write_work_midi(work, out, seed=0)
    midi = pretty_midi.PrettyMIDI(str(out))
    assert not any("timpani" in i.name.lower() for i in midi.instruments)
    bass = next(i for i in midi.instruments if i.program == BASS_PROGRAM)
    assert len(bass.notes) > 100 and min(n.start for n in bass.notes) == 0.0


def test_sounding_seconds_is_the_union_of_note_spans():
    from bassray.data.music21_corpus import sounding_seconds
    part = pretty_midi.Instrument(0)
    part.notes = [pretty_midi.Note(90, 40, s, e) for s, e in ((0.0, 1.0), (0.5, 1.5), (3.0, 4.0))]
    assert sounding_seconds(part) == pytest.approx(2.5)
