"""The stem vocabulary every ingest maps to, so training code can rely on names."""
from __future__ import annotations

VOCABULARY = ("bass", "drums", "vocals", "guitar", "piano", "keys", "strings", "brass", "winds",
              "synth", "other")

# Lower-case aliases seen in MUSDB18, Slakh2100 (inst_class) and typical session exports.
_ALIASES = {
    "bass": "bass", "bass guitar": "bass", "synth bass": "bass", "electric bass": "bass",
    "acoustic bass": "bass", "sub": "bass", "drums": "drums", "drum": "drums", "percussion": "drums",
    "kick": "drums", "snare": "drums", "vocals": "vocals", "vocal": "vocals", "voice": "vocals",
    "vox": "vocals", "guitar": "guitar", "gtr": "guitar", "piano": "piano", "keys": "keys",
    "organ": "keys", "chromatic percussion": "keys", "keyboard": "keys", "strings": "strings",
    "strings (continued)": "strings", "ensemble": "strings", "brass": "brass", "reed": "winds",
    "pipe": "winds", "winds": "winds", "synth lead": "synth", "synth pad": "synth", "synth": "synth",
    "sound effects": "other", "sound effects (continued)": "other", "ethnic": "other", "other": "other",
}


def normalize_stem_name(name: str) -> str:
    """Map a stem or instrument-class name onto :data:`VOCABULARY` (unknown names become 'other')."""
    text = name.strip().lower().replace("_", " ")
    if text in _ALIASES:
        return _ALIASES[text]
    for word in text.split():
        if word in _ALIASES:
            return _ALIASES[word]
    return "other"
