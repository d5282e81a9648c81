"""The embedded demo dataset: procedurally rendered 10-s clips whose audio follows their description.

Descriptions are written in the competition's style (MusicCaps-like sentences about genre, instruments, tempo
and mood). The words pick what is rendered: instruments pick timbres, mood picks mode and tempo, drums are
present only when the text says so, so a text-to-music model has a real text/audio relation to learn.
Everything is derived from one seed: the same call gives the same JSON and the same audio samples.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from ..fileio import atomic_path, safe_child, write_json

SAMPLE_RATE = 16000
DURATION = 10.0

# mood -> (mode, bpm range, drums by default)
MOOD_STYLE: dict[str, tuple[str, tuple[int, int], bool]] = {
    "happy": ("major", (112, 132), True),
    "energetic": ("major", (124, 144), True),
    "groovy": ("major", (96, 116), True),
    "calm": ("major", (60, 76), False),
    "relaxing": ("major", (62, 80), False),
    "dreamy": ("major", (64, 84), False),
    "sad": ("minor", (58, 74), False),
    "melancholic": ("minor", (60, 76), False),
    "epic": ("minor", (88, 104), True),
    "tense": ("minor", (100, 120), True),
}
MOOD_COMPANIONS: dict[str, tuple[str, ...]] = {
    "happy": ("joyful", "fun", "uplifting"), "energetic": ("exciting", "lively", "upbeat"),
    "groovy": ("funky", "lively", "cool"), "calm": ("peaceful", "soothing", "soft"),
    "relaxing": ("mellow", "soft", "peaceful"), "dreamy": ("ethereal", "soft", "mellow"),
    "sad": ("emotional", "nostalgic", "pensive"), "melancholic": ("reflective", "emotional", "poignant"),
    "epic": ("powerful", "cinematic", "dramatic"), "tense": ("dark", "suspenseful", "mysterious"),
}
GENRE_BY_MODE: dict[str, tuple[str, ...]] = {
    "major": ("pop", "lo-fi", "folk", "electronic", "children's", "ambient"),
    "minor": ("cinematic", "modern classical", "ambient", "rock", "electronic"),
}
LEAD_INSTRUMENTS = ("piano", "flute", "bells", "electric guitar", "synth lead")
BACKING_INSTRUMENTS = ("synth pad", "strings", "acoustic guitar", "piano")
USAGES = (
    "in the soundtrack of a feel-good movie", "as background music for a vlog", "in a meditation app",
    "in a video game menu", "as an advertisement jingle", "in a documentary about nature",
    "for a wedding video", "in the background of a coffee shop",
)
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
KEYS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


@dataclass(frozen=True)
class ClipSpec:
    """What one demo clip renders: derived from, and consistent with, its description."""

    key_id: str
    description: str
    mood: str
    mode: str
    bpm: float
    root: int           # 0..11, semitones above C
    lead: str
    backing: str
    bass: bool
    drums: bool
    seed: int


def _tempo_word(bpm: float) -> str:
    return "slow" if bpm < 82 else ("medium" if bpm < 112 else "fast")


def make_specs(n: int = 64, seed: int = 0) -> list[ClipSpec]:
    """Draw `n` clip specs and their descriptions.

    Args:
        n: number of clips.
        seed: master seed; the result depends on nothing else.
    """
    rng = random.Random(seed)
    specs = []
    moods = list(MOOD_STYLE)
    for i in range(n):
        mood = moods[i % len(moods)] if i < len(moods) else rng.choice(moods)
        mode, (lo, hi), drums = MOOD_STYLE[mood]
        bpm = float(rng.randint(lo, hi))
        root = rng.randrange(12)
        lead = rng.choice(LEAD_INSTRUMENTS)
        backing = rng.choice([b for b in BACKING_INSTRUMENTS if b != lead])
        bass = drums or rng.random() < 0.4
        genre = rng.choice(GENRE_BY_MODE[mode])
        companions = rng.sample(MOOD_COMPANIONS[mood], 2)
        key_name = f"{KEYS[root]} {mode}"
        if rng.random() < 0.5:
            parts = [f"This is an instrumental {genre} music piece in {key_name}.",
                     f"The {lead} is playing the main melody while the {backing} plays the chords."]
            if bass:
                parts.append("A soft bass guitar holds the root notes.")
            parts.append("The rhythm is provided by a simple drum beat with kick, snare and hi hats."
                         if drums else "There are no drums in this piece.")
            parts.append(f"The tempo is {_tempo_word(bpm)}. The atmosphere is {mood}, {companions[0]} "
                         f"and {companions[1]}.")
            parts.append(f"This piece could be used {rng.choice(USAGES)}.")
        else:
            inst = [f"a {lead} melody", f"{backing} chords"]
            if bass:
                inst.append("a groovy bass")
            if drums:
                inst.append("punchy kick and snare hits with shimmering hi hats")
            parts = [f"The recording features a {genre} song in {key_name} that consists of "
                     f"{', '.join(inst[:-1])} and {inst[-1]}.",
                     f"The tempo is {_tempo_word(bpm)}. It sounds {mood}, {companions[0]} and {companions[1]}."]
            if not drums:
                parts.append("It is a purely melodic piece without percussion.")
        key_id = f"{1700000000 + 37.1234567 * i:.7f}.mp3"
        specs.append(ClipSpec(key_id, " ".join(parts), mood, mode, bpm, root, lead, backing, bass, drums,
                              rng.randrange(2**31)))
    return specs


def _midi_hz(m: float) -> float:
    return 440.0 * 2.0 ** ((m - 69) / 12)


def _tone(kind: str, hz: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One note of `n` samples of the timbre named `kind`."""
    t = np.arange(n) / sr
    if kind in ("piano", "acoustic guitar"):
        decay = 3.0 if kind == "piano" else 5.0
        partials = (1, 2, 3, 4, 5) if kind == "piano" else (1, 2, 3, 4, 5, 6, 7)
        x = sum(np.sin(2 * np.pi * hz * k * t) / k ** (1.2 if kind == "piano" else 0.9) for k in partials)
        return x * np.exp(-decay * t) * (1 - np.exp(-t * 400))
    if kind == "bells":
        x = sum(a * np.sin(2 * np.pi * hz * r * t) for r, a in ((1, 1), (2.76, .5), (5.4, .25), (8.93, .12)))
        return x * np.exp(-2.0 * t)
    if kind == "flute":
        vib = 1 + 0.004 * np.sin(2 * np.pi * 5 * t)
        phase = 2 * np.pi * hz * np.cumsum(vib) / sr
        x = np.sin(phase) + 0.2 * np.sin(2 * phase) + 0.03 * rng.standard_normal(n)
        return x * np.minimum(1, t / 0.06) * np.minimum(1, (t[::-1] + 1e-3) / 0.05)
    if kind in ("electric guitar", "synth lead"):
        phase = (hz * t) % 1.0
        saw = 2 * phase - 1
        drive = 3.0 if kind == "electric guitar" else 1.2
        x = np.tanh(drive * saw)
        return x * np.exp(-1.5 * t) * np.minimum(1, t / 0.01)
    if kind in ("synth pad", "strings"):
        detunes = (0.995, 1.0, 1.005)
        x = sum(2 * ((hz * d * t) % 1.0) - 1 for d in detunes) / 3
        if kind == "strings":
            x = x * (1 + 0.1 * np.sin(2 * np.pi * 5.5 * t))
        x = lfilter([0.08], [1, -0.92], x)  # one-pole low-pass: warm, not buzzy
        attack = 0.4 if kind == "synth pad" else 0.15
        return x * np.minimum(1, t / attack) * np.minimum(1, (t[::-1] + 1e-3) / 0.2) * 4
    if kind == "bass":
        x = np.sin(2 * np.pi * hz * t) + 0.3 * np.sign(np.sin(2 * np.pi * hz * t))
        return x * np.exp(-1.2 * t) * np.minimum(1, t / 0.005)
    raise ValueError(f"unknown timbre {kind!r}")


