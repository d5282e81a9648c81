"""Zalo-format description files, `{"<id>.mp3": "<English description>"}`: the one reader and the one check of
an item that becomes an output file.

Light on purpose (no torch): `generate`, `prepare`, `prepare-test`, `score`, `submission`, `eda` and the web demo
all read or check these files.
"""

from __future__ import annotations

import json
import typing as tp
from pathlib import Path

from ..fileio import check_output_name, unicode_problem

#: Longest description generate uses as is (longer ones are truncated, with a warning) and the web demo accepts:
#: a first, model-free bound on the work per description; the T5 tokenizer then cuts to the encoder's tokens.
#: Here rather than in generate.py, which imports torch: the web demo's `--help` shows it without loading torch.
MAX_DESCRIPTION_CHARS = 2000


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


def read_descriptions(json_path: str | Path) -> dict[str, str]:
    """A Zalo JSON whose every value is a description string (duplicated keys: the first value is kept).

    Args:
        json_path: the file.
    Raises:
        ValueError: naming the file and the first id whose value is not a string.
    """
    data, _ = read_zalo_json(json_path)
    bad = next((k for k, v in data.items() if not isinstance(v, str)), None)
    if bad is not None:
        raise ValueError(f'{json_path}: the value of {bad!r} is {type(data[bad]).__name__}, not a description; '
                         'expected a flat object {"<id>.mp3": "<description>"}')
    return data


def description_problem(text: tp.Any) -> str | None:
    """Why `text` is not a usable description (what it is instead), or None: the one check of descriptions.

    Args:
        text: a JSON value.
    """
    import unicodedata

    if not isinstance(text, str):
        kind = {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "an object",
                type(None): "null"}.get(type(text), type(text).__name__)
        return f"description is {kind} ({str(text)[:40]!r}), expected a text"
    if not text.strip():
        return "empty description"
    bad = unicode_problem(text)
    if bad:
        return f"description is {bad}: fix the text in the JSON"
    # letters, numbers, punctuation or symbols: control and formatting marks alone (U+202E...) say nothing
    if not any(unicodedata.category(c)[0] in "LNPS" for c in text):
        return (f"description has no visible text (only control, formatting or space characters: "
                f"{text[:20]!r}); write the description in the JSON")
    return None


def check_test_item(out_dir: str | Path, key: tp.Any, text: tp.Any) -> Path:
    """The output file of one item of a test JSON, or a ValueError saying why the item cannot be generated.

    The one validator of test ids (generate, prepare-test): an id is written verbatim as a file name, so it must
    stay inside `out_dir` (no folders, no `..`, no NUL) and be storable there.

    Args:
        out_dir: the folder the clip is written to.
        key: the id (a JSON key).
        text: its description.
    Raises:
        ValueError: the reason, one line (unsafe or unstorable id, not `.mp3`, empty or invalid description).
    """
    target = check_output_name(out_dir, key)  # refuses `..`, folders and names no file system can store
    if not key.lower().endswith(".mp3"):
        raise ValueError("id must end in .mp3 (the file is named by the id verbatim)")
    problem = description_problem(text)
    if problem:
        raise ValueError(problem)
    return target
