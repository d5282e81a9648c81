"""audiocraft manifests: `<dir>/data.jsonl.gz`, one JSON object per audio file (audiocraft's `AudioMeta`).

Written and read here rather than with audiocraft's `audio_dataset.save_audio_meta` / `load_audio_meta`, which
use the same format, because: that module imports all of audiocraft (torch, its models, laion_clap: seconds,
and a tokenizer from the hub cache) where `prepare`, `eda` and the FAD reference only need JSON lines; its
writer writes in place (a killed `prepare` would leave a truncated manifest that reads as a smaller dataset);
its reader fails on a blank line and requires `duration` and `sample_rate` (a FAD reference needs only
`path`). The fields are audiocraft's (`tests/test_upstream_fingerprint.py` watches `AudioMeta`).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from ..fileio import atomic_path

#: audiocraft's `AudioMeta` fields, in its order (`audiocraft/data/audio_dataset.py`).
FIELDS = ("path", "duration", "sample_rate", "amplitude", "weight", "info_path")
#: What a manifest folder holds, in order of preference (prepare writes the first).
MANIFEST_NAMES = ("data.jsonl.gz", "data.jsonl")


def write_manifest(folder: str | Path, rows: list[dict]) -> Path:
    """Write `folder/data.jsonl.gz` atomically with audiocraft's AudioMeta fields only.

    Args:
        folder: manifest folder (one per split).
        rows: dicts holding at least `path`, `duration`, `sample_rate`.
    """
    target = Path(folder) / MANIFEST_NAMES[0]
    text = "".join(json.dumps({k: r.get(k) for k in FIELDS}) + "\n" for r in rows).encode("utf-8")
    with atomic_path(target) as tmp:
        # no time stamp and no file name in the gzip header: the same rows give the same bytes on a rerun
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
            f.write(text)
    return target


def manifest_file(path: str | Path) -> Path | None:
    """The manifest of `path`, or None: `path` itself (`*.jsonl`, `*.jsonl.gz`) or the manifest in that folder.

    Args:
        path: manifest file or manifest folder.
    """
    path = Path(path)
    if path.is_file() and path.name.endswith((".jsonl", ".jsonl.gz")):
        return path
    for name in MANIFEST_NAMES:
        if (path / name).is_file():
            return path / name
    return None


def manifest_bytes(manifest: str | Path) -> bytes:
    """The JSON lines of a manifest file, decompressed when it ends in `.gz`.

    Args:
        manifest: the file (see `manifest_file`).
    """
    raw = Path(manifest).read_bytes()
    return gzip.decompress(raw) if str(manifest).endswith(".gz") else raw


def parse_manifest(raw: bytes, source: str | Path) -> list[dict]:
    """Rows of a manifest's JSON lines (blank lines skipped); each must be an object with a `path`.

    Args:
        raw: the decompressed lines (`manifest_bytes`).
        source: the file they come from, for messages.
    Raises:
        ValueError: naming the file, the line and what is wrong with it.
    """
    rows = []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: not UTF-8 ({exc}); rebuild it with `zalo-music prepare`") from exc
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{source}: line {n} is not JSON ({exc}); rebuild it with `zalo-music prepare`") from exc
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            raise ValueError(f"{source}: line {n} has no 'path' string (one audiocraft AudioMeta object per line "
                             "expected); rebuild it with `zalo-music prepare`")
        rows.append(row)
    return rows


def read_manifest(path: str | Path) -> list[dict]:
    """Rows of a manifest: `path/data.jsonl.gz` (or `data.jsonl`), or the manifest file `path` itself.

    Args:
        path: manifest folder (one per split) or file.
    Raises:
        FileNotFoundError: naming the folder when it holds no manifest.
        ValueError: naming the file and line of a malformed row.
    """
    manifest = manifest_file(path)
    if manifest is None:
        raise FileNotFoundError(f"{path}: no {' or '.join(MANIFEST_NAMES)} there; build it with "
                                "`zalo-music prepare`")
    return parse_manifest(manifest_bytes(manifest), manifest)