def render(spec: ClipSpec, sample_rate: int = SAMPLE_RATE, duration: float = DURATION) -> np.ndarray:
    """Render a clip as float32 mono in [-1, 1].

    Args:
        spec: the clip to render.
        sample_rate: output rate in Hz.
        duration: length in seconds.
    """
    rng = np.random.default_rng(spec.seed)
    n_total = int(round(sample_rate * duration))
    out = np.zeros(n_total + sample_rate * 4)
    beat = 60.0 / spec.bpm
    scale = MAJOR if spec.mode == "major" else MINOR
    base = 60 + spec.root
    degrees = (0, 4, 5, 3) if spec.mode == "major" else (0, 5, 2, 6)  # I-V-vi-IV / i-VI-III-VII
    bar = 4 * beat
    n_bars = int(np.ceil(duration / bar)) + 1

    def add(x: np.ndarray, start_s: float, gain: float) -> None:
        s = int(start_s * sample_rate)
        if s < len(out):
            e = min(len(out), s + len(x))
            out[s:e] += gain * x[: e - s]

    for b in range(n_bars):
        deg = degrees[b % len(degrees)]
        chord = [base - 12 + scale[(deg + k) % 7] + 12 * ((deg + k) // 7) for k in (0, 2, 4)]
        t0 = b * bar
        if spec.backing in ("synth pad", "strings"):
            for m in chord:
                add(_tone(spec.backing, _midi_hz(m), int(bar * sample_rate), sample_rate, rng), t0, 0.12)
        else:  # plucked or struck chords on every beat
            for k in range(4):
                for j, m in enumerate(chord):
                    add(_tone(spec.backing, _midi_hz(m), int(beat * 1.5 * sample_rate), sample_rate, rng),
                        t0 + k * beat + 0.012 * j, 0.09)
        if spec.bass:
            for k in range(4 if spec.drums else 2):
                step = beat if spec.drums else 2 * beat
                add(_tone("bass", _midi_hz(chord[0] - 12), int(step * sample_rate), sample_rate, rng),
                    t0 + k * step, 0.25)
        # melody: chord tones and scale steps, eighths when fast, quarters when slow
        step = beat / 2 if spec.bpm >= 100 else beat
        deg_now = deg + int(rng.integers(0, 3)) * 2
        for k in range(int(round(bar / step))):
            deg_now = int(np.clip(deg_now + rng.choice([-2, -1, 0, 1, 2]), 0, 11))
            m = base + scale[deg_now % 7] + 12 * (deg_now // 7)
            if rng.random() < 0.85:
                add(_tone(spec.lead, _midi_hz(m), int(step * 1.2 * sample_rate), sample_rate, rng),
                    t0 + k * step, 0.18)
        if spec.drums:
            for k in range(4):
                tb = t0 + k * beat
                if k in (0, 2):
                    nk = int(0.25 * sample_rate)
                    tk = np.arange(nk) / sample_rate
                    f = 45 + 75 * np.exp(-tk * 30)
                    add(np.sin(2 * np.pi * np.cumsum(f) / sample_rate) * np.exp(-tk * 12), tb, 0.6)
                else:
                    ns = int(0.18 * sample_rate)
                    ts = np.arange(ns) / sample_rate
                    noise = lfilter([1, -1], [1], rng.standard_normal(ns))
                    add((0.5 * noise + np.sin(2 * np.pi * 185 * ts)) * np.exp(-ts * 25), tb, 0.25)
                for h in (0, 0.5):
                    nh = int(0.05 * sample_rate)
                    hat = lfilter([1, -1], [1], rng.standard_normal(nh)) * np.exp(-np.arange(nh) / sample_rate * 80)
                    add(hat, tb + h * beat, 0.08)
    y = out[:n_total]
    y = y / max(1e-6, float(np.abs(y).max())) * 0.89
    return y.astype(np.float32)


def build_demo(out_dir: str | Path, n: int = 64, seed: int = 0, force: bool = False) -> Path:
    """Write the demo dataset: `<out>/audio/<id>.mp3` (16 kHz mono, 10 s) and `<out>/demo.json`.

    Args:
        out_dir: destination folder.
        n: number of clips.
        seed: master seed.
        force: re-render clips that already exist (by default a rerun only fills what is missing).
    Returns:
        The path of the Zalo-format JSON (`{"<id>.mp3": "<description>"}`).
    """
    from tqdm import tqdm

    out = Path(out_dir)
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    specs = make_specs(n, seed)
    start = time.time()
    written = 0
    for spec in tqdm(specs, desc="demo clips", unit="clip"):
        target = safe_child(audio_dir, spec.key_id)
        if target.exists() and not force:
            continue
        with atomic_path(target) as tmp:
            sf.write(tmp, render(spec), SAMPLE_RATE, format="MP3")
        written += 1
    json_path = out / "demo.json"
    write_json(json_path, {s.key_id: s.description for s in specs})
    write_json(out / "demo_specs.json", [s.__dict__ for s in specs])
    print(f"demo data: {n} clips ({written} rendered, {n - written} already there) in "
          f"{time.time() - start:.1f}s -> {audio_dir}; descriptions -> {json_path}")
    return json_path


def load_specs(out_dir: str | Path) -> list[dict]:
    """Read back the specs written by `build_demo` (for tests and analysis)."""
    return json.loads((Path(out_dir) / "demo_specs.json").read_text())
