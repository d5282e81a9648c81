"""audiocraft manifests: `<dir>/data.jsonl.gz`, one JSON object per audio file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from ..fileio import atomic_path

FIELDS = ("path", "duration", "sample_rate", "amplitude", "weight", "info_path")


def write_manifest(folder: str | Path, rows: list[dict]) -> Path:
    """Write `folder/data.jsonl.gz` atomically with audiocraft's AudioMeta fields only.

    Args:
        folder: manifest folder (one per split).
        rows: dicts holding at least `path`, `duration`, `sample_rate`.
    """
    target = Path(folder) / "data.jsonl.gz"
    with atomic_path(target) as tmp:
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({k: r.get(k) for k in FIELDS}) + "\n")
    return target


def read_manifest(folder: str | Path) -> list[dict]:
    """Rows of `folder/data.jsonl.gz` (or `data.jsonl`)."""
    folder = Path(folder)
    gz = folder / "data.jsonl.gz"
    opener = gzip.open if gz.exists() else open
    path = gz if gz.exists() else folder / "data.jsonl"
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
