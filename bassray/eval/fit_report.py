"""The musical-fit section of ``bassray evaluate``'s report in Markdown: the tables of notes,
articulation, patterns, tempi and FAD, the floor-to-ceiling headline, and report.md's first part
(bassray/eval/evaluate.py computes the figures; bassray/eval/report.py adds the experiment
sections and the HTML)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bassray.eval.evaluate import FLOOR_TO_CEILING, KINDS

KIND_TITLES = {"true": "true bass (ceiling)", "reconstruction": "bass autoencoder's reconstruction",
               "generated": "**generated bass**", "generated_no_snap": "generated bass without the harmony snap",
               "unconditional": "unconditional model (floor)", "other_song": "another song's bass (floor)",
               "beat_grid": "quarter notes on the beat (rhythm only)",
               "mix_onsets": "the mix's own onsets (rhythm only)"}
# chord_tone counts voiced frames only, so its voiced share stands beside it; the coverage (which
# counts every frame where the true bass plays) is the headline.
FIT_COLUMNS = ("chord_tone_coverage", "chord_tone", "chord_voiced_share", "root", "raw_pitch", "raw_chroma",
               "voicing_recall", "voicing_false_alarm", "level_db")
FIDELITY_COLUMNS = ("pitch_accuracy", "octave_errors", "chroma_cosine", "cqt_l1")
FAD_TITLES = {"other_songs": "true basses of other songs (train split): the best reachable",
              "reconstruction": "bass autoencoder's reconstruction", "generated": "**generated bass**",
              "generated_no_snap": "generated bass without the harmony snap", "unconditional": "unconditional model"}


def fit_table(report: dict[str, Any], columns: Sequence[str] = FIT_COLUMNS) -> str:
    """A table (Markdown) of ``columns``, one row per kind."""
    lines = ["| bass | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for kind in (k for k in KINDS if k in report["kinds"]):
        values = report["kinds"][kind]
        if not any(c in values for c in columns):
            continue
        lines.append(f"| {KIND_TITLES[kind]} | " + " | ".join(
            f"{values[c]:.2f}" if c in values else "–" for c in columns) + " |")
    return "\n".join(lines)


def articulation_table(report: dict[str, Any]) -> str:
    """The articulation table (bassray/eval/articulation.py), one row per kind."""
    from bassray.eval.articulation import ARTICULATION_COLUMNS
    return fit_table(report, ARTICULATION_COLUMNS)


def headline(report: dict[str, Any]) -> str:
    """One sentence: where the generated bass lies between floor and ceiling on each headline
    figure, without the harmony snap too where it was scored, and its level."""
    def places(kind: str) -> str:
        values = report.get(f"{kind}_floor_to_ceiling") or {}
        return ", ".join(f"{name} {values[name]:.2f}" for name in FLOOR_TO_CEILING if name in values)
    text = f"generated bass, of the way from floor (another song's bass) to ceiling (true bass): {places('generated')}"
    if report.get("generated_no_snap_floor_to_ceiling"):
        text += f"; without the harmony snap: {places('generated_no_snap')}"
    return text + f"; level {report['generated_level_minus_true_db']:+.1f} dB against the true bass"


def chord_sources_words(sources: dict[str, int]) -> str:
    """Which chords the scores used: the songs' annotations, estimates from the mix, or both."""
    words = {"annotated": "annotated in the data", "estimated": "estimated from the mix (chroma templates "
             "and Viterbi, bassray/eval/chords.py)"}
    return "; ".join(f"{n} song{'s' if n != 1 else ''} {words.get(k, k)}" for k, n in sources.items()) or "annotated"


