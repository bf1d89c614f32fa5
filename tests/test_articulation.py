"""Articulation metrics on bass lines with known answers (bassray/eval/articulation.py)."""
import numpy as np
import pytest

from bassray.eval.articulation import articulation_features, articulation_scores, note_onsets
from bassray.eval.musical_fit import bass_fit, track_pitch

RATE = 16000
SECONDS = 12.0
ROOTS = (40, 43, 45, 38)  # E2 G2 A2 D2: one chord per 2 s bar, the bass on its root


def pluck(pitch: float, seconds: float, release: float = 0.06) -> np.ndarray:
    """A plucked bass note: five decaying harmonics, a 5 ms attack and a smooth 60 ms release (an
    abrupt one clicks, and a click is an onset)."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
    envelope = np.minimum(t / 0.005, 1.0) * np.exp(-t / 0.6)
    envelope *= 0.5 - 0.5 * np.cos(np.pi * np.clip((seconds - t) / release, 0.0, 1.0))
    return 0.2 * tone * envelope


def render(notes) -> np.ndarray:
    """[2, T] stereo bass from ``(pitch, start, end)`` notes."""
    out = np.zeros(int(SECONDS * RATE))
    for pitch, start, end in notes:
        i = int(start * RATE)
        note = pluck(pitch, end - start)[: out.size - i]
        out[i: i + note.size] += note
    return np.stack([out, out]).astype(np.float32)


def bass_line(gate: float = 0.9, per_bar: int = 4):
    """``per_bar`` notes per 2 s bar on the chord's root and fifth, each held ``gate`` of its slot,
    from 0.25 s (an onset detector cannot see one at the very first frame)."""
    slot = 2.0 / per_bar
    notes = []
    for k in range(int((SECONDS - 0.25) / slot)):
        start = 0.25 + k * slot
        pitch = ROOTS[int(start // 2.0) % len(ROOTS)] + (7 if k % 2 else 0)
        notes.append((pitch, start, start + gate * slot))
    return notes


def chords():
    return [{"root": ROOTS[b % len(ROOTS)] % 12, "intervals": [0, 4, 7] if b % 2 else [0, 3, 7],
             "start": 2.0 * b, "end": 2.0 * (b + 1)} for b in range(int(SECONDS / 2))]


def scores(line_notes_or_audio, reference_notes, use_truth=True):
    line = (render(line_notes_or_audio) if isinstance(line_notes_or_audio, list) else line_notes_or_audio)
    ref = render(reference_notes)
    onsets = note_onsets([[p, s, e] for p, s, e in reference_notes], SECONDS) if use_truth else None
    return articulation_scores(articulation_features(line, RATE), articulation_features(ref, RATE), onsets)


def test_the_true_bass_scores_one_against_itself():
    notes = bass_line()
    audio = render(notes)
    features = articulation_features(audio, RATE)
    track = track_pitch(audio, RATE)
    got = articulation_scores(features, features, line_midi=track.midi, reference_midi=track.midi)
    assert got["onset_f1"] == 1.0 and got["note_rate"] == 1.0 and got["sounding_iou"] == 1.0
    assert got["register_st"] == 0.0
    assert got["pitch_change_f1"] == 1.0


def pitch_change_scores(line_notes, reference_notes) -> dict[str, float]:
    from bassray.eval.articulation import pitch_change_scores
    return pitch_change_scores(track_pitch(render(line_notes), RATE).midi,
                               track_pitch(render(reference_notes), RATE).midi)


def test_a_line_pedalling_one_chord_tone_scores_no_pitch_changes():
    notes = bass_line(per_bar=2)                        # root then fifth in every bar
    pedal = [(ROOTS[0], s, e) for _, s, e in notes]     # the same rhythm on one note
    got = pitch_change_scores(pedal, notes)
    assert got["pitch_change_f1"] == 0.0 and got["pitch_changes_per_s"] == 0.0
    assert pitch_change_scores(notes, notes)["pitch_change_f1"] == 1.0


def test_a_line_moving_twice_as_often_finds_every_change_and_half_its_own():
    notes = [(ROOTS[int(s // 2.0) % len(ROOTS)], s, e) for _, s, e in bass_line(per_bar=2)]  # a root per bar
    moving = bass_line(per_bar=2)                                      # root and fifth: changes at every note
    got, truth = pitch_change_scores(moving, notes), pitch_change_scores(notes, notes)
    assert 0.55 <= got["pitch_change_f1"] <= 0.8                       # recall 1, precision 1/2
    assert 1.6 <= got["pitch_changes_per_s"] / truth["pitch_changes_per_s"] <= 2.4


def test_pitch_changes_ignore_rests_and_short_glitches():
    from bassray.eval.articulation import pitch_change_times
    nan = np.nan
    frames = [40.0] * 10 + [nan] * 10 + [40.2] * 10 + [47.0] * 1 + [40.0] * 10 + [43.0] * 10
    assert np.allclose(pitch_change_times(np.array(frames), frame_s=0.016), [41 * 0.016])  # the one-frame 47 is a glitch
    assert pitch_change_times(np.array([nan] * 5), frame_s=0.016).size == 0


def test_the_detector_finds_the_ground_truth_notes_of_a_clean_line():
    got = scores(bass_line(), bass_line())
    assert got["onset_f1"] > 0.9
    assert 0.9 <= got["note_rate"] <= 1.1


def test_a_line_shifted_by_150_ms_scores_a_low_onset_f1():
    notes = bass_line()
    shifted = [(p, s + 0.15, min(e + 0.15, SECONDS)) for p, s, e in notes]
    assert scores(shifted, notes)["onset_f1"] < 0.2


def test_each_note_attacked_four_times_scores_a_note_rate_near_four():
    notes = bass_line(per_bar=2)
    again = [(p, s + i * (e - s) / 4, s + (i + 1) * (e - s) / 4) for p, s, e in notes for i in range(4)]
    got = scores(again, notes)
    assert 3.2 <= got["note_rate"] <= 4.8
    assert got["onset_f1"] < 0.5  # three of four onsets find no reference note


def test_noise_at_a_bass_level_scores_a_low_harmonic_share():
    audio = render(bass_line())
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(audio.shape).astype(np.float32)
    noise *= np.sqrt(np.mean(audio ** 2) / np.mean(noise ** 2))
    clean = articulation_features(audio, RATE).harmonic_share
    noisy = articulation_features(noise, RATE).harmonic_share
    assert clean > 0.85
    assert noisy < 0.6


def test_the_harmonic_share_reads_the_low_band_as_hpss_over_the_whole_spectrum_does():
    import librosa

    from bassray.eval import articulation
    rng = np.random.default_rng(1)
    mono = render(bass_line())[0] + 0.05 * rng.standard_normal(int(SECONDS * RATE)).astype(np.float32)
    spec = np.abs(librosa.stft(mono, n_fft=articulation.HPSS_FFT, hop_length=articulation.HPSS_HOP))
    harmonic, percussive = librosa.decompose.hpss(spec, kernel_size=articulation.HPSS_KERNEL)
    low = int(articulation.HARMONIC_MAX_HZ * articulation.HPSS_FFT / RATE) + 1
    h, p = np.sum(harmonic[:low] ** 2), np.sum(percussive[:low] ** 2)
    assert articulation.harmonic_share(mono) == pytest.approx(h / (h + p), rel=1e-6)


def test_a_line_sounding_through_the_rests_scores_a_low_frame_agreement():
    staccato = bass_line(gate=0.25, per_bar=2)          # a quarter of each slot sounds
    legato = bass_line(gate=1.0, per_bar=2)             # the same notes held through the rests
    assert scores(staccato, staccato)["sounding_iou"] == 1.0
    assert scores(legato, staccato)["sounding_iou"] < 0.5


def test_a_one_note_line_on_a_chord_tone_does_not_score_high_on_the_headline():
    notes = bass_line()
    truth = {"chords": chords(), "parts": {"bass": {"notes": [[p, s, e, 100] for p, s, e in notes]}}}
    one_note = render([notes[0]])
    fit = bass_fit(one_note, RATE, truth)
    assert fit["chord_tone"] > 0.9                        # every voiced frame is on a chord tone...
    assert fit["chord_voiced_share"] < 0.15               # ...but few frames are voiced
    assert fit["chord_tone_coverage"] < 0.15
    true_fit = bass_fit(render(notes), RATE, truth)
    assert true_fit["chord_tone_coverage"] > 0.7


def test_silence_scores_no_onsets_and_nan_harmonic_share():
    silence = np.zeros((2, int(SECONDS * RATE)), np.float32)
    features = articulation_features(silence, RATE)
    assert features.onsets.size == 0 and not features.sounding.any()
    got = articulation_scores(features, articulation_features(render(bass_line()), RATE))
    assert got["onset_f1"] == 0.0 and got["note_rate"] == 0.0 and got["sounding_iou"] == 0.0
    assert np.isnan(got["harmonic_share"])


@pytest.mark.parametrize("notes", [None, [], [[40, 20.0, 21.0, 90]]])
def test_no_ground_truth_onsets_inside_the_signal_gives_none(notes):
    assert note_onsets(notes, SECONDS) is None


def test_the_pitch_median_removes_isolated_flips_and_keeps_held_notes():
    import torch

    from bassray.models.harmonic_phase import median_pitch_code, pitch_code, pitch_from_code
    notes = torch.tensor([[10.0] * 8 + [17.0] * 8 + [12.0] * 8])           # three held notes, 8 parts each
    flipped = notes.clone()
    flipped[0, 3], flipped[0, 12] = 22.0, 5.0                                # a flip of octave, one of class
    code = pitch_code(flipped, torch.ones_like(flipped, dtype=torch.bool))
    smoothed = pitch_from_code(median_pitch_code(code, 5))
    assert torch.allclose(smoothed, notes, atol=1e-4)
    held = pitch_code(notes, torch.ones_like(notes, dtype=torch.bool))
    assert torch.allclose(pitch_from_code(median_pitch_code(held, 5)), notes, atol=1e-4)
    assert median_pitch_code(code, 1) is code
    with pytest.raises(ValueError, match="odd"):
        median_pitch_code(code, 4)


def test_a_held_pitch_changes_only_at_attacks():
    import torch

    from bassray.models.harmonic_phase import held_pitch_code, pitch_code, pitch_from_code
    notes = torch.tensor([[10.0] * 8 + [17.0] * 8 + [12.0] * 8])
    wobbly = notes.clone()
    wobbly[0, 2], wobbly[0, 3], wobbly[0, 13] = 11.0, 9.0, 19.0               # wobbles inside notes
    attacks = torch.zeros_like(notes, dtype=torch.bool)
    attacks[0, [0, 8, 16]] = True
    code = pitch_code(wobbly, torch.ones_like(notes, dtype=torch.bool))
    held = pitch_from_code(held_pitch_code(code, attacks))
    assert torch.allclose(held, notes, atol=1e-4)
    # with no attack inside, the whole line is one note; the radius (voicing) is kept
    one = held_pitch_code(code, torch.zeros_like(attacks))
    assert torch.unique(torch.round(pitch_from_code(one))).numel() == 1
    assert torch.allclose(one[:, 0] ** 2 + one[:, 1] ** 2, code[:, 0] ** 2 + code[:, 1] ** 2, atol=1e-5)


def test_quarter_notes_on_the_beat_score_by_how_the_true_bass_plays():
    from bassray.eval.articulation import beat_grid_scores
    # 120 BPM: a beat each 0.5 s. A bass on every beat is matched exactly; one on every other beat
    # (half notes) is all hits for half the grid: precision 0.5, recall 1, F1 2/3, rate 2.
    quarters, halves = np.arange(0.0, 12.0, 0.5), np.arange(0.0, 12.0, 1.0)
    assert beat_grid_scores({"tempo": 120.0}, quarters, 12.0) == pytest.approx({"onset_f1": 1.0, "note_rate": 1.0})
    assert beat_grid_scores({"tempo": 120.0}, halves, 12.0) == pytest.approx({"onset_f1": 2 / 3, "note_rate": 2.0})
    # A segment cut 0.25 s into the song: its beats fall at 0.25, 0.75, ... of the segment.
    offbeat = beat_grid_scores({"tempo": 120.0, "start_seconds": 0.25}, quarters, 12.0)
    assert offbeat["onset_f1"] == 0.0
    assert beat_grid_scores({}, quarters, 12.0) == {} and beat_grid_scores({"tempo": 120.0}, None, 12.0) == {}


def test_the_mix_onsets_reference_hears_whether_the_band_attacks_with_the_bass():
    from bassray.eval.articulation import mix_onset_scores
    notes = bass_line()
    truth = note_onsets([[p, s, e] for p, s, e in notes], SECONDS)
    # upper voices an octave and a fifth up, attacking with the bass: the mix carries its rhythm
    together = render([(p + 19, s, e) for p, s, e in notes])
    assert mix_onset_scores(together, RATE, truth)["onset_f1"] > 0.9
    # the same voices 150 ms late do not
    late = render([(p + 19, s + 0.15, min(e + 0.15, SECONDS)) for p, s, e in notes])
    assert mix_onset_scores(late, RATE, truth)["onset_f1"] < 0.2
    assert mix_onset_scores(together, RATE, None) == {}
