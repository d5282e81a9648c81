"""`zalo-music prepare`: a Zalo-format dataset -> resampled FLAC + sidecars + audiocraft manifests.

Input: a folder of clips and a JSON `{"<id>.mp3": "<description>"}`. Output, for `--name NAME`:
  <data_dir>/NAME/audio/<id>.flac + <id>.json   (mono, --sample-rate Hz, sidecar with every MusicInfo field)
  <manifest_dir>/NAME/{train,valid}/data.jsonl.gz  (measured duration and rate, absolute paths; audiocraft
                                                   reads the sidecar beside the audio: `info_path` is for zips)
  <manifest_dir>/NAME/report.json                 (one reason per skipped item)
Bad items are reported and skipped, never fatal; originals are never touched; every file is written
atomically; a rerun skips clips whose outputs are already complete.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import time
import typing as tp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..fileio import atomic_path, safe_child, write_json
from .vocab import parse_description

#: Clips shorter than this are rejected; longer ones are trimmed to `clip_seconds`.
MIN_SECONDS = 5.0


@dataclass
class Item:
    """One input clip: its JSON key, description and source file."""

    key: str
    description: str
    source: Path


def load_descriptions(json_path: str | Path) -> dict[str, str]:
    """Read a Zalo JSON `{"<id>.mp3": "<description>"}`.

    Args:
        json_path: the JSON file.
    Raises:
        ValueError: naming the file, when it is not UTF-8 JSON of string -> string, or has duplicate keys.
    """
    path = Path(json_path)
    duplicates: list[str] = []

    def no_dupes(pairs):
        seen: dict[str, tp.Any] = {}
        for k, v in pairs:
            if k in seen:
                duplicates.append(k)
            seen[k] = v
        return seen

    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=no_dupes)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc}); re-save it as UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected an object {{"<id>.mp3": "<description>"}}, got {type(data).__name__}')
    if duplicates:
        raise ValueError(f"{path}: duplicate keys {sorted(set(duplicates))[:5]}: each id must appear once")
    return data


def normalize_description(text: str) -> str:
    """Key under which near-identical descriptions collide (case, punctuation, spacing, digits ignored)."""
    return re.sub(r"\s+", " ", re.sub(r"[^a-z ]", " ", text.lower())).strip()


def split_of(description: str, valid_fraction: float, seed: int) -> str:
    """Deterministic split by description, so (near-)duplicate descriptions never straddle train/valid.

    Args:
        description: the clip's description.
        valid_fraction: share of descriptions sent to valid.
        seed: split seed.
    """
    h = hashlib.sha1(f"{seed}:{normalize_description(description)}".encode()).digest()
    return "valid" if int.from_bytes(h[:8], "big") / 2**64 < valid_fraction else "train"


def sidecar(key: str, description: str, sample_rate: int, duration: float) -> dict:
    """Complete audiocraft MusicInfo sidecar for one clip (every field present, parsed where supported)."""
    parsed = parse_description(description)
    return {
        "title": Path(key).stem, "artist": None, "key": parsed.key, "bpm": parsed.bpm, "genre": parsed.genre,
        "moods": parsed.moods, "keywords": parsed.instruments + parsed.moods, "description": description,
        "name": Path(key).stem, "instrument": ", ".join(parsed.instruments) or None,
        "sample_rate": sample_rate, "duration": duration,
    }


def decode(path: Path) -> tuple[np.ndarray, int]:
    """Decode an audio file to float32 (channels, samples): soundfile first (MP3/WAV/FLAC), PyAV otherwise."""
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return wav.T, sr
    except Exception:  # noqa: BLE001 - fall back to FFmpeg through PyAV for anything libsndfile refuses
        from audiocraft.data.audio import audio_read

        wav_t, sr = audio_read(path)
        return wav_t.numpy(), sr


def process_one(item: Item, flac: Path, sidecar_path: Path, sample_rate: int,
                clip_seconds: float) -> dict:
    """Decode, check, resample and write one clip. Returns a manifest row, or {"error": reason}."""
    if not item.description or not item.description.strip():
        return {"error": "empty description"}
    if flac.exists() and sidecar_path.exists():
        try:
            info = sf.info(str(flac))
            if info.samplerate == sample_rate and info.frames > 0:
                return _row(item, flac, sidecar_path, info.frames / info.samplerate, sample_rate, resumed=True)
        except Exception:  # noqa: BLE001 - an unreadable previous output is simply redone
            pass
    if not item.source.exists():
        return {"error": f"audio file not found: {item.source}"}
    if item.source.stat().st_size == 0:
        return {"error": "empty file (0 bytes)"}
    try:
        wav, sr = decode(item.source)
    except Exception as exc:  # noqa: BLE001
        return {"error": f"cannot decode ({type(exc).__name__}: {str(exc)[:120]})"}
    if wav.size == 0:
        return {"error": "decodes to no samples"}
    if not np.isfinite(wav).all():
        return {"error": "contains NaN or Inf samples"}
    mono = wav.mean(axis=0)
    seconds = mono.shape[-1] / sr
    if seconds < MIN_SECONDS:
        return {"error": f"too short: {seconds:.2f}s < {MIN_SECONDS}s (truncated file?)"}
    if sr != sample_rate:
        import soxr

        mono = soxr.resample(mono, sr, sample_rate, quality="HQ").astype(np.float32)
    target = int(round(clip_seconds * sample_rate))
    mono = mono[:target]
    if target - mono.shape[-1] <= int(0.5 * sample_rate):  # pad a near-miss (MP3 priming) up to the clip length
        mono = np.pad(mono, (0, target - mono.shape[-1]))
    peak = float(np.abs(mono).max())
    if peak < 1e-4:
        return {"error": "silent (peak below -80 dBFS)"}
    if peak > 1.0:
        mono = mono / peak
    duration = mono.shape[-1] / sample_rate
    with atomic_path(flac) as tmp:
        sf.write(str(tmp), mono, sample_rate, format="FLAC", subtype="PCM_16")
    write_json(sidecar_path, sidecar(item.key, item.description, sample_rate, duration))
    info = sf.info(str(flac))  # measured from what was written, never assumed
    return _row(item, flac, sidecar_path, info.frames / info.samplerate, info.samplerate, resumed=False,
                source_rate=sr, source_seconds=seconds)


def _row(item: Item, flac: Path, sidecar_path: Path, duration: float, sample_rate: int, resumed: bool,
         **extra: tp.Any) -> dict:
    return {"path": str(flac), "duration": duration, "sample_rate": sample_rate, "amplitude": None,
            "weight": None, "info_path": None, "key": item.key, "resumed": resumed, **extra}


def _work(args: tuple) -> tuple[str, dict]:
    item, flac, side, sr, clip = args
    return item.key, process_one(item, flac, side, sr, clip)


def prepare(json_path: str | Path, audio_dir: str | Path, name: str, *, sample_rate: int = 32000,
            clip_seconds: float = 10.0, valid_fraction: float = 0.1, seed: int = 0,
            workers: int | None = None, data_dir: str | Path | None = None,
            manifest_dir: str | Path | None = None, quiet: bool = False) -> dict:
    """Prepare a Zalo-format dataset for audiocraft.

    Args:
        json_path: `{"<id>.mp3": "<description>"}`.
        audio_dir: folder holding the clips named by the keys.
        name: dataset name (`dset=zalo/prepared zalo.dataset=NAME`).
        sample_rate: output rate (the compression model's, 32000 for MusicGen).
        clip_seconds: clips are trimmed (or padded by at most 0.5 s) to this length.
        valid_fraction: share of (normalized) descriptions held out for validation.
        seed: split seed.
        workers: parallel processes (default: all cores).
        data_dir: root of prepared audio (default $ZALO_MUSIC_DATA_DIR or <project>/data).
        manifest_dir: root of manifests (default $ZALO_MUSIC_MANIFEST_DIR or <project>/manifests).
        quiet: no progress bar.
    Returns:
        The report: counts, per-split sizes and one reason per skipped item.
    """
    from tqdm import tqdm

    from .. import env

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (it becomes a folder name)")
    start = time.time()
    descriptions = load_descriptions(json_path)
    audio_dir = Path(audio_dir)
    out_audio = Path(data_dir or env.data_dir()) / name / "audio"
    out_manifests = Path(manifest_dir or env.manifest_dir()) / name
    out_audio.mkdir(parents=True, exist_ok=True)
    errors: dict[str, str] = {}
    jobs = []
    for key, desc in descriptions.items():
        if not isinstance(desc, str):
            errors[key] = f"description is {type(desc).__name__}, expected a string"
            continue
        try:
            source = safe_child(audio_dir, key)
            stem = Path(key).stem
            flac = safe_child(out_audio, stem + ".flac")
            side = safe_child(out_audio, stem + ".json")
        except ValueError as exc:
            errors[key] = str(exc)
            continue
        jobs.append((Item(key, desc, source), flac, side, sample_rate, clip_seconds))
    known = set(descriptions)
    if audio_dir.is_dir():
        for f in sorted(audio_dir.iterdir()):
            if f.is_file() and f.name not in known and f.suffix.lower() in {".mp3", ".wav", ".flac", ".ogg"}:
                errors[f.name] = "audio file has no description in the JSON"
    rows: list[dict] = []
    workers = workers or os.cpu_count() or 1
    it: tp.Iterable
    if workers > 1 and len(jobs) > 1:
        pool = ProcessPoolExecutor(workers)
        it = pool.map(_work, jobs, chunksize=8)
    else:
        pool = None
        it = map(_work, jobs)
    try:
        for key, row in tqdm(it, total=len(jobs), desc=f"prepare {name}", unit="clip", disable=quiet):
            if "error" in row:
                errors[key] = row["error"]
            else:
                rows.append(row)
    finally:
        if pool is not None:
            pool.shutdown()
    splits: dict[str, list[dict]] = {"train": [], "valid": []}
    for row in sorted(rows, key=lambda r: r["key"]):
        splits[split_of(descriptions[row["key"]], valid_fraction, seed)].append(row)
    if rows and not splits["valid"]:  # tiny datasets: keep at least one valid item
        splits["valid"].append(splits["train"].pop())
    for split, items in splits.items():
        with atomic_path(out_manifests / split / "data.jsonl.gz") as tmp:
            with gzip.open(tmp, "wt", encoding="utf-8") as f:
                for r in items:
                    f.write(json.dumps({k: r[k] for k in ("path", "duration", "sample_rate", "amplitude",
                                                          "weight", "info_path")}) + "\n")
    report = {
        "name": name, "json": str(json_path), "audio_dir": str(audio_dir), "sample_rate": sample_rate,
        "clip_seconds": clip_seconds, "total": len(descriptions), "prepared": len(rows),
        "resumed": sum(r["resumed"] for r in rows), "skipped": len(errors),
        "splits": {k: len(v) for k, v in splits.items()}, "manifests": str(out_manifests),
        "audio": str(out_audio), "seconds": round(time.time() - start, 2),
        "errors": [{"id": k, "reason": v} for k, v in sorted(errors.items())],
    }
    write_json(out_manifests / "report.json", report)
    if not quiet:
        print(f"prepared {len(rows)}/{len(descriptions)} clips ({report['resumed']} already done, "
              f"{len(errors)} skipped) in {report['seconds']}s: train {len(splits['train'])}, "
              f"valid {len(splits['valid'])} -> {out_manifests} (report: {out_manifests / 'report.json'})")
    return report
