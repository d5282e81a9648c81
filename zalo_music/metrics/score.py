"""Score a folder of generated clips against a Zalo JSON: CLAP per item, FAD/FAS/CLAS against a reference.

    zalo-music score --audio-dir out/ --json public_test.json --reference manifests/zalo_train/valid

Writes a JSON report (metrics, completeness, per-item CLAP and window issues, the worst items, missing,
undecodable and extra files, warnings) and returns a printable table ending with a one-line summary.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from .evaluator import ClasSettings, embed_files, is_empty_description, scores_from_embeddings
from .fad import clas
from .registry import METRICS

logger = logging.getLogger(__name__)


def score_folder(audio_dir: str | os.PathLike, json_path: str | os.PathLike,
                 reference: str | os.PathLike | None = None, settings: ClasSettings | None = None,
                 out: str | os.PathLike | None = None, worst: int = 10, progress: bool | None = None) -> dict:
    """Score every clip of `audio_dir` named by a key of the Zalo JSON.

    Nothing about an incomplete submission is hidden: ids without a clip (`missing`) and clips that cannot be
    decoded (`failed`, with the reason) are listed, and `completeness` says what CLAP/CLAS the submission gets
    when each of them counts as CLAP 0; files of `audio_dir` that no id names are listed (`extra_files`).
    Items with an empty description are left out of every score (`evaluator.is_empty_description`, the same
    rule as the evaluate stage).

    Args:
        audio_dir: folder of generated clips named by the JSON keys.
        json_path: the Zalo JSON (descriptions).
        reference: FAD reference (manifest folder/file or folder of audio); None: CLAP only.
        settings: CLAP model, tau, FAD-infinity, stats cache (default: `ClasSettings()`).
        out: where to write the JSON report (None: not written).
        worst: how many lowest-CLAP items to list.
        progress: tqdm bars with ETA for the embedding passes (None: on a terminal only).
    Returns:
        The report: `metrics`, `completeness`, `items` (per id: `clap`, `issues`), `worst`, `missing`,
        `failed`, `extra_files`, `empty_descriptions`, `reference_skipped`, `warnings`, `summary`, `settings`,
        `timing`.
    Raises:
        ValueError: no clip of the JSON could be scored.
        MetricUnavailableError: CLAP checkpoint missing (the message names the file).
    """
    from zalo_music.data.zalo_json import read_descriptions
    from zalo_music.fileio import AUDIO_SUFFIXES, is_temp, remove_stale_temps_of, safe_child, write_json

    from .clap import get_embedder
    from .reference import reference_stats

    settings = settings or ClasSettings()
    descriptions = read_descriptions(json_path)
    keys, missing, empty = [], [], []
    failed: dict[str, str] = {}
    paths: dict[str, Path] = {}
    for key in sorted(descriptions):  # sorted: the report does not depend on JSON order
        if is_empty_description(descriptions[key]):
            empty.append(key)
            continue
        try:
            path = safe_child(audio_dir, key)
        except ValueError as exc:
            failed[key] = str(exc)
            continue
        if path.is_file():
            keys.append(key)
            paths[key] = path
        else:
            missing.append(key)
    out_path = Path(out).resolve() if out is not None else None
    extra = sorted(p.name for p in Path(audio_dir).iterdir()
                   if p.is_file() and p.name not in descriptions and p.suffix.lower() in AUDIO_SUFFIXES
                   and p.resolve() != out_path and not is_temp(p))
    if not keys:
        raise ValueError(f"no clip of {json_path} found in {audio_dir} ({len(missing)} missing, "
                         f"{len(extra)} files not named by the JSON)")
    t0 = time.perf_counter()
    embedder = get_embedder(settings.clap)
    t1 = time.perf_counter()
    audio_emb, infos, read_failed = embed_files(embedder, [paths[k] for k in keys], progress=progress,
                                                desc="CLAP: scored clips")
    for i, reason in read_failed.items():
        failed[keys[i]] = reason
    scored = [(k, info) for k, info in zip(keys, infos, strict=True) if info is not None]
    if not scored:
        raise ValueError(f"none of the {len(keys)} clips of {audio_dir} named by {json_path} could be decoded "
                         f"(first: {next(iter(read_failed.values()))})")
    keys = [k for k, _ in scored]
    text_emb = embedder.embed_text([descriptions[k] for k in keys])
    t2 = time.perf_counter()
    ref, hit, ref_skipped = None, None, {}
    if reference is not None:
        ref, hit, ref_skipped = reference_stats(
            reference, lambda files: _embed_reference(embedder, files, progress), embedder.identity,
            settings.stats_cache)
    t3 = time.perf_counter()
    warnings: list[str] = []
    metrics, cos = scores_from_embeddings(text_emb, audio_emb, ref, settings, warnings)
    n_expected = len(keys) + len(missing) + len(failed)
    completeness = {
        "n_expected": n_expected, "n_scored": len(keys), "n_missing": len(missing), "n_failed": len(failed),
        "complete": len(keys) == n_expected,
        # What the submission scores if every missing or undecodable clip counts as CLAP 0 (FAD: present clips).
        "clap_missing_as_zero": float(cos.sum()) / n_expected,
    }
    if "fas" in metrics:
        completeness["clas_missing_as_zero"] = clas(completeness["clap_missing_as_zero"], metrics["fas"])
    if ref_skipped:
        warnings.append(f"{len(ref_skipped)} reference clip(s) could not be decoded and are left out of the FAD "
                        "statistics (listed in reference_skipped)")
    items = {k: {"clap": float(c), "issues": info.issues()} for (k, info), c in zip(scored, cos, strict=True)}
    order = np.argsort(cos, kind="stable")[:worst]
    report = {
        "metrics": metrics,
        "completeness": completeness,
        "items": items,
        "worst": [{"id": keys[i], "clap": float(cos[i]), "description": descriptions[keys[i]]} for i in order],
        "missing": missing,
        "failed": failed,
        "extra_files": extra,
        "empty_descriptions": empty,
        "reference_skipped": ref_skipped,
        "warnings": warnings,
        "settings": {"clap_checkpoint": str(embedder.checkpoint), "clap_sha256": embedder.checkpoint_sha256,
                     "clap_model": settings.clap.amodel, "clap_identity": embedder.identity,
                     "fad_tau": settings.fad_tau, "fad_inf": settings.fad_inf,
                     "fad_inf_method": settings.fad_inf_method,
                     "reference": None if reference is None else str(reference),
                     "reference_n": None if ref is None else ref.n, "stats_cache_hit": hit},
        "timing": {"load_clap_s": t1 - t0, "embed_s": t2 - t1, "reference_s": t3 - t2,
                   "clips_per_s": len(keys) / max(t2 - t1, 1e-9)},
    }
    report["summary"] = summary_line(report)
    if out is not None:
        remove_stale_temps_of(out)  # a killed run's half-written report
        write_json(out, report)
    return report


def _embed_reference(embedder, files, progress):
    emb, _, failed = embed_files(embedder, files, progress=progress, desc="CLAP: reference clips")
    return emb, failed


def summary_line(report: dict) -> str:
    """One line saying what was scored, what was not, and the headline numbers.

    Args:
        report: a `score_folder` report.
    """
    c, m = report["completeness"], report["metrics"]
    parts = [f"{c['n_scored']} of {c['n_expected']} clips scored"]
    for n, what in ((c["n_missing"], "missing"), (c["n_failed"], "undecodable/refused"),
                    (len(report["extra_files"]), "extra files ignored"),
                    (len(report["empty_descriptions"]), "empty descriptions skipped"),
                    (len(report["reference_skipped"]), "reference clips skipped")):
        if n:
            parts.append(f"{n} {what}")
    head = f"CLAP {m['clap']:.4f}"
    if "clas" in m:
        head = f"CLAS {m['clas']:.4f} (CLAP {m['clap']:.4f}, FAS {m['fas']:.4f}, FAD {m['fad']:.4f})"
    if not c["complete"]:
        alt = f"CLAP {c['clap_missing_as_zero']:.4f}"
        if "clas_missing_as_zero" in c:
            alt = f"CLAS {c['clas_missing_as_zero']:.4f}"
        head += f" on the scored clips only; {alt} with each missing/undecodable clip counted as CLAP 0"
    return f"score: {', '.join(parts)}; {head}"


def format_report(report: dict) -> str:
    """A plain-text table of a `score_folder` report.

    Args:
        report: what `score_folder` returned.
    """
    m = report["metrics"]
    c = report.get("completeness", {})
    lines = [f"{'metric':<10} {'value':>10}"]
    for name in [*(metric.name for metric in METRICS), "n_items"]:
        if name in m:
            lines.append(f"{name:<10} {m[name]:>10.4f}" if name != "n_items" else f"{name:<10} {m[name]:>10d}")
    if c and not c["complete"]:
        lines.append(f"INCOMPLETE: {c['n_scored']} of {c['n_expected']} clips scored; the numbers above are on "
                     "the scored clips only")
        lines.append(f"  clap with each missing/undecodable clip as CLAP 0: {c['clap_missing_as_zero']:.4f}")
        if "clas_missing_as_zero" in c:
            lines.append(f"  clas with each missing/undecodable clip as CLAP 0: {c['clas_missing_as_zero']:.4f}")
    if report["missing"]:
        lines.append(f"missing clips: {len(report['missing'])} (e.g. {report['missing'][0]})")
    for key, reason in list(report.get("failed", {}).items())[:10]:
        lines.append(f"not scored: {key}: {reason}")
    if report.get("extra_files"):
        lines.append(f"files not named by the JSON (ignored): {len(report['extra_files'])} "
                     f"(e.g. {', '.join(report['extra_files'][:3])})")
    if report["empty_descriptions"]:
        lines.append(f"empty descriptions skipped: {len(report['empty_descriptions'])}")
    for f, reason in list(report.get("reference_skipped", {}).items())[:10]:
        lines.append(f"reference clip skipped: {f}: {reason}")
    flagged = {k: v["issues"] for k, v in report["items"].items() if v["issues"]}
    if flagged:
        lines.append(f"clips with audio issues: {len(flagged)}")
        lines += [f"  {k}: {', '.join(v)}" for k, v in list(flagged.items())[:10]]
    lines.append(f"worst {len(report['worst'])} by CLAP:")
    lines += [f"  {w['clap']:+.4f}  {w['id']}  {w['description'][:70]}" for w in report["worst"]]
    lines += [f"warning: {w}" for w in report.get("warnings", [])]
    if "summary" in report:
        lines.append(report["summary"])
    return "\n".join(lines)
