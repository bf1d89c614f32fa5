"""A bass line's notes from its audio, and a MIDI file of them (plain numpy + librosa + pretty_midi).

Pitch is librosa's pYIN f0 (30-400 Hz: the bass register) rounded to semitones; a note is a run of
voiced frames at one pitch, split again where librosa's onset detector hears a new attack (repeated
notes at the same pitch). Onsets snap to the attack next to the pitch change; a note whose spectrum
has only even harmonics of its f0 (pYIN an octave low) moves up an octave. The MIDI file holds
one electric-bass track and a tempo map from the song's beats (librosa's beat tracker on the mix),
so that in a DAW each tracked beat is a quarter note and the notes sit on the song's grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FMIN_HZ, FMAX_HZ = 30.0, 400.0
HOP_SECONDS = 0.008       # f0 and onset frames
MIN_NOTE_SECONDS = 0.06   # shorter runs are pitch-tracker flicker, not notes
# An attack up to 100 ms before a pitch change (the f0 tracker's window lags the attack by up to
# about half its length at the lowest notes) or 30 ms after it is the note's start.
SNAP_BEFORE_SECONDS, SNAP_AFTER_SECONDS = 0.10, 0.03
BASS_PROGRAM = 33         # General MIDI: Electric Bass (finger)
TICKS_PER_BEAT = 480


@dataclass(frozen=True)
class Note:
    start: float   # seconds
    end: float
    pitch: int     # MIDI note number
    velocity: int  # 1..127, from the note's loudness


def _frames(mono: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, float]:
    """pYIN f0 (Hz, NaN where unvoiced), RMS per frame, and the hop in seconds."""
    import librosa
    hop = max(1, int(round(HOP_SECONDS * sample_rate)))
    frame = 1 << int(np.ceil(np.log2(3 * sample_rate / FMIN_HZ)))  # three periods of the lowest f0
    f0, voiced, _ = librosa.pyin(mono, fmin=FMIN_HZ, fmax=FMAX_HZ, sr=sample_rate, frame_length=frame,
                                 hop_length=hop, center=True)
    f0 = np.where(voiced, f0, np.nan)
    rms = librosa.feature.rms(y=mono, frame_length=frame, hop_length=hop, center=True)[0][:f0.size]
    return f0, np.pad(rms, (0, f0.size - rms.size)), hop / sample_rate


def _onsets(mono: np.ndarray, sample_rate: int) -> np.ndarray:
    import librosa
    hop = max(1, int(round(HOP_SECONDS * sample_rate)))
    return librosa.onset.onset_detect(y=mono, sr=sample_rate, hop_length=hop, units="time", backtrack=True)


def transcribe(audio: np.ndarray, sample_rate: int) -> list[Note]:
    """``[C, T]`` or ``[T]`` bass audio -> its notes in time order."""
    mono = np.asarray(audio, np.float32)
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono
    f0, rms, hop_s = _frames(mono, sample_rate)
    onsets = _onsets(mono, sample_rate)
    pitch = np.full(f0.size, -1)
    voiced = np.isfinite(f0)
    pitch[voiced] = np.round(69 + 12 * np.log2(f0[voiced] / 440.0)).astype(int)
    onset_frames = set(np.round(onsets / hop_s).astype(int).tolist())
    notes: list[Note] = []
    peak = float(rms.max()) if rms.size and rms.max() > 0 else 1.0
    start = None
    for i in range(pitch.size + 1):
        current = pitch[i] if i < pitch.size else -1
        new_attack = i in onset_frames and start is not None and i - start > int(MIN_NOTE_SECONDS / hop_s)
        if start is not None and (current != pitch[start] or new_attack):
            _close(notes, start, i, pitch[start], rms, peak, hop_s, onsets)
            start = None
        if start is None and current >= 0:
            start = i
    return _fix_octaves(notes, mono, sample_rate)


def _fix_octaves(notes: list[Note], mono: np.ndarray, sample_rate: int) -> list[Note]:
    """pYIN sometimes settles an octave below a high bass note. A tone at f0 has energy at its odd
    harmonics; one an octave below the truth has (nearly) only even ones: such a note moves up."""
    import librosa
    if not notes:
        return notes
    n_fft, hop = 8192, 256  # ~2 Hz bins at 16 kHz: separate harmonics of the lowest notes
    spectrum = np.abs(librosa.stft(mono, n_fft=n_fft, hop_length=hop))
    freqs = librosa.fft_frequencies(sr=sample_rate, n_fft=n_fft)

    def level(frames: np.ndarray, hz: float) -> float:
        k = int(np.argmin(np.abs(freqs - hz)))
        return float(frames[max(0, k - 1):k + 2].max())

    fixed = []
    for note in notes:
        first = int(note.start * sample_rate / hop)
        frames = spectrum[:, first:max(first + 1, int(note.end * sample_rate / hop))].mean(axis=1)
        f0 = 440.0 * 2 ** ((note.pitch - 69) / 12)
        odd = sum(level(frames, f0 * k) for k in (1, 3, 5))
        even = sum(level(frames, f0 * k) for k in (2, 4, 6))
        if odd < 0.2 * even and 2 * f0 <= FMAX_HZ:
            note = Note(note.start, note.end, note.pitch + 12, note.velocity)
        fixed.append(note)
    return fixed


def _close(notes: list[Note], start: int, end: int, pitch: int, rms: np.ndarray, peak: float, hop_s: float,
           onsets: np.ndarray) -> None:
    begin, finish = start * hop_s, end * hop_s
    if finish - begin < MIN_NOTE_SECONDS:
        return
    near = onsets[(onsets >= begin - SNAP_BEFORE_SECONDS) & (onsets <= begin + SNAP_AFTER_SECONDS)]
    if notes:
        near = near[near >= notes[-1].start + MIN_NOTE_SECONDS]  # not the previous note's attack
    if near.size:
        begin = float(near[np.argmin(np.abs(near - begin))])
    loudness = float(rms[start:end].max()) / peak
    velocity = int(np.clip(round(40 + 87 * loudness), 1, 127))
    if notes and notes[-1].end > begin:  # a snapped start never overlaps the note before
        last = notes[-1]
        notes[-1] = Note(last.start, max(last.start + 1e-3, begin), last.pitch, last.velocity)
    notes.append(Note(begin, finish, int(pitch), velocity))


BEAT_HOP = 256            # samples per onset-envelope frame (16 ms at 16 kHz)
BEAT_SNAP_SECONDS = 0.1   # a beat moves to an attack at most this far away


def song_beats(mix: np.ndarray, sample_rate: int) -> np.ndarray:
    """Beat times in seconds of a mix (``[C, T]`` or ``[T]``): librosa's beat tracker, each beat
    then moved to the start of the nearest attack (an onset backtracked to the energy minimum
    before it) within :data:`BEAT_SNAP_SECONDS`: the tracker's beats trail the attacks by the
    onset envelope's lag (about 80 ms on the synthetic songs). The tracker picks the metrical level
    (a 160 BPM half-time groove may come out at 80)."""
    import librosa
    mono = np.asarray(mix, dtype=np.float32)
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono
    if not np.any(mono):
        return np.zeros(0)
    envelope = librosa.onset.onset_strength(y=mono, sr=sample_rate, hop_length=BEAT_HOP)
    _, beats = librosa.beat.beat_track(onset_envelope=envelope, sr=sample_rate, hop_length=BEAT_HOP,
                                       units="time", trim=False)
    attacks = librosa.onset.onset_detect(onset_envelope=envelope, sr=sample_rate, hop_length=BEAT_HOP,
                                         units="time", backtrack=True, energy=envelope)
    beats = np.asarray(beats, dtype=float)
    if attacks.size:
        nearest = attacks[np.abs(attacks[None, :] - beats[:, None]).argmin(axis=1)]
        beats = np.where(np.abs(nearest - beats) <= BEAT_SNAP_SECONDS, nearest, beats)
    return np.unique(beats)


def beat_anchors(beats: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(times in seconds, beat numbers, seconds per beat after the last): the piecewise-linear map
    from time to beats that a tempo map writes. Tick 0 is time 0, so the stretch before the first
    tracked beat takes a whole number of beats and the tracked beats fall on the grid; a first beat
    less than half a beat in counts as beat 0 at time 0. Without two beats: 120 BPM, pretty_midi's
    default."""
    beats = np.asarray([] if beats is None else beats, dtype=float)
    beats = beats[np.concatenate([[True], np.diff(beats) > 1e-3])] if beats.size else beats
    if beats.size < 2:
        return np.zeros(1), np.zeros(1), 0.5
    period = float(np.median(np.diff(beats)))
    lead = int(round(beats[0] / period))
    if lead == 0:
        return np.concatenate([[0.0], beats[1:]]), np.arange(beats.size, dtype=float), period
    return (np.concatenate([[0.0], beats]), np.concatenate([[0.0], lead + np.arange(beats.size, dtype=float)]),
            period)