def markdown_report(report: dict[str, Any], spectrograms: list[str]) -> str:
    fid = report["reconstruction_fidelity"]
    parts = [f"# Musical fit on {report['songs']} held-out songs", "",
             f"Bundle `{report['bundle']}`, data `{report['data']}` ({', '.join(report['splits'])}).", "",
             f"Chords: {chord_sources_words(report.get('chord_sources', {}))}.", "",
             "## Notes", "",
             "chord_tone_coverage: share of the frames where the true bass plays a note in which the line "
             "sounds a chord tone (pYIN, 30-400 Hz); chord_tone: the same share over the line's own voiced "
             "frames only, with chord_voiced_share, the share of the chords' frames it is voiced in; raw "
             "pitch/chroma and voicing use mir_eval against the true bass notes.", "",
             fit_table(report), "",
             "## Articulation", "",
             "onset_f1: librosa onsets matched within 70 ms to the true bass's note onsets (mir_eval); "
             "note_rate: onsets over the true bass's note count; sounding_iou: frames within 30 dB of each "
             "file's peak, intersection over union with the true bass's; harmonic_share: HPSS harmonic "
             "energy below 2 kHz; pitch_change_f1: the line's changes of pitch class matched within 100 ms "
             "to the true bass's, and pitch_changes_per_s how many (a line that pedals one chord tone scores 0 on "
             "both); register_error_st: distance of the median pitch from the true bass's, in semitones.", "",
             articulation_table(report), "",
             headline(report) + ".", "",
             "## Reconstruction fidelity of the bass autoencoder", "",
             "| pitch accuracy vs input (50 cents) | octave errors | chroma cosine | CQT log L1 |",
             "|---:|---:|---:|---:|",
             "| " + " | ".join(f"{fid.get(c, float('nan')):.3f}" for c in FIDELITY_COLUMNS) + " |", "",
             f"Its chord-tone agreement is {report['reconstruction_share_of_ceiling']:.0%} of the true bass's.", ""]
    by_pattern = pattern_table(report["per_song"])
    if by_pattern:
        parts += ["## By bass pattern", "", "The generated bass on the songs of each pattern the true bass plays "
                  "(synthetic songs): where a mean hides a failing kind of song.", "", by_pattern, ""]
    by_tempo = tempo_table(report["per_song"])
    if by_tempo:
        parts += ["## By tempo", "", "The generated bass on the songs of each band of tempo: a line that plays "
                  "at one rate whatever the tempo overplays slow songs and underplays fast ones.", "", by_tempo, ""]
    if report.get("fad"):
        parts += ["## Fréchet audio distance", "", fad_table(report["fad"]), ""]
    if spectrograms:
        parts += ["## Constant-Q pictures: look at them, and listen, before believing a number", ""]
        parts += [f"![{Path(p).stem}]({p})" for p in spectrograms] + [""]
    parts += ["## Songs", "", "| song | generated coverage | true | generated onset F1 | note rate | audio |",
              "|---|---:|---:|---:|---:|---|"]
    for row in report["per_song"]:
        links = " ".join(f"[{k}](audio/{row['key']}.{k}.wav)" for k in ("mix", "generated", "true", "reconstruction"))
        g = row["generated"]
        parts.append(f"| {row['key']} | {g.get('chord_tone_coverage', float('nan')):.2f} | "
                     f"{row['true'].get('chord_tone_coverage', float('nan')):.2f} | {g.get('onset_f1', float('nan')):.2f} | "
                     f"{g.get('note_rate', float('nan')):.2f} | {links} |")
    return "\n".join(parts) + "\n"


PATTERN_COLUMNS = ("chord_tone_coverage", "onset_f1", "note_rate", "sounding_iou", "harmonic_share")
# Bands of the song's tempo: the generated line's note rate differs most between slow and fast songs
# (docs/articulation.md), which a mean over all songs hides.
TEMPO_BANDS = ((0.0, 100.0, "below 100 bpm"), (100.0, 140.0, "100-140 bpm"), (140.0, float("inf"), "140 bpm and above"))


def tempo_band(bpm: float | None) -> str | None:
    """The name of the band in :data:`TEMPO_BANDS` that ``bpm`` falls in; None without a tempo."""
    if bpm is None or not np.isfinite(bpm):
        return None
    return next(name for low, high, name in TEMPO_BANDS if low <= bpm < high)


def grouped_table(per_song: list[dict[str, Any]], group_of: Callable[[dict[str, Any]], str | None],
                  heading: str, order: Sequence[str] | None = None) -> str:
    """Markdown: the generated bass's mean scores over the songs of each group (``group_of(row)``,
    None leaves a song out), beside the true bass's coverage; empty where no song has a group.
    Groups come in ``order`` where given, else sorted by name."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in per_song:
        name = group_of(row)
        if name:
            groups.setdefault(name, []).append(row)
    if not groups:
        return ""
    names = [n for n in order if n in groups] if order is not None else sorted(groups)
    lines = [f"| {heading} | songs | true coverage | " + " | ".join(PATTERN_COLUMNS) + " |",
             "|---|---:|---:|" + "---:|" * len(PATTERN_COLUMNS)]
    for name in names:
        rows = groups[name]
        mean = lambda kind, c: float(np.nanmean([r[kind].get(c, np.nan) for r in rows]))  # noqa: E731
        lines.append(f"| {name} | {len(rows)} | {mean('true', 'chord_tone_coverage'):.2f} | "
                     + " | ".join(f"{mean('generated', c):.2f}" for c in PATTERN_COLUMNS) + " |")
    return "\n".join(lines)


def pattern_table(per_song: list[dict[str, Any]]) -> str:
    """The generated scores per true bass pattern (synthetic songs say which they play)."""
    return grouped_table(per_song, lambda row: row.get("bass_pattern"), "true bass pattern")


def tempo_table(per_song: list[dict[str, Any]]) -> str:
    """The generated scores per band of the song's tempo (songs whose data give one)."""
    return grouped_table(per_song, lambda row: tempo_band(row.get("tempo_bpm")), "tempo",
                         order=[name for _, _, name in TEMPO_BANDS])


def fad_table(fad: dict[str, dict[str, Any]]) -> str:
    first = next(iter(fad.values()))
    lines = [f"FAD against the true basses ({first['embedding']}; {first['true_clips']} true clips, "
             f"{first['true_frames']} frames):", "", "| bass | FAD | clips | frames |", "|---|---:|---:|---:|"]
    for kind, r in fad.items():
        lines.append(f"| {FAD_TITLES[kind]} | {r['fad']:.3f} | {r['clips']} | {r['frames']} |")
    return "\n".join(lines)
