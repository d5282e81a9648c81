"""`zalo-music prepare`: a Zalo-format dataset -> resampled FLAC + sidecars + audiocraft manifests.

Input: a folder of clips and a JSON `{"<id>.mp3": "<description>"}`. Output, for `--name NAME`:
  <data_dir>/NAME/audio/<id>.flac + <id>.json   (mono, --sample-rate Hz, sidecar with every MusicInfo field)
  <manifest_dir>/NAME/{train,valid}/data.jsonl.gz  (duration and rate measured on the written file, absolute
                                                   paths; audiocraft reads the sidecar beside the audio)
  <manifest_dir>/NAME/report.json                 (counts, one reason per skipped item, notes on fixed ones)
  and, with --augment loop/concat, the 30-s datasets NAME-loop30 / NAME-concat30 built from the 10-s clips.
Bad items are reported and skipped, never fatal; originals are never touched; every file is written
atomically; a rerun skips clips whose outputs are already complete and re-validates them.
"""

from __future__ import annotations

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
from . import augment
from .manifest import write_manifest
from .vocab import parse_description
from .zalo_json import load_descriptions, read_zalo_json

__all__ = ["prepare", "load_descriptions", "split_of", "normalize_description", "sidecar", "process_one"]

AUDIO_SUFFIXES = {".mp3", ".wav", ".flac", ".ogg", ".m4a"}
#: Longest stretch of zero padding accepted at the end of a clip (MP3 encoder delay, rounding).
MAX_PAD_SECONDS = 0.5


@dataclass
class Item:
    """One input clip: its JSON key, description and source file."""

    key: str
    description: str
    source: Path


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
    import hashlib

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


def _complete(flac: Path, side: Path, sample_rate: int, clip_seconds: float) -> float | None:
    """Duration of a previous output if it is complete and valid, else None (then it is redone)."""
    if not (flac.exists() and side.exists()):
        return None
    try:
        info = sf.info(str(flac))
        seconds = info.frames / info.samplerate
        if info.samplerate == sample_rate and info.channels == 1 and abs(seconds - clip_seconds) < 1e-3:
            return seconds
    except Exception:  # noqa: BLE001
        return None
    return None


def process_one(item: Item, flac: Path, sidecar_path: Path, sample_rate: int, clip_seconds: float) -> dict:
    """Decode, check, resample and write one clip.

    Returns:
        A manifest row (with `notes` on what was fixed), or {"error": reason}.
    """
    if not item.description or not item.description.strip():
        return {"error": "empty description"}
    done = _complete(flac, sidecar_path, sample_rate, clip_seconds)
    if done is not None:
        return _row(item, flac, done, sample_rate, resumed=True, notes=[])
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
    notes = []
    if wav.shape[0] > 1:
        notes.append(f"{wav.shape[0]} channels downmixed to mono")
    mono = wav.mean(axis=0)
    seconds = mono.shape[-1] / sr
    if seconds < clip_seconds - MAX_PAD_SECONDS:
        return {"error": f"too short: {seconds:.2f}s < {clip_seconds - MAX_PAD_SECONDS:.2f}s "
                         "(truncated file? training on it would mean training on padding)"}
    if sr != sample_rate:
        import soxr

        notes.append(f"resampled {sr} -> {sample_rate} Hz")
        mono = soxr.resample(mono, sr, sample_rate, quality="HQ").astype(np.float32)
    target = int(round(clip_seconds * sample_rate))
    if mono.shape[-1] > target + int(MAX_PAD_SECONDS * sample_rate):
        notes.append(f"trimmed {seconds:.2f}s -> {clip_seconds:g}s")
    mono = mono[:target]
    mono = np.pad(mono, (0, target - mono.shape[-1]))
    peak = float(np.abs(mono).max())
    if peak < 1e-4:
        return {"error": "silent (peak below -80 dBFS)"}
    if peak > 1.0:
        notes.append(f"peak {peak:.2f} rescaled to 1.0")
        mono = mono / peak
    with atomic_path(flac) as tmp:
        # fastest FLAC level: writing is the costliest step, and reading speed (what training pays) is the same
        sf.write(str(tmp), mono, sample_rate, format="FLAC", subtype="PCM_16", compression_level=0.0)
    info = sf.info(str(flac))  # measured from what was written, never assumed
    duration = info.frames / info.samplerate
    write_json(sidecar_path, sidecar(item.key, item.description, info.samplerate, duration))
    return _row(item, flac, duration, info.samplerate, resumed=False, notes=notes)


def _row(item: Item, flac: Path, duration: float, sample_rate: int, resumed: bool, notes: list[str]) -> dict:
    return {"path": str(flac), "duration": duration, "sample_rate": sample_rate, "amplitude": None,
            "weight": None, "info_path": None, "key": item.key, "resumed": resumed, "notes": notes}


def _work(args: tuple) -> tuple[str, dict]:
    item, flac, side, sr, clip = args
    return item.key, process_one(item, flac, side, sr, clip)