def notes_to_midi(notes: list[Note], path: str | Path | None = None, program: int = BASS_PROGRAM,
                  beats: np.ndarray | None = None):
    """A pretty_midi.PrettyMIDI with one bass track and a tempo map that makes each of ``beats``
    (seconds; e.g. :func:`song_beats` of the mix) a quarter note, written to ``path`` when given.
    Written with mido, whose tempo events are public API, then read back by pretty_midi."""
    import io

    import mido
    import pretty_midi
    times, numbers, last_period = beat_anchors(beats)
    periods = np.append(np.diff(times) / np.diff(numbers), last_period)          # seconds per beat

    def tick(t: float) -> int:
        i = max(0, int(np.searchsorted(times, t, side="right")) - 1)
        return int(round((numbers[i] + (t - times[i]) / periods[i]) * TICKS_PER_BEAT))

    tempo_events = [(int(round(n * TICKS_PER_BEAT)), mido.MetaMessage("set_tempo", tempo=int(round(p * 1e6))))
                    for n, p in zip(numbers, periods)]
    note_events = [(0, mido.Message("program_change", program=program, channel=0))]
    for n in notes:
        note_events.append((tick(n.start), mido.Message("note_on", note=n.pitch, velocity=n.velocity, channel=0)))
        note_events.append((max(tick(n.end), tick(n.start) + 1), mido.Message("note_off", note=n.pitch, channel=0)))
    file = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    for name, events in (("tempo", tempo_events), ("bassray bass", note_events)):
        track = mido.MidiTrack([mido.MetaMessage("track_name", name=name)])
        now = 0
        for at, message in sorted(events, key=lambda e: (e[0], e[1].type == "note_on")):  # offs first
            track.append(message.copy(time=at - now))
            now = at
        file.tracks.append(track)
    buffer = io.BytesIO()
    file.save(file=buffer)
    midi = pretty_midi.PrettyMIDI(io.BytesIO(buffer.getvalue()))
    if path is not None:
        Path(path).write_bytes(buffer.getvalue())
    return midi


def midi_bytes(notes: list[Note], beats: np.ndarray | None = None) -> bytes:
    import io
    buffer = io.BytesIO()
    notes_to_midi(notes, beats=beats).write(buffer)
    return buffer.getvalue()


def note_recovery(reference: list[Note], found: list[Note], onset_tolerance: float = 0.05) -> float:
    """The fraction of ``reference`` notes matched one-to-one by a found note of the same pitch whose
    onset is within ``onset_tolerance`` seconds."""
    unused = list(found)
    matched = 0
    for ref in reference:
        best = min((f for f in unused if f.pitch == ref.pitch and abs(f.start - ref.start) <= onset_tolerance),
                   key=lambda f: abs(f.start - ref.start), default=None)
        if best is not None:
            unused.remove(best)
            matched += 1
    return matched / max(1, len(reference))
