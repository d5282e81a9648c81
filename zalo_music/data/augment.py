"""30-s training clips built from prepared 10-s clips: a choice a grid can compare.

- `loop`: each clip played 3 times (the original seed scripts' way).
- `concat`: 3 different clips of the same split whose descriptions match (same genre, instruments and leading
  mood as parsed from the text), so the 30-s segment still fits its description.
Each augmentation is its own dataset `<NAME>-loop30` / `<NAME>-concat30` (`dset=zalo/prepared_loop30`,
`dset=zalo/prepared_concat30`); the native 10-s dataset stays `<NAME>`.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import soundfile as sf

from ..fileio import atomic_path, write_json
from .vocab import parse_description

CHOICES = ("none", "loop", "concat")
REPEAT = 3


def match_key(description: str) -> tuple:
    """Clips whose descriptions give the same key may be concatenated."""
    p = parse_description(description)
    return (p.genre or "", tuple(sorted(p.instruments[:3])), p.moods[0] if p.moods else "")


def plan(rows: list[dict], kind: str, seed: int = 0) -> list[list[dict]]:
    """Groups of source rows, one group per 30-s output clip.

    Args:
        rows: prepared 10-s rows of one split (with `key`, `path`, `description`).
        kind: `loop` or `concat`.
        seed: grouping seed.
    """
    if kind == "loop":
        return [[r] * REPEAT for r in rows]
    if kind != "concat":
        raise ValueError(f"augmentation {kind!r}: choose one of {CHOICES}")
    rng = random.Random(seed)
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["key"]):
        groups.setdefault(match_key(r["description"]), []).append(r)
    out = []
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        for i in range(0, len(members), REPEAT):
            chunk = members[i:i + REPEAT]
            # fewer than 3 matching clips left: complete with clips of the same group (repeats)
            while len(chunk) < REPEAT:
                chunk.append(members[(i + len(chunk)) % len(members)])
            out.append(chunk)
    return out


def output_stem(group: list[dict], kind: str) -> str:
    """Output name (relative to the augmented dataset's audio folder, no suffix) of one 30-s clip."""
    if kind == "loop":
        src = Path(group[0]["path"])
        # a window of a segmented recording keeps its folder: `00003` alone would collide across recordings
        return f"{src.parent.name}/{src.stem}" if src.parent.name.endswith(".segments") else src.stem
    digest = hashlib.sha1("|".join(r["key"] for r in group).encode()).hexdigest()[:16]
    return f"cat_{digest}"


def render_group(args: tuple) -> dict:
    """Write one 30-s FLAC + sidecar (skipped when both exist). Returns its manifest row or an error."""
    group, kind, out_dir = args
    stem = output_stem(group, kind)
    flac = Path(out_dir) / f"{stem}.flac"
    side = Path(out_dir) / f"{stem}.json"
    if not (flac.exists() and side.exists()):
        try:
            parts = [sf.read(r["path"], dtype="float32")[0] for r in group]
            sr = sf.info(group[0]["path"]).samplerate
        except Exception as exc:  # noqa: BLE001
            return {"error": f"cannot read a source clip ({type(exc).__name__}: {exc})", "key": stem}
        audio = np.concatenate(parts)
        with atomic_path(flac) as tmp:
            sf.write(str(tmp), audio, sr, format="FLAC", subtype="PCM_16")
        first = dict(group[0]["sidecar"])
        first.update({"duration": len(audio) / sr, "title": stem.replace("/", "-"), "name": stem.replace("/", "-"),
                      "sources": [r["key"] for r in group], "augmentation": kind})
        write_json(side, first)
    info = sf.info(str(flac))
    return {"path": str(flac), "duration": info.frames / info.samplerate, "sample_rate": info.samplerate,
            "amplitude": None, "weight": None, "info_path": None, "key": stem}
