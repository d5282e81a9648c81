"""Words of Zalo/MusicCaps-style descriptions, and a parser that turns a description into sidecar fields.

The parsed fields (instrument, moods, genre, bpm) give audiocraft's text augmentation (`merge_text_p`,
`drop_desc_p`) something real to merge; the demo generator uses the same vocabulary to pick timbres.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Longest phrases first so "electric guitar" wins over "guitar".
INSTRUMENTS: tuple[str, ...] = (
    "acoustic guitar", "electric guitar", "bass guitar", "synth bass", "synth pad", "synth lead", "synthesizer",
    "grand piano", "electric piano", "piano", "keyboard", "organ", "strings", "violin", "cello", "flute",
    "saxophone", "trumpet", "harp", "bells", "marimba", "bass", "guitar", "drums", "kick", "snare",
    "hi hats", "shakers", "percussion", "choir", "vocal", "synth",
)
MOODS: tuple[str, ...] = (
    "happy", "joyful", "cheerful", "fun", "upbeat", "energetic", "lively", "groovy", "exciting", "uplifting",
    "calm", "relaxing", "peaceful", "soothing", "mellow", "soft", "dreamy", "ethereal", "romantic",
    "sad", "melancholic", "emotional", "nostalgic", "passionate", "dark", "tense", "epic", "aggressive",
    "reflective", "pensive", "soulful",
)
GENRES: tuple[str, ...] = (
    "lo-fi", "hip hop", "edm", "electro", "electronic", "house", "techno", "ambient", "classical",
    "modern classical", "jazz", "blues", "rock", "pop", "folk", "country", "reggae", "latin", "funk",
    "r&b", "soul", "metal", "cinematic", "orchestral", "children's", "disco", "trap",
)
TEMPO_WORDS: dict[str, float] = {
    "very slow": 60.0, "slow": 72.0, "medium": 100.0, "moderate": 100.0, "mid-tempo": 100.0,
    "fast": 132.0, "very fast": 150.0, "uptempo": 128.0,
}


@dataclass
class ParsedDescription:
    """Fields found in a description; empty when the text does not mention them."""

    instruments: list[str] = field(default_factory=list)
    moods: list[str] = field(default_factory=list)
    genre: str | None = None
    bpm: float | None = None
    key: str | None = None


def _find(words: tuple[str, ...], text: str) -> list[str]:
    found: list[str] = []
    taken = text
    for w in sorted(words, key=len, reverse=True):
        pattern = r"(?<![a-z])" + re.escape(w) + r"(?![a-z])"
        if re.search(pattern, taken):
            found.append(w)
            taken = re.sub(pattern, " ", taken)  # "electric guitar" must not also count as "guitar"
    order = {w: text.find(w) for w in found}
    return sorted(found, key=lambda w: order[w])


def parse_description(text: str) -> ParsedDescription:
    """Extract instruments, moods, genre and a tempo estimate from a free-text description.

    Args:
        text: an English description in the competition's style.
    Returns:
        The fields the text supports; nothing is guessed beyond the words present.
    """
    low = text.lower().replace("hi-hat", "hi hat").replace("hi hats", "hi hats")
    parsed = ParsedDescription(instruments=_find(INSTRUMENTS, low), moods=_find(MOODS, low))
    genres = _find(GENRES, low)
    parsed.genre = genres[0] if genres else None
    k = re.search(r"\b(?:in|key of) ([a-g])(#|b|-flat|-sharp)? (major|minor)\b", low)
    if k:
        accidental = {"-flat": "b", "-sharp": "#"}.get(k.group(2) or "", k.group(2) or "")
        parsed.key = f"{k.group(1).upper()}{accidental} {k.group(3)}"
    m = re.search(r"(\d{2,3})\s*bpm", low)
    if m:
        parsed.bpm = float(m.group(1))
    else:
        m2 = re.search(r"tempo is (very slow|very fast|slow|fast|medium|moderate|mid-tempo|uptempo)", low)
        if m2:
            parsed.bpm = TEMPO_WORDS[m2.group(1)]
    return parsed