def _pool_map(fn: tp.Callable, jobs: list, workers: int, desc: str, quiet: bool) -> tp.Iterator:
    """`fn` over `jobs` in `workers` processes, in order, with a progress bar; bounded look-ahead."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="clip", disable=quiet)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield fn(job)
            bar.update()
        bar.close()
        return
    window = workers * 16  # in-flight futures: memory stays bounded whatever the dataset size
    with ProcessPoolExecutor(workers) as pool:
        pending: list = []
        it = iter(jobs)
        for job in it:
            pending.append(pool.submit(fn, job))
            if len(pending) >= window:
                yield pending.pop(0).result()
                bar.update()
        for fut in pending:
            yield fut.result()
            bar.update()
    bar.close()


def prepare(json_path: str | Path, audio_dir: str | Path, name: str, *, sample_rate: int = 32000,
            clip_seconds: float = 10.0, valid_fraction: float = 0.1, seed: int = 0,
            augmentations: tp.Sequence[str] = ("none",), workers: int | None = None,
            data_dir: str | Path | None = None, manifest_dir: str | Path | None = None,
            quiet: bool = False) -> dict:
    """Prepare a Zalo-format dataset for audiocraft.

    Args:
        json_path: `{"<id>.mp3": "<description>"}`.
        audio_dir: folder holding the clips named by the keys.
        name: dataset name (`dset=zalo/prepared zalo.dataset=NAME`).
        sample_rate: output rate (the compression model's, 32000 for MusicGen).
        clip_seconds: clips are trimmed (or padded by at most 0.5 s) to this length.
        valid_fraction: share of (normalized) descriptions held out for validation.
        seed: split and grouping seed.
        augmentations: any of `none`, `loop`, `concat` (30-s datasets `NAME-loop30`, `NAME-concat30`).
        workers: parallel processes (default: all cores).
        data_dir: root of prepared audio (default $ZALO_MUSIC_DATA_DIR or <project>/data).
        manifest_dir: root of manifests (default $ZALO_MUSIC_MANIFEST_DIR or <project>/manifests).
        quiet: no progress bar or summary line.
    Returns:
        The report: counts, per-split sizes, one reason per skipped item, notes on fixed items.
    """
    from .. import env

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (it becomes a folder name)")
    unknown = set(augmentations) - set(augment.CHOICES)
    if unknown:
        raise ValueError(f"--augment {sorted(unknown)}: choose from {augment.CHOICES}")
    start = time.time()
    descriptions, duplicates = read_zalo_json(json_path)
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise FileNotFoundError(f"--audio-dir {audio_dir}: no such folder")
    data_root = Path(data_dir or env.data_dir())
    manifest_root = Path(manifest_dir or env.manifest_dir())
    out_audio = data_root / name / "audio"
    out_manifests = manifest_root / name
    out_audio.mkdir(parents=True, exist_ok=True)
    errors: dict[str, str] = {}
    for key, n in duplicates.items():
        errors[key] = f"duplicate key ({n} times in the JSON): which description is right is ambiguous"
    jobs = []
    for key, desc in descriptions.items():
        if key in errors:
            continue
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
    for f in sorted(audio_dir.iterdir()):
        if f.is_file() and f.name not in descriptions and f.suffix.lower() in AUDIO_SUFFIXES:
            errors[f.name] = "audio file has no description in the JSON"
    workers = workers or os.cpu_count() or 1
    rows: list[dict] = []
    for key, row in _pool_map(_work, jobs, workers, f"prepare {name}", quiet):
        if "error" in row:
            errors[key] = row["error"]
        else:
            row["description"] = descriptions[key]
            rows.append(row)
    splits: dict[str, list[dict]] = {"train": [], "valid": []}
    for row in sorted(rows, key=lambda r: r["key"]):
        splits[split_of(row["description"], valid_fraction, seed)].append(row)
    if rows and not splits["valid"]:  # tiny datasets: keep at least one valid item
        splits["valid"].append(splits["train"].pop())
    for split, items in splits.items():
        write_manifest(out_manifests / split, items)
    augmented = {}
    for kind in augmentations:
        if kind != "none":
            augmented[f"{name}-{kind}{int(3 * clip_seconds)}"] = _augment(
                splits, kind, name, clip_seconds, data_root, manifest_root, seed, workers, quiet)
    report = {
        "name": name, "json": str(json_path), "audio_dir": str(audio_dir), "sample_rate": sample_rate,
        "clip_seconds": clip_seconds, "total": len(descriptions), "prepared": len(rows),
        "resumed": sum(r["resumed"] for r in rows), "skipped": len(errors),
        "splits": {k: len(v) for k, v in splits.items()}, "manifests": str(out_manifests),
        "audio": str(out_audio), "augmented": augmented, "seconds": round(time.time() - start, 2),
        "errors": [{"id": k, "reason": v} for k, v in sorted(errors.items())],
        "notes": [{"id": r["key"], "note": "; ".join(r["notes"])} for r in rows if r["notes"]],
    }
    write_json(out_manifests / "report.json", report)
    if not quiet:
        extra = "".join(f", {k}: {v['train']}+{v['valid']}" for k, v in augmented.items())
        print(f"prepared {len(rows)}/{len(descriptions)} clips ({report['resumed']} already done, "
              f"{len(errors)} skipped, {len(report['notes'])} fixed) in {report['seconds']}s: "
              f"train {len(splits['train'])}, valid {len(splits['valid'])}{extra} -> {out_manifests} "
              f"(report: {out_manifests / 'report.json'})")
    return report


def _augment(splits: dict[str, list[dict]], kind: str, name: str, clip_seconds: float, data_root: Path,
             manifest_root: Path, seed: int, workers: int, quiet: bool) -> dict:
    """Build the 30-s dataset `<name>-<kind>30` from the prepared 10-s rows; returns its split sizes."""
    aug_name = f"{name}-{kind}{int(3 * clip_seconds)}"
    out_audio = data_root / aug_name / "audio"
    out_audio.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for split, rows in splits.items():
        for r in rows:
            r.setdefault("sidecar", sidecar(r["key"], r["description"], r["sample_rate"], r["duration"]))
        jobs = [(group, kind, out_audio) for group in augment.plan(rows, kind, seed)]
        out_rows = [r for r in _pool_map(augment.render_group, jobs, workers, f"{aug_name} {split}", quiet)
                    if "error" not in r]
        write_manifest(manifest_root / aug_name / split, out_rows)
        sizes[split] = len(out_rows)
    return sizes
