"""Reading Zalo-format description files: `{"<id>.mp3": "<English description>"}`."""

from __future__ import annotations

import json
import typing as tp
from pathlib import Path


def read_zalo_json(json_path: str | Path) -> tuple[dict[str, tp.Any], dict[str, int]]:
    """Parse a Zalo JSON, keeping the first value of a duplicated key and counting the duplicates.

    Args:
        json_path: the file.
    Returns:
        (descriptions, {duplicated key: occurrences}).
    Raises:
        ValueError: naming the file, when it is not UTF-8 JSON or not an object.
    """
    path = Path(json_path)
    counts: dict[str, int] = {}

    def keep_first(pairs: list[tuple[str, tp.Any]]) -> dict:
        out: dict[str, tp.Any] = {}
        for k, v in pairs:
            counts[k] = counts.get(k, 0) + 1
            out.setdefault(k, v)
        return out

    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a UTF-8 BOM (Windows editors)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc}); re-save it as UTF-8") from exc
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ValueError(f"{path}: is a folder; pass the JSON file itself") from exc
    except PermissionError as exc:
        raise ValueError(f"{path}: not readable by this user ({exc.strerror}); fix its permissions") from exc
    try:
        data = json.loads(text, object_pairs_hook=keep_first)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except RecursionError as exc:
        raise ValueError(f"{path}: JSON nested too deeply; expected a flat object "
                         '{"<id>.mp3": "<description>"}') from exc
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected an object {{"<id>.mp3": "<description>"}}, got {type(data).__name__}')
    return data, {k: n for k, n in counts.items() if n > 1}


def load_descriptions(json_path: str | Path) -> dict[str, tp.Any]:
    """Strict variant of `read_zalo_json`: duplicated keys are an error.

    Raises:
        ValueError: naming the file and the duplicated keys.
    """
    data, dupes = read_zalo_json(json_path)
    if dupes:
        raise ValueError(f"{json_path}: duplicate keys {sorted(dupes)[:5]}: each id must appear once")
    return data
