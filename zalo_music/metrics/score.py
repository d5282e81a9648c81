"""Score a folder of generated clips against a Zalo JSON: CLAP per item, FAD/FAS/CLAS against a reference.

    zalo-music score --audio-dir out/ --json public_test.json --reference manifests/zalo_train/valid

Writes a JSON report (metrics, per-item CLAP and window issues, the worst items, missing files) and returns a
printable table.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from .evaluator import ClasSettings, embed_files, scores_from_embeddings

logger = logging.getLogger(__name__)


def load_zalo_json(path: str | os.PathLike) -> dict[str, str]:
    """`{"<id>.mp3": "<description>"}` from a Zalo JSON file.

    Args:
        path: the JSON file.
    Raises:
        ValueError: when it is not a flat object of strings.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: expected a flat JSON object {{\"<id>.mp3\": \"<description>\"}}")
    return data


def score_folder(audio_dir: str | os.PathLike, json_path: str | os.PathLike,
                 reference: str | os.PathLike | None = None, settings: ClasSettings | None = None,
                 out: str | os.PathLike | None = None, worst: int = 10) -> dict:
    """Score every clip of `audio_dir` named by a key of the Zalo JSON.

    Args:
        audio_dir: folder of generated clips named by the JSON keys.
        json_path: the Zalo JSON (descriptions).
        reference: FAD reference (manifest folder/file or folder of audio); None: CLAP only.
        settings: CLAP model, tau, FAD-infinity, stats cache (default: `ClasSettings()`).
        out: where to write the JSON report (None: not written).
        worst: how many lowest-CLAP items to list.
    Returns:
        The report: `metrics`, `items` (per id: `clap`, `issues`), `worst`, `missing`, `empty_descriptions`,
        `settings`, `timing`.
    Raises:
        ValueError: no clip of the JSON was found in `audio_dir`.
        MetricUnavailableError: CLAP checkpoint missing (the message names the file).
    """
    from zalo_music.fileio import safe_child, write_json

    from .clap import get_embedder
    from .reference import reference_stats

    settings = settings or ClasSettings()
    descriptions = load_zalo_json(json_path)
    keys, missing, empty = [], [], []
    for key in sorted(descriptions):  # sorted: the report does not depend on JSON order
        if not descriptions[key].strip():
            empty.append(key)
        elif safe_child(audio_dir, key).is_file():
            keys.append(key)
        else:
            missing.append(key)
    if not keys:
        raise ValueError(f"no clip of {json_path} found in {audio_dir} ({len(missing)} missing)")
    t0 = time.perf_counter()
    embedder = get_embedder(settings.clap)
    t1 = time.perf_counter()
    audio_emb, infos = embed_files(embedder, [safe_child(audio_dir, k) for k in keys])
    text_emb = embedder.embed_text([descriptions[k] for k in keys])
    t2 = time.perf_counter()
    ref, hit = None, None
    if reference is not None:
        ref, hit = reference_stats(reference, lambda files: embed_files(embedder, files)[0], embedder.identity,
                                   settings.stats_cache)
    t3 = time.perf_counter()
    metrics, cos = scores_from_embeddings(text_emb, audio_emb, ref, settings)
    items = {k: {"clap": float(c), "issues": info.issues()} for k, c, info in zip(keys, cos, infos, strict=True)}
    order = np.argsort(cos, kind="stable")[:worst]
    report = {
        "metrics": metrics,
        "items": items,
        "worst": [{"id": keys[i], "clap": float(cos[i]), "description": descriptions[keys[i]]} for i in order],
        "missing": missing,
        "empty_descriptions": empty,
        "settings": {"clap_checkpoint": str(embedder.checkpoint), "clap_model": settings.clap.amodel,
                     "fad_tau": settings.fad_tau, "fad_inf": settings.fad_inf,
                     "reference": None if reference is None else str(reference),
                     "reference_n": None if ref is None else ref.n, "stats_cache_hit": hit},
        "timing": {"load_clap_s": t1 - t0, "embed_s": t2 - t1, "reference_s": t3 - t2,
                   "clips_per_s": len(keys) / max(t2 - t1, 1e-9)},
    }
    if out is not None:
        write_json(out, report)
    return report


def format_report(report: dict) -> str:
    """A plain-text table of a `score_folder` report.

    Args:
        report: what `score_folder` returned.
    """
    m = report["metrics"]
    lines = [f"{'metric':<10} {'value':>10}"]
    for name in ("clap", "fad", "fas", "clas", "fad_inf", "fas_inf", "clas_inf", "n_items"):
        if name in m:
            lines.append(f"{name:<10} {m[name]:>10.4f}" if name != "n_items" else f"{name:<10} {m[name]:>10d}")
    if report["missing"]:
        lines.append(f"missing clips: {len(report['missing'])} (e.g. {report['missing'][0]})")
    if report["empty_descriptions"]:
        lines.append(f"empty descriptions skipped: {len(report['empty_descriptions'])}")
    flagged = {k: v["issues"] for k, v in report["items"].items() if v["issues"]}
    if flagged:
        lines.append(f"clips with audio issues: {len(flagged)}")
        lines += [f"  {k}: {', '.join(v)}" for k, v in list(flagged.items())[:10]]
    lines.append(f"worst {len(report['worst'])} by CLAP:")
    lines += [f"  {w['clap']:+.4f}  {w['id']}  {w['description'][:70]}" for w in report["worst"]]
    return "\n".join(lines)
