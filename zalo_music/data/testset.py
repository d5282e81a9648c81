"""`zalo-music prepare-test`: a test description file (no audio) checked and cleaned for generation.

Writes `<manifest_dir>/NAME/test.json` (the usable `{"<id>.mp3": "<description>"}` items, whitespace
normalised) and `<manifest_dir>/NAME/report.json` (one reason per refused id, descriptions seen verbatim in a
training JSON when one is given).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..fileio import write_json
from .prepare import check_dataset_name, normalize_description
from .zalo_json import check_test_item, read_zalo_json


def prepare_test(json_path: str | Path, name: str, train_json: str | Path | None = None,
                 manifest_dir: str | Path | None = None, quiet: bool = False) -> dict:
    """Check and clean a test JSON.

    Args:
        json_path: `{"<id>.mp3": "<description>"}` to generate for.
        name: output name (`<manifest_dir>/NAME/test.json`).
        train_json: optional training JSON, to report descriptions that also appear in training.
        manifest_dir: root of manifests (default $ZALO_MUSIC_MANIFEST_DIR or <project>/manifests).
        quiet: no summary line.
    Returns:
        The report.
    """
    from .. import env

    check_dataset_name(name)  # `--name ../../x` would write outside the manifests folder
    data, dupes = read_zalo_json(json_path)
    out = Path(manifest_dir or env.manifest_dir()) / name
    errors: dict[str, str] = {k: f"duplicate id ({n} times)" for k, n in dupes.items()}
    clean: dict[str, str] = {}
    for key, text in data.items():
        if key in errors:
            continue
        try:  # the id becomes generate's file name: generate's own check, up front
            check_test_item(out, key, text)
            clean[key] = re.sub(r"\s+", " ", text).strip()
        except Exception as exc:  # noqa: BLE001 - one item's problem is that item's reason
            errors[key] = str(exc) if isinstance(exc, ValueError) else f"failed: {type(exc).__name__}: {exc}"
    overlap: list[str] = []
    if train_json:
        train, _ = read_zalo_json(train_json)
        seen = {normalize_description(t) for t in train.values() if isinstance(t, str)}
        overlap = sorted(k for k, t in clean.items() if normalize_description(t) in seen)
    write_json(out / "test.json", clean)
    report = {"name": name, "json": str(json_path), "total": len(data) + sum(n - 1 for n in dupes.values()),
              "usable": len(clean), "refused": [{"id": k, "reason": v} for k, v in sorted(errors.items())],
              "in_train": len(overlap), "in_train_ids": overlap[:100], "test_json": str(out / "test.json")}
    write_json(out / "report.json", report)
    if not quiet:
        print(f"test set {name}: {len(clean)} usable, {len(errors)} refused"
              + (f", {len(overlap)} descriptions also in training" if train_json else "")
              + f" -> {out / 'test.json'}")
    return report
