"""Atomic file writes and safe output naming: nothing half-written, nothing outside the output folder."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import typing as tp
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> tp.Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the block succeeds.

    Args:
        path: final destination. Its folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, obj: tp.Any, indent: int | None = 2) -> None:
    """Write `obj` as UTF-8 JSON atomically.

    Args:
        path: destination file.
        obj: JSON-serialisable object.
        indent: JSON indentation (None for compact).
    """
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def safe_child(root: str | os.PathLike, name: str) -> Path:
    """`root/name` for a name taken from user data, refusing anything that would land outside `root`.

    Args:
        root: the output folder.
        name: a file name from a JSON key (e.g. "1699168558.3313167.mp3").
    Raises:
        ValueError: for empty names, path separators, `..`, absolute paths or NUL bytes.
    """
    if not name or name in {".", ".."} or "\x00" in name or "/" in name or "\\" in name:
        raise ValueError(f"unsafe file name {name!r}: ids must be plain file names (no folders, no '..')")
    root_path = Path(root).resolve()
    child = (root_path / name).resolve()
    if child.parent != root_path:
        raise ValueError(f"unsafe file name {name!r}: it resolves outside {root_path}")
    return child
