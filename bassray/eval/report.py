"""report.md and report.html: the musical-fit report (bassray/eval/fit_report.py) followed by every
experiment section present in report.json, each figure beside its baselines; the HTML adds audio
players in the style of the paper's demo page (mix, generated bass, mix + generated bass, true
bass). No Ray here."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

PLAYERS = (("mix", "mix"), ("generated", "generated bass"), ("mix_plus_generated", "mix + generated bass"),
           ("true", "true bass"), ("unconditional", "unconditional model"))


def snap_words(width: float | None) -> str:
    """How a section decoded, in words (reports from before the width was recorded say so)."""
    if width is None:
        return "harmony snap width not recorded"
    return f"decoded with the harmony snap at width {width:g} (scored without it too)" if width > 0 \
        else "decoded without the harmony snap"


def sweep_markdown(title: str, section: dict[str, Any], x: str, extra: str | None = None) -> list[str]:
    base = section["baselines"]
    points = section["points"]
    both = any("chord_tone_no_snap" in p for p in points)
    width = points[0].get("harmony") if points else None
    lines = [f"## {title}", "", f"{section['songs']} held-out songs, {snap_words(width)}; FAD ({section['embedding']}) "
             f"against their true basses; chord-tone agreement (pYIN) on {section['fit_songs']} of them.", "",
             f"![{title}]({section['plot']})", "",
             f"| {x} |" + (f" {extra} |" if extra else "") + " FAD | chord-tone |"
             + (" FAD without the snap | chord-tone without the snap |" if both else ""),
             "|---:|" + ("---:|" if extra else "") + "---:|---:|" + ("---:|---:|" if both else "")]
    for p in points:
        shown = f" {p[extra]:g} |" if extra and isinstance(p[extra], (int, float)) else f" {p.get(extra, '')} |"
        raw = (f" {p.get('fad_no_snap', float('nan')):.3f} | {p.get('chord_tone_no_snap', float('nan')):.2f} |"
               if both else "")
        lines.append(f"| {p[x]:g} |" + (shown if extra else "") + f" {p['fad']:.3f} | {p['chord_tone']:.2f} |" + raw)
    # The two baselines name different basses (FAD needs a set of other songs' basses), so each is listed apart.
    lines += ["", "Baselines: FAD " + ", ".join(f"{name} {value:.3f}" for name, value in base["fad"].items())
              + "; chord-tone " + ", ".join(f"{name} {value:.2f}" for name, value in base["chord_tone"].items())
              + ".", ""]
    return lines


def sections_markdown(report: dict[str, Any]) -> str:
    from bassray.eval.length import length_table
    from bassray.eval.style import style_table
    parts: list[str] = []
    if "fad_steps" in report:
        parts += sweep_markdown("FAD against sampler steps (Fig. 2)", report["fad_steps"], "steps", "sampler")
    if "fad_guidance" in report:
        parts += sweep_markdown("FAD against guidance weight and rescale (Fig. 2)", report["fad_guidance"],
                                "cfg_weight", "rescale_phi")
    if "matching" in report:
        m = report["matching"]
        parts += ["## Which mix does a bass belong to? (Fig. 3)", "",
                  f"The contrastive model's soft assignment between {m['mixes']} held-out mixes and one bass "
                  f"each, {snap_words(m.get('harmony'))}; top-1 = how often a mix's own bass is the most similar "
                  f"(chance {m['chance']:.2f}).", "",
                  f"![assignment matrices]({m['plot']})", "", "| bass | top-1 |", "|---|---:|"]
        parts += [f"| {kind} | {value:.2f} |" for kind, value in m["top1"].items()] + [""]
    if "style" in report:
        parts += ["## Style grounding (Table 1)", "", f"Generated basses {snap_words(report['style'].get('harmony'))}.",
                  "", style_table(report["style"]), ""]
    if "length" in report:
        parts += ["## Length generalisation", "", f"Generated basses {snap_words(report['length'].get('harmony'))}.",
                  "", length_table(report["length"]), ""]
    if report.get("skipped"):
        parts += ["## Sections not in this report", "", "| section | why | to add it |", "|---|---|---|"]
        parts += [f"| {why['title']} | {why['reason']} | `{why['command']}` |" for why in report["skipped"].values()]
        parts += [""]
    return "\n".join(parts)


def mix_plus_bass(out: Path, key: str) -> str | None:
    """Write ``audio/<key>.mix_plus_generated.wav`` (peak-limited sum) if both parts exist."""
    from bassray.audio import read_audio, write_audio
    audio = out / "audio"
    try:
        mix, rate = read_audio(audio / f"{key}.mix.wav")
        bass, _ = read_audio(audio / f"{key}.generated.wav")
    except (FileNotFoundError, RuntimeError):
        return None
    n = min(mix.shape[-1], bass.shape[-1])
    both = mix[:, :n] + bass[:, :n]
    peak = float(np.abs(both).max()) or 1.0
    write_audio(audio / f"{key}.mix_plus_generated.wav", both / max(1.0, peak / 0.99), rate)
    return f"audio/{key}.mix_plus_generated.wav"


def write_html(out: Path, markdown_text: str, report: dict[str, Any], songs_with_players: int = 6) -> Path:
    """report.html: the Markdown report rendered, after a demo-page table of audio players."""
    import markdown
    rows = []
    for song in report.get("per_song", [])[:songs_with_players]:
        key = song["key"]
        mix_plus_bass(out, key)
        cells = []
        for kind, _ in PLAYERS:
            path = out / "audio" / f"{key}.{kind}.wav"
            cells.append(f'<td><audio controls preload="none" src="audio/{html.escape(path.name)}"></audio></td>'
                         if path.exists() else "<td>–</td>")
        fit = song.get("generated", {}).get("chord_tone", float("nan"))
        rows.append(f"<tr><th>{html.escape(key)}<br><small>chord-tone {fit:.2f}</small></th>{''.join(cells)}</tr>")
    players = ""
    if rows:
        head = "".join(f"<th>{html.escape(title)}</th>" for _, title in PLAYERS)
        players = (f"<h2>Listen</h2><table class='players'><tr><th>song</th>{head}</tr>{''.join(rows)}</table>")
    body = markdown.markdown(markdown_text, extensions=["tables"])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bassray evaluation</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; }}
td {{ text-align: right; }} img {{ max-width: 100%; }} audio {{ width: 12rem; }}
</style></head><body>
{players}
{body}
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path
