"""Phase from pitch: the bass decoder builds every bin's phase from one f0 per STFT frame.

Why: a spectrogram decoder that emits the phase of every bin directly lost the pitch of every
bass reconstruction (raw pitch accuracy 0.002 on the synthetic songs), and one that emitted a
per-bin instantaneous frequency never learnt it in 1,200 steps. Yet a smeared decoded magnitude
keeps the pitch (0.67 against 0.015) once every bin's phase rotates at the frequency of its nearest
harmonic of the right f0: the waveform is then periodic at f0 whatever the magnitude's blur.
So the latent carries the input's own f0, found by YIN (:func:`yin_f0`, vectorised here: 25 ms for
12 s of audio on one core, where torchcrepe takes 0.8 s, with the same accuracy on the synthetic
basses), in a few channels of its own. Learnt instead, the f0 took far longer than a CPU quickstart
trains: a 180-way f0 classifier in the decoder, and an f0 regression with the YIN f0 as an encoder
input, were both still near chance after 600 steps.

Frequencies here are in STFT bins (bin k sits at k * sample_rate / n_fft Hz). Plain PyTorch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# The bass register: 45 semitones from 30 Hz (to ~400 Hz).
PITCH_MIN_HZ = 30.0
PITCH_SEMITONES = 45
# With 75 % overlap the phase advance per hop identifies a frequency within +-2 bins of a bin's
# centre (the span of a Hann main lobe); a harmonic further away leaves the bin at the edge.
MAX_DEVIATION_BINS = 2.0
# A frame's loudness for L_pitch and the encoder is measured below this frequency (the bass's partials).
TARGET_MAX_HZ = 2000.0
# Frames whose YIN aperiodicity is below this count as pitched.
PERIODIC_BELOW = 0.3


def semitones_to_bins(semitones: torch.Tensor, sample_rate: int, n_fft: int) -> torch.Tensor:
    """Pitch in semitones above ``PITCH_MIN_HZ`` -> frequency in STFT bins."""
    return PITCH_MIN_HZ * torch.pow(2.0, semitones / 12.0) * n_fft / sample_rate


def harmonic_deviation(f0_bins: torch.Tensor, n_bins: int) -> torch.Tensor:
    """``f0 [..., N]`` (bins) -> ``[..., n_bins, N]``: each bin's offset to its nearest harmonic of
    f0 (the first harmonic at least), clamped to +-2 bins."""
    k = torch.arange(n_bins, device=f0_bins.device, dtype=f0_bins.dtype)[:, None]
    f0 = f0_bins.unsqueeze(-2)
    harmonic = torch.clamp(torch.round(k / f0), min=1.0)
    return torch.clamp(harmonic * f0 - k, -MAX_DEVIATION_BINS, MAX_DEVIATION_BINS)


def integrate_phase(deviation: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Per-bin phase ``[..., F, N]`` from frequency deviations (bins) by integration over frames.

    Bin k of a centred STFT sees a partial at (k + d) bins with phase ``w n hop - pi k`` (+ const),
    so frame n's phase is ``-pi k + sum_{m=1..n} 2 pi (k + d_m) hop / n_fft``. The k-part is summed
    exactly modulo 2 pi, so long inputs lose no precision to float32.
    """
    n_bins, frames = deviation.shape[-2:]
    k = torch.arange(n_bins, device=deviation.device, dtype=torch.float64)[:, None]
    n = torch.arange(frames, device=deviation.device, dtype=torch.float64)[None, :]
    turns = torch.remainder(k * n * hop_length, n_fft) / n_fft
    base = (2 * math.pi * turns - math.pi * k).to(deviation.dtype)
    step = deviation * (2 * math.pi * hop_length / n_fft)
    return base + torch.cumsum(step, dim=-1) - step[..., :1]


def harmonic_phase(f0_bins: torch.Tensor, n_bins: int, n_fft: int, hop_length: int) -> torch.Tensor:
    """Unit phase ``[..., 2, F, N]`` (cos, sin) for an f0 track ``[..., N]`` in bins."""
    angle = integrate_phase(harmonic_deviation(f0_bins, n_bins), n_fft, hop_length)
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=-3)


