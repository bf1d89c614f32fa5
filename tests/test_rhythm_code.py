"""The rhythm code (bassray/models/rhythm_code.py) and the latent layout that places it."""
import numpy as np
import pytest
import torch

from bassray.config import load_config
from bassray.models.autoencoder import Autoencoder
from bassray.models.latent_layout import LatentLayout

RATE, HOP = 16000, 4096           # tiny: a latent frame is 4096 samples, its parts 1024 (64 ms)


def _tone_from(start_s: float, stop_s: float, seconds: float = 2.048) -> torch.Tensor:
    t = torch.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * torch.sin(2 * torch.pi * 55.0 * t) * ((t >= start_s) & (t < stop_s))
    return torch.stack([tone, tone])[None]                          # [1, 2, T]


def _tiny_with_rhythm() -> Autoencoder:
    config = load_config("tiny", ["bass_autoencoder.rhythm_parts=4"])
    return Autoencoder(config.bass_autoencoder, config.audio)


def test_the_code_marks_where_a_note_sounds_and_where_it_starts():
    model = _tiny_with_rhythm()
    layout = model.layout
    # Silence, then a note from the 11th part (0.640 s = 10 x 64 ms) to the 24th: a code per part.
    z = model.encode(_tone_from(0.640, 1.536))
    code = z[0, layout.rhythm_slice]                                # [12, L]: 4 levels, 4 onsets, 4 low
    level = code[:4].T.reshape(-1)                                  # part by part over time
    onset = code[4:8].T.reshape(-1)
    # (The centred 1024-point STFT lets a note show one part early and late.)
    assert level[:9].max() < level[11:24].min() - 1.0               # loud where the note sounds
    assert level[25:].max() < level[11:24].min() - 1.0              # and quiet after it stops
    assert int(onset.argmax()) in (9, 10)                           # its start is the strongest onset
    assert onset[12:22].max() < 0.1 * onset.max()                   # a held note is no new onset (its abrupt end clicks)


def test_the_low_band_onset_hears_the_kick_and_not_the_hats():
    model = _tiny_with_rhythm()
    layout = model.layout
    t = torch.arange(int(2.048 * RATE)) / RATE
    gen = torch.Generator().manual_seed(0)
    # A hi-hat: 30 ms noise bursts every 128 ms, high-passed by differencing twice (no energy below 150 Hz).
    noise = torch.randn(t.shape[0] + 2, generator=gen)
    hats = 0.3 * (noise[2:] - 2 * noise[1:-1] + noise[:-2]) * ((t % 0.128) < 0.03)
    kick = 0.5 * torch.sin(2 * torch.pi * 60.0 * t) * torch.exp(-(t - 1.0).clamp_min(0) * 20) * (t >= 1.0)
    code = model.encode(torch.stack([hats + kick, hats + kick])[None])[0, layout.rhythm_slice]
    onset, low = code[4:8].T.reshape(-1), code[8:12].T.reshape(-1)
    kick_part = int(low.argmax())
    assert kick_part in (14, 15, 16)                                 # the kick at 1.0 s: part 15.6
    others = torch.cat([low[:kick_part - 1], low[kick_part + 2:]])
    assert others.max() < 0.2 * low.max()                           # the hats are not in the low band
    assert (onset > 0.3 * onset.max()).sum() > 8                    # but they are most of the whole-band onsets


def _low_onset_peaks(model: Autoencoder, audio: torch.Tensor) -> list[int]:
    """The parts where the low-band onset reads more than a fifth of its maximum."""
    code = model.encode(audio)[0, model.layout.rhythm_slice]
    low = code[8:12].T.reshape(-1)
    return [int(i) for i in torch.nonzero(low > 0.2 * low.max()).flatten()]


def test_a_mix_low_band_below_60_hz_hears_the_kick_and_not_the_snare_or_low_keys():
    config = load_config("tiny")
    assert config.mix_autoencoder.rhythm_low_band_hz == 60 and config.bass_autoencoder.rhythm_low_band_hz == 150
    mix_model = Autoencoder(config.mix_autoencoder, config.audio)
    wide_model = Autoencoder(load_config("tiny", ["mix_autoencoder.rhythm_low_band_hz=150"]).mix_autoencoder,
                             config.audio)
    t = torch.arange(int(2.048 * RATE)) / RATE

    def hit(freq: float, at: float, decay: float) -> torch.Tensor:
        attack = ((t - at) / 0.01).clamp(0, 1)           # 10 ms: a step would click in every band
        return 0.5 * torch.sin(2 * torch.pi * freq * t) * torch.exp(-(t - at).clamp_min(0) * decay) * attack
    # A kick (50 Hz) at 0.5 s, a snare's body (180 Hz, with a partial at 120) at 1.0 s, a low keys note
    # (98 Hz, G2) at 1.5 s.
    audio = hit(50, 0.5, 20) + hit(120, 1.0, 30) + hit(180, 1.0, 30) + hit(98, 1.5, 2)
    audio = torch.stack([audio, audio])[None]
    near = lambda peaks, second: any(abs(p - second / 0.064) <= 1.5 for p in peaks)  # noqa: E731
    wide, narrow = _low_onset_peaks(wide_model, audio), _low_onset_peaks(mix_model, audio)
    assert near(wide, 0.5) and near(wide, 1.0) and near(wide, 1.5)     # below 150 Hz: all three
    assert near(narrow, 0.5) and not near(narrow, 1.0) and not near(narrow, 1.5)  # below 60: the kick


