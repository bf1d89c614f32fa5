"""Where each kind of channel sits in an autoencoder's latent: the one place that says so.

``[learnt | rhythm code (3 x rhythm_parts) | chroma (12, mix) | pitch code (3 x pitch_parts)]``

The learnt channels come first; the deterministic codes trail them, computed from the input rather
than learnt (bassray/models/autoencoder.py). Chroma and the pitch code stay last, so "the last 12"
and "the last 3 x pitch_parts" keep meaning the same with or without a rhythm code.
"""
from __future__ import annotations

from dataclasses import dataclass

CHROMA_CHANNELS = 12
PITCH_CODE_CHANNELS = 3     # per part: pitch class on a circle (cos, sin) and height
RHYTHM_CODE_CHANNELS = 3    # per part: level, onset strength, low-band onset strength


@dataclass(frozen=True)
class LatentLayout:
    total: int
    rhythm: int = 0         # channels of the rhythm code
    chroma: int = 0
    pitch: int = 0          # channels of the pitch code

    @classmethod
    def of(cls, ae_cfg) -> "LatentLayout":
        """The layout an :class:`~bassray.config.AutoencoderConfig` gives; raises if no channel is
        left to learn."""
        pitch = PITCH_CODE_CHANNELS * ae_cfg.pitch_parts if ae_cfg.phase == "harmonic" else 0
        layout = cls(total=ae_cfg.latent_dim, rhythm=RHYTHM_CODE_CHANNELS * ae_cfg.rhythm_parts,
                     chroma=CHROMA_CHANNELS if ae_cfg.chroma else 0, pitch=pitch)
        if layout.learnt <= 0:
            raise ValueError(f"latent_dim {ae_cfg.latent_dim} leaves no learnt channel beside {layout.rhythm} "
                             f"rhythm, {layout.chroma} chroma and {layout.pitch} pitch channels")
        return layout

    @property
    def codes(self) -> int:
        """How many trailing channels are computed from the input, not learnt."""
        return self.rhythm + self.chroma + self.pitch

    @property
    def learnt(self) -> int:
        return self.total - self.codes

    @property
    def learnt_slice(self) -> slice:
        return slice(0, self.learnt)

    @property
    def rhythm_slice(self) -> slice:
        return slice(self.learnt, self.learnt + self.rhythm)

    @property
    def chroma_slice(self) -> slice:
        start = self.learnt + self.rhythm
        return slice(start, start + self.chroma)

    @property
    def pitch_slice(self) -> slice:
        return slice(self.total - self.pitch, self.total)