def pitch_targets(wav: torch.Tensor, spec: torch.Tensor, sample_rate: int, hop_length: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The f0 of every STFT frame of ``wav [B, C, T]`` (``spec [B, C, F, N]`` its STFT): the YIN f0 of
    the channel mean in semitones above ``PITCH_MIN_HZ``, and how much the frame counts: its mean
    magnitude below 2 kHz where YIN finds it periodic, else 0 (both ``[B, N]`` float)."""
    frames, n_fft = spec.shape[-1], 2 * (spec.shape[-2] - 1)
    f0, aperiodicity = yin_f0(wav.float().mean(dim=1), sample_rate, hop_length, frames)
    top = min(spec.shape[-2], int(TARGET_MAX_HZ * n_fft / sample_rate) + 1)
    energy = spec[..., :top, :].abs().mean(dim=(1, 2))
    return hz_to_semitones(f0), energy * (aperiodicity < PERIODIC_BELOW)


# YIN (de Cheveigne & Kawahara 2002): the first dip of the cumulative-mean-normalised difference
# below this threshold is the period; taking the first dip, not the deepest, avoids f0/2. On 40
# synthetic bass stems (against their notes): 0.15, YIN's usual value, put 95.6 % of pitched frames
# within 50 cents and 3.0 % an octave off; 0.5 put 98.7 % within 50 cents and none an octave off.
YIN_THRESHOLD = 0.5


@torch.no_grad()
def yin_f0(wav: torch.Tensor, sample_rate: int, hop_length: int, frames: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """YIN f0 (Hz) and aperiodicity (the normalised difference at the chosen period, 0 = periodic)
    of a mono ``[B, T]`` signal for ``frames`` frames centred at multiples of ``hop_length``.
    Periods span the bass register (30-400 Hz); the integration window is two periods of the lowest."""
    tau_min = int(sample_rate / (PITCH_MIN_HZ * 2 ** (PITCH_SEMITONES / 12)))
    tau_max = int(math.ceil(sample_rate / PITCH_MIN_HZ))
    window = 2 * tau_max
    length = window + tau_max
    x = F.pad(wav.float(), (length // 2, length // 2 + frames * hop_length))
    x = x.unfold(-1, length, hop_length)[:, :frames]                       # [B, N, L]
    x = x - x.mean(dim=-1, keepdim=True)
    n = 1 << (2 * length - 1).bit_length()
    corr = torch.fft.irfft(torch.fft.rfft(x, n).mul(torch.fft.rfft(x[..., :window], n).conj()), n)
    corr = corr[..., : tau_max + 1]                                         # R(tau), tau = 0..tau_max
    energy = F.pad(torch.cumsum(x.square(), dim=-1), (1, 0))               # [B, N, L+1]
    taus = torch.arange(tau_max + 1, device=wav.device)
    e_tau = energy[..., taus + window] - energy[..., taus]                 # sum_{j<W} x_{j+tau}^2
    diff = (e_tau[..., :1] + e_tau - 2 * corr).clamp_min(0.0)               # d(tau)
    cmnd = diff[..., 1:] * taus[1:] / torch.cumsum(diff[..., 1:], dim=-1).clamp_min(1e-12)
    cmnd = F.pad(cmnd, (1, 0), value=1.0)                                   # d'(tau), d'(0) = 1
    searchable = cmnd[..., tau_min:tau_max]
    local_min = F.pad((searchable[..., 1:-1] <= searchable[..., :-2]) & (searchable[..., 1:-1] <= searchable[..., 2:]),
                      (1, 1), value=False)
    below = local_min & (searchable < YIN_THRESHOLD)
    first = torch.where(below.any(-1), below.float().argmax(-1), searchable.argmin(-1)) + tau_min
    # Parabolic interpolation around the chosen lag for a sub-sample period.
    left = cmnd.gather(-1, (first - 1).unsqueeze(-1)).squeeze(-1)
    mid = cmnd.gather(-1, first.unsqueeze(-1)).squeeze(-1)
    right = cmnd.gather(-1, (first + 1).clamp(max=tau_max).unsqueeze(-1)).squeeze(-1)
    curvature = left - 2 * mid + right
    shift = torch.where(curvature > 1e-9, 0.5 * (left - right) / curvature, torch.zeros_like(mid)).clamp(-1, 1)
    return sample_rate / (first.float() + shift), mid


# MIDI number of PITCH_MIN_HZ: pitches are semitones above it, pitch classes count from C.
_MIDI_OFFSET = 69.0 + 12.0 * math.log2(PITCH_MIN_HZ / 440.0)


def snap_to_semitones(semitones: torch.Tensor) -> torch.Tensor:
    """Round pitches (semitones above ``PITCH_MIN_HZ``) to equal temperament at A = 440 Hz."""
    return torch.round(semitones + _MIDI_OFFSET) - _MIDI_OFFSET


def pitch_code(semitones: torch.Tensor, pitched: torch.Tensor) -> torch.Tensor:
    """``[..., P]`` pitches (semitones above ``PITCH_MIN_HZ``) -> ``[..., 3, P]`` latent code: the
    nearest pitch class as a point on the circle of fifths (C at angle 0, G at 30 degrees, D at 60...)
    and the height (semitones / 45, unrounded), all 0 where unpitched.

    A circle makes an octave jump a non-event; the circle of *fifths* puts the classes a bass line
    moves between (root, fifth, the scale) next to each other, so a diffusion model that is unsure
    between root and fifth lands on one of them, where on the chromatic circle (root and fifth 210
    degrees apart) their average is a wrong note. Measured on the quickstart's latents, 4,000 steps:
    generated chord-tone agreement 0.42 (chromatic) -> 0.68 (fifths). The height picks the octave
    and keeps the fine tuning."""
    midi = semitones + _MIDI_OFFSET
    fifths = torch.remainder(7.0 * torch.round(midi), 12.0)        # 7 x 7 = 49 = 1 (mod 12)
    angle = 2 * math.pi * fifths / 12.0
    mask = pitched.to(semitones.dtype)
    return torch.stack([torch.cos(angle) * mask, torch.sin(angle) * mask, semitones / PITCH_SEMITONES * mask], dim=-2)


def pitch_from_code(code: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pitch_code`: ``[..., 3, P]`` -> ``[..., P]`` semitones: the pitch class from
    the nearest point of the circle of fifths, in the octave nearest the height, plus the height's
    deviation from equal temperament (any point decodes, so generated codes do too)."""
    fifths = torch.round(torch.atan2(code[..., 1, :], code[..., 0, :]) * 12.0 / (2 * math.pi))
    pitch_class = torch.remainder(7.0 * fifths, 12.0)
    height = code[..., 2, :] * PITCH_SEMITONES + _MIDI_OFFSET
    midi = pitch_class + 12.0 * torch.round((height - pitch_class) / 12.0) + (height - torch.round(height))
    return (midi - _MIDI_OFFSET).clamp(0.0, float(PITCH_SEMITONES))


def pitch_through_rests(semitones: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """``semitones [B, P]`` (:func:`pitch_from_code` of ``code [B, 3, P]``) with each unpitched part
    (a code radius under 0.5: 0 in a true code, near 0 in a generated one) taking the pitch of the
    last pitched part before it (the first pitched part's before any), for the decoder's f0.

    Why: an unpitched part decodes as the lowest pitch (a zero code), a near-zero generated code as
    any class, so in a note's decaying tail or a rest the decoder's f0 jumped, and with it the
    harmonic phase and the comb: a burst of partials that sounds as an attack. A string left ringing
    keeps its pitch (docs/articulation.md)."""
    pitched = code[:, 0] ** 2 + code[:, 1] ** 2 > 0.25
    index = torch.arange(semitones.shape[-1], device=semitones.device).expand_as(semitones)
    last = torch.where(pitched, index, torch.full_like(index, -1)).cummax(dim=-1).values
    first = pitched.to(torch.uint8).argmax(dim=-1, keepdim=True).expand_as(last)   # 0 where none is
    return semitones.gather(-1, torch.where(last >= 0, last, first))


def code_of_latent(z: torch.Tensor, parts: int) -> torch.Tensor:
    """The pitch code ``[B, 3, L * parts]`` that a bass latent ``[B, D, L]`` carries in its last
    ``3 * parts`` channels (S cos, S sin, S height; the autoencoder's layout)."""
    B, L = z.shape[0], z.shape[-1]
    return z[:, -3 * parts:].reshape(B, 3, parts, L).transpose(2, 3).reshape(B, 3, L * parts)


def latent_with_code(z: torch.Tensor, code: torch.Tensor, parts: int) -> torch.Tensor:
    """A copy of the latent ``z [B, D, L]`` carrying ``code [B, 3, L * parts]`` instead of its own."""
    B, L = z.shape[0], z.shape[-1]
    out = z.clone()
    out[:, -3 * parts:] = code.reshape(B, 3, L, parts).transpose(2, 3).reshape(B, 3 * parts, L)
    return out


def median_pitch_code(code: torch.Tensor, width: int) -> torch.Tensor:
    """``code [B, 3, P]`` (:func:`pitch_code` of P quarter frames) with its pitch track median-filtered
    over ``width`` (odd) neighbours: a note shorter than ``width // 2 + 1`` parts, an isolated flip
    of pitch class or octave, takes its neighbours' pitch. The code's radius is kept.

    Why: a generated code jitters between neighbouring classes and octaves from one quarter frame
    to the next, and each change is a new pitch the decoder plays: an attack and a smear of
    partials. On the quickstart's generated latents, 5 parts (320 ms at 16 kHz) raised the harmonic
    share from 0.77 to 0.88 and chord-tone coverage from 0.40 to 0.56; the true latents hold a note's
    pitch across its parts and lose nothing (docs/articulation.md)."""
    if width <= 1:
        return code
    if width % 2 == 0:
        raise ValueError(f"the pitch median's width must be odd, got {width}")
    semitones = pitch_from_code(code)                                                       # [B, P]
    padded = F.pad(semitones[:, None], (width // 2, width // 2), mode="replicate")[:, 0]
    return _code_with_pitch(code, padded.unfold(-1, width, 1).median(-1).values)


def _code_with_pitch(code: torch.Tensor, semitones: torch.Tensor) -> torch.Tensor:
    """``code [B, 3, P]`` carrying the pitch track ``semitones [B, P]`` instead, its radius kept."""
    angle = 2 * math.pi * torch.remainder(7.0 * torch.round(semitones + _MIDI_OFFSET), 12.0) / 12.0
    radius = torch.sqrt(code[:, 0] ** 2 + code[:, 1] ** 2)
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle), semitones / PITCH_SEMITONES], dim=1)


def held_pitch_code(code: torch.Tensor, attacks: torch.Tensor) -> torch.Tensor:
    """``code [B, 3, P]`` with each note's pitch held: between one attack (``attacks [B, P]``, bool)
    and the next, every part takes the median pitch of the span. The code's radius is kept.

    Why: a plucked string changes pitch only where it is plucked again, while a generated code
    wobbles within a note, and the decoder plays each wobble as a new attack (docs/articulation.md)."""
    semitones = pitch_from_code(code)                                                       # [B, P]
    held = semitones.clone()
    for b in range(code.shape[0]):
        starts = [0] + [int(t) for t in torch.nonzero(attacks[b]).flatten() if t > 0] + [code.shape[-1]]
        for lo, hi in zip(starts[:-1], starts[1:]):
            if hi > lo:
                held[b, lo:hi] = semitones[b, lo:hi].median()
    return _code_with_pitch(code, held)


def hz_to_semitones(f0_hz: torch.Tensor) -> torch.Tensor:
    """f0 in Hz -> semitones above ``PITCH_MIN_HZ``, clamped to the bass register."""
    return (12.0 * torch.log2(f0_hz.clamp_min(1e-3) / PITCH_MIN_HZ)).clamp(0.0, float(PITCH_SEMITONES))


# Chroma for the mix latent: bins from 130 Hz (below, a 16 kHz / 1024 STFT bin spans more than a
# semitone) to 2.1 kHz, where chords' comping and melody live.
CHROMA_MIN_HZ, CHROMA_MAX_HZ = 130.0, 2100.0


def chroma_filterbank(sample_rate: int, n_fft: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[12, F]``: each bin's share of each pitch class (triangular, one semitone wide, C = 0)."""
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    midi = 69.0 + 12.0 * torch.log2(freqs.clamp_min(1e-3) / 440.0)
    classes = torch.arange(12, dtype=torch.float64)[:, None]
    distance = torch.remainder(midi[None] - classes + 6.0, 12.0) - 6.0
    weights = (1.0 - distance.abs()).clamp_min(0.0)
    weights = weights * ((freqs >= CHROMA_MIN_HZ) & (freqs <= CHROMA_MAX_HZ))[None]
    return weights.float().to(device)


def frame_chroma(spec: torch.Tensor, sample_rate: int, frames_per_value: int) -> torch.Tensor:
    """Chroma of a complex STFT ``[B, C, F, N]``, averaged over ``frames_per_value`` frames:
    ``[B, 12, N / frames_per_value]`` in [0, 1], each value's strongest class 1 (0 in silence)."""
    n_fft = 2 * (spec.shape[-2] - 1)
    power = spec.abs().square().mean(dim=1)                                   # [B, F, N]
    chroma = torch.einsum("cf,bfn->bcn", chroma_filterbank(sample_rate, n_fft, spec.device), power)
    B, _, N = chroma.shape
    chroma = chroma.reshape(B, 12, N // frames_per_value, frames_per_value).mean(-1)
    peak = chroma.amax(dim=1, keepdim=True)
    return torch.where(peak > 1e-4, chroma / peak.clamp_min(1e-12), torch.zeros_like(chroma))