def test_the_low_band_edge_must_be_a_frequency():
    config = load_config("tiny", ["mix_autoencoder.rhythm_low_band_hz=0"])
    with pytest.raises(ValueError, match="rhythm_low_band_hz"):
        Autoencoder(config.mix_autoencoder, config.audio)


def test_codes_trail_the_learnt_channels_and_chroma_and_pitch_stay_last():
    config = load_config("tiny", ["bass_autoencoder.rhythm_parts=4", "mix_autoencoder.rhythm_parts=2"])
    bass, mix = LatentLayout.of(config.bass_autoencoder), LatentLayout.of(config.mix_autoencoder)
    assert bass.pitch_slice == slice(bass.total - 12, bass.total) and bass.rhythm == 12
    assert mix.chroma_slice == slice(mix.total - 12, mix.total) and mix.rhythm == 6
    assert bass.learnt + bass.codes == bass.total and bass.rhythm_slice.stop == bass.pitch_slice.start
    # The rhythm code is computed, not learnt: the encoder's output is the learnt channels only.
    model = Autoencoder(config.bass_autoencoder, config.audio)
    assert model.encoder[-1].out_channels == bass.learnt


def test_a_rhythm_code_the_frame_cannot_hold_is_refused():
    config = load_config("tiny", ["bass_autoencoder.rhythm_parts=3"])
    with pytest.raises(ValueError, match="rhythm_parts"):
        Autoencoder(config.bass_autoencoder, config.audio)
    config = load_config("tiny", ["bass_autoencoder.latent_dim=20", "bass_autoencoder.rhythm_parts=4"])
    with pytest.raises(ValueError, match="no learnt channel"):
        LatentLayout.of(config.bass_autoencoder)


def test_the_probe_reads_note_onsets_off_the_codes_peaks():
    from bassray.eval.articulation_probe import code_onset_scores
    layout = LatentLayout.of(load_config("tiny").bass_autoencoder)
    z = torch.zeros(1, layout.total, 8)                                 # 8 frames = 32 parts of 64 ms
    onset = torch.zeros(32)
    onset[[4, 12, 20]] = 1.0                                            # notes in parts 4, 12 and 20
    onset[[5, 13]] = 0.5                                                # their decays: no new peaks
    z[0, layout.rhythm_slice][4:8] = onset.reshape(8, 4).T
    starts = np.array([4.5, 12.5, 20.5]) * 0.064
    assert code_onset_scores(z, layout, 4, 0.064, starts) == pytest.approx({"onset_f1": 1.0, "note_rate": 1.0})
    assert code_onset_scores(z, layout, 4, 0.064, starts + 0.2)["onset_f1"] == 0.0
    assert code_onset_scores(z, layout, 4, 0.064, None) == {}


def test_training_noise_touches_only_the_learnt_channels_and_only_in_training():
    config = load_config("tiny", ["bass_autoencoder.latent_noise=0.5"])
    model = Autoencoder(config.bass_autoencoder, config.audio)
    layout = model.layout
    z = torch.randn(4, layout.total, 8)
    model.train()
    noised = model._with_training_noise(z)
    assert noised.shape == z.shape
    assert torch.equal(noised[:, layout.learnt:], z[:, layout.learnt:])      # codes stay exact
    assert not torch.allclose(noised[:, layout.learnt_slice], z[:, layout.learnt_slice])
    assert (noised - z).abs().max() < 6 * 0.5 * z.std()                       # at most ~latent_noise x spread
    model.eval()
    assert torch.equal(model._with_training_noise(z), z)
    with pytest.raises(ValueError, match="latent_noise"):
        Autoencoder(load_config("tiny", ["bass_autoencoder.latent_noise=-1"]).bass_autoencoder, config.audio)


def test_a_plucked_code_keeps_one_peak_per_attack_and_a_level_that_only_decays():
    from bassray.models.rhythm_code import _frames, plucked_rhythm_code
    parts, frames = 4, 6                                       # 24 parts in time
    level = torch.full((24,), -1.0)
    onset, low = torch.zeros(24), torch.zeros(24)
    level[4:12] = torch.tensor([1.0, 0.9, 0.95, 0.8, 0.85, 0.7, 0.6, 0.5])   # one note that swells twice
    onset[4], onset[5], onset[6], onset[8] = 2.0, 0.5, 0.4, 0.2   # its attack, a blip, a blip, a small one
    level[16:20] = torch.tensor([1.1, 1.0, 0.9, 0.8])            # a second note after a rest
    low[16] = 3.0
    raw = torch.stack([level, onset, low])                      # [3, 24] in time order
    code = raw.reshape(3, frames, parts).transpose(1, 2).reshape(1, 3 * parts, frames)
    plucked = plucked_rhythm_code(code, parts, threshold=0.3, window=2)
    assert plucked.shape == code.shape
    p_level, p_onset, p_low = (_frames(plucked, k, parts)[0] for k in range(3))
    assert torch.nonzero(p_onset).flatten().tolist() == [4]         # blips beside the attack go
    assert torch.nonzero(p_low).flatten().tolist() == [16]
    assert torch.all(p_level[5:16] <= p_level[4:15] + 1e-6)          # no swell until the next attack
    assert p_level[16] == level[16] and torch.all(p_level <= level + 1e-6)
    # a code that is already plucked (one clean attack per note, a falling level) is kept as is
    assert torch.allclose(plucked_rhythm_code(plucked, parts, 0.3, 2), plucked)
