"""`zalo-music prepare`: a Zalo-format dataset -> resampled FLAC + sidecars + audiocraft manifests.

Input: a folder of clips and a JSON `{"<id>.mp3": "<description>"}`. Output, for `--name NAME`:
  <data_dir>/NAME/audio/<id>.flac + <id>.json   (mono, --sample-rate Hz, sidecar with every MusicInfo field)
  <manifest_dir>/NAME/{train,valid}/data.jsonl.gz  (duration and rate measured on the written file, absolute
                                                   paths; audiocraft reads the sidecar beside the audio)
  <manifest_dir>/NAME/report.json                 (counts, one reason per skipped item, notes on fixed ones)
  and, with --augment loop/concat, the 30-s datasets NAME-loop30 / NAME-concat30 built from the 10-s clips.
Bad items are reported and skipped, never fatal (an unexpected exception inside one item becomes that item's
reason); originals are never touched; only the needed window of each clip is decoded (memory does not grow
with the clip's length); every file is re-read and checked before its atomic rename; a rerun skips clips
whose outputs pass a cheap check (header, frame count, decodable tail), redoes the others, and rewrites a
sidecar whose description changed in the JSON. Two ids with the same stem (`a.mp3`, `a.wav`) get distinct
outputs (`a.mp3.flac`, `a.wav.flac`). The validation split never holds fewer than `MIN_VALID_CLIPS` clips
(or half the clips, whichever is smaller).
"""

from __future__ import annotations

import math
import os
import re
import time
import typing as tp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..fileio import (
    AUDIO_SUFFIXES,
    AudioCheckError,
    atomic_path,
    check_audio,
    check_output_name,
    safe_child,
    unicode_problem,
    write_json,
)
from ..procutil import pool_initializer
from . import augment
from .manifest import write_manifest
from .vocab import parse_description
from .zalo_json import load_descriptions, read_zalo_json

__all__ = ["prepare", "load_descriptions", "split_of", "normalize_description", "sidecar", "process_one"]

#: Longest stretch of zero padding accepted at the end of a clip (MP3 encoder delay, rounding).
MAX_PAD_SECONDS = 0.5
#: The validation split holds at least this many clips (whole description groups), or half the clips when there
#: are fewer than twice as many: one or two clips make the valid loss pure noise.
MIN_VALID_CLIPS = 8
#: Sidecar field (ignored by audiocraft's MusicInfo) that remembers what prepare fixed, for reruns' reports.
NOTES_FIELD = "zalo_notes"


@dataclass
class Item:
    """One input clip: its JSON key, description and source file."""

    key: str
    description: str
    source: Path


def normalize_description(text: str) -> str:
    """Key under which near-identical descriptions collide (case, punctuation, spacing, digits ignored)."""
    return re.sub(r"\s+", " ", re.sub(r"[^a-z ]", " ", text.lower())).strip()


def _split_value(description: str, seed: int) -> float:
    import hashlib

    h = hashlib.sha1(f"{seed}:{normalize_description(description)}".encode("utf-8", "backslashreplace")).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_of(description: str, valid_fraction: float, seed: int) -> str:
    """Deterministic split by description, so (near-)duplicate descriptions never straddle train/valid.

    Args:
        description: the clip's description.
        valid_fraction: share of descriptions sent to valid.
        seed: split seed.
    """
    return "valid" if _split_value(description, seed) < valid_fraction else "train"


def min_valid_clips(n: int, valid_fraction: float) -> int:
    """Fewest clips the validation split may hold for `n` prepared clips (see `MIN_VALID_CLIPS`).

    Args:
        n: prepared clips.
        valid_fraction: the requested share.
    """
    if n < 2:
        return n
    return min(max(MIN_VALID_CLIPS, math.ceil(valid_fraction * n)), n // 2)


def split_rows(rows: list[dict], valid_fraction: float, seed: int) -> dict[str, list[dict]]:
    """Split rows by description hash, then move whole description groups to valid up to the minimum.

    The groups moved are the train groups whose hash is closest to the threshold, so the choice is as
    deterministic as the split itself and near-duplicates still never straddle it.

    Args:
        rows: prepared rows with a `description` and a `key`.
        valid_fraction: share of descriptions held out.
        seed: split seed.
    """
    splits: dict[str, list[dict]] = {"train": [], "valid": []}
    for row in sorted(rows, key=lambda r: r["key"]):
        splits[split_of(row["description"], valid_fraction, seed)].append(row)
    need = min_valid_clips(len(rows), valid_fraction)
    if len(splits["valid"]) < need:
        groups: dict[str, list[dict]] = {}
        for row in splits["train"]:
            groups.setdefault(normalize_description(row["description"]), []).append(row)
        for group in sorted(groups, key=lambda g: (_split_value(groups[g][0]["description"], seed), g)):
            if len(splits["valid"]) >= need or len(splits["train"]) - len(groups[group]) < 1:
                break
            moved = {id(r) for r in groups[group]}
            splits["valid"].extend(groups[group])
            splits["train"] = [r for r in splits["train"] if id(r) not in moved]
        splits["valid"].sort(key=lambda r: r["key"])
    return splits


def sidecar(key: str, description: str, sample_rate: int, duration: float) -> dict:
    """Complete audiocraft MusicInfo sidecar for one clip (every field present, parsed where supported)."""
    parsed = parse_description(description)
    return {
        "title": Path(key).stem, "artist": None, "key": parsed.key, "bpm": parsed.bpm, "genre": parsed.genre,
        "moods": parsed.moods, "keywords": parsed.instruments + parsed.moods, "description": description,
        "name": Path(key).stem, "instrument": ", ".join(parsed.instruments) or None,
        "sample_rate": sample_rate, "duration": duration,
    }


def decode(path: Path, max_seconds: float | None = None) -> tuple[np.ndarray, int, float | None]:
    """Decode the start of an audio file to float32 (channels, samples): soundfile first, PyAV otherwise.

    Args:
        path: the file.
        max_seconds: decode at most this much from the start (None: all). Memory then stays bounded by the
            window, whatever the file's length (a 3-hour file costs what a 10-s one does).
    Returns:
        (audio, sample rate, the file's total length in seconds when its header tells it, else None).
    """
    try:
        with sf.SoundFile(str(path)) as f:
            sr = f.samplerate
            n = -1 if max_seconds is None else int(math.ceil(max_seconds * sr))
            wav = f.read(n, dtype="float32", always_2d=True)
            return wav.T, sr, (f.frames / sr if f.frames > 0 else None)
    except Exception:  # noqa: BLE001 - fall back to FFmpeg through PyAV for anything libsndfile refuses
        from audiocraft.data.audio import audio_info, audio_read

        # audio_read streams PyAV frames and stops once `duration` is decoded
        wav_t, sr = audio_read(path, duration=-1 if max_seconds is None else max_seconds)
        try:
            total = float(audio_info(path).duration) or None
        except Exception:  # noqa: BLE001 - the length is only used for the "trimmed" note
            total = None
        return wav_t.numpy(), sr, total


def _read_sidecar(side: Path) -> dict | None:
    import json

    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _complete(flac: Path, side: Path, sample_rate: int, clip_seconds: float) -> tuple[float, dict] | None:
    """(duration, sidecar) of a previous output that passes the cheap check, else None (then it is redone).

    The check reads the FLAC header (rate, channels, frame count) and decodes the last block: a truncated
    FLAC still announces its full length, but its tail does not decode.
    """
    if not (flac.exists() and side.exists()):
        return None
    data = _read_sidecar(side)
    if data is None:
        return None
    try:
        info = check_audio(flac, sample_rate=sample_rate, channels=1, container="FLAC",
                           frames=int(round(clip_seconds * sample_rate)), deep=False)
    except AudioCheckError:
        return None
    return info["frames"] / info["sample_rate"], data


def process_one(item: Item, flac: Path, sidecar_path: Path, sample_rate: int, clip_seconds: float) -> dict:
    """Decode, check, resample and write one clip.

    Returns:
        A manifest row (with `notes` on what was fixed), or {"error": reason}.
    """
    if not item.description or not item.description.strip():
        return {"error": "empty description"}
    done = _complete(flac, sidecar_path, sample_rate, clip_seconds)
    if done is not None:
        duration, old = done
        notes = list(old.get(NOTES_FIELD) or [])
        if old.get("description") != item.description:  # the JSON changed since: the audio is still right
            write_json(sidecar_path, {**sidecar(item.key, item.description, sample_rate, duration),
                                      NOTES_FIELD: notes})
            return _row(item, flac, duration, sample_rate, resumed=True,
                        notes=notes + ["sidecar updated: the description changed in the JSON"])
        return _row(item, flac, duration, sample_rate, resumed=True, notes=notes)
    redo = flac.exists()
    if not item.source.exists():
        return {"error": f"audio file not found: {item.source}"}
    if item.source.stat().st_size == 0:
        return {"error": "empty file (0 bytes)"}
    # only the window that is kept (plus what tells "trimmed" from "padded") is decoded
    window = clip_seconds + MAX_PAD_SECONDS + 0.1
    try:
        wav, sr, total = decode(item.source, window)
    except Exception as exc:  # noqa: BLE001
        return {"error": f"cannot decode ({type(exc).__name__}: {str(exc)[:120]})"}
    if wav.size == 0:
        return {"error": "decodes to no samples"}
    if not np.isfinite(wav).all():
        return {"error": "contains NaN or Inf samples"}
    notes = []
    if redo:
        notes.append("previous output was incomplete or invalid: redone")
    if wav.shape[0] > 1:
        notes.append(f"{wav.shape[0]} channels downmixed to mono")
    # float64: averaging channels near the float32 limit (+-3e38) must not overflow to inf
    mono = wav.mean(axis=0, dtype=np.float64)
    seconds = mono.shape[-1] / sr
    if seconds < clip_seconds - MAX_PAD_SECONDS:
        return {"error": f"too short: {seconds:.2f}s < {clip_seconds - MAX_PAD_SECONDS:.2f}s "
                         "(truncated file? training on it would mean training on padding)"}
    first_peak = float(np.abs(mono).max())
    if first_peak > 1.0:  # scale before resampling: soxr works in float32, where +-3e38 overflows
        notes.append(f"peak {first_peak:.3g} rescaled to 1.0")
        mono = mono / first_peak
    if sr != sample_rate:
        import soxr

        notes.append(f"resampled {sr} -> {sample_rate} Hz")
        mono = soxr.resample(mono, sr, sample_rate, quality="HQ")
    target = int(round(clip_seconds * sample_rate))
    full = total if total is not None else seconds
    if full > clip_seconds + MAX_PAD_SECONDS:
        notes.append(f"trimmed {full:.2f}s -> {clip_seconds:g}s")
    mono = mono[:target]
    mono = np.pad(mono, (0, target - mono.shape[-1]))
    peak = float(np.abs(mono).max())
    if not math.isfinite(peak):
        return {"error": "samples overflow after resampling (values near the float limit)"}
    if peak < 1e-4:
        return {"error": "silent (peak below -80 dBFS)"}
    if peak > 1.0:  # resampling overshoot of a clip that was already near full scale
        notes.append(f"peak {peak:.3g} rescaled to 1.0")
        mono = mono / peak
    mono = mono.astype(np.float32)

    def verify(path: Path) -> None:  # re-read what was written before it replaces anything
        check_audio(path, sample_rate=sample_rate, channels=1, frames=target, container="FLAC", deep=True)

    with atomic_path(flac, verify=verify) as tmp:
        # fastest FLAC level: writing is the costliest step, and reading speed (what training pays) is the same
        sf.write(str(tmp), mono, sample_rate, format="FLAC", subtype="PCM_16", compression_level=0.0)
    duration = target / sample_rate  # verified on the written file above, never assumed
    write_json(sidecar_path, {**sidecar(item.key, item.description, sample_rate, duration), NOTES_FIELD: notes})
    return _row(item, flac, duration, sample_rate, resumed=False, notes=notes)


def _row(item: Item, flac: Path, duration: float, sample_rate: int, resumed: bool, notes: list[str]) -> dict:
    return {"path": str(flac), "duration": duration, "sample_rate": sample_rate, "amplitude": None,
            "weight": None, "info_path": None, "key": item.key, "resumed": resumed, "notes": notes}


def _work(args: tuple) -> tuple[str, dict]:
    item, flac, side, sr, clip = args
    try:
        return item.key, process_one(item, flac, side, sr, clip)
    except Exception as exc:  # noqa: BLE001 - one item's failure is that item's reason, never the run's end
        return item.key, {"error": f"failed: {type(exc).__name__}: {str(exc)[:200]}"}


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
    # workers are killed with this process (kill -9 included): none is left blocked on its pipe
    with ProcessPoolExecutor(workers, initializer=pool_initializer, initargs=(os.getpid(),)) as pool:
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

    check_dataset_name(name)
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"--valid-fraction {valid_fraction}: must be in [0, 1)")
    if not clip_seconds > 0 or not math.isfinite(clip_seconds):
        raise ValueError(f"--clip-seconds {clip_seconds}: must be a positive number of seconds")
    if sample_rate <= 0:
        raise ValueError(f"--sample-rate {sample_rate}: must be positive")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers {workers}: must be at least 1")
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
    valid_keys = []
    sources: dict[str, Path] = {}
    for key, desc in descriptions.items():
        if key in errors:
            continue
        if not isinstance(desc, str):
            errors[key] = f"description is {type(desc).__name__}, expected a string"
            continue
        bad = unicode_problem(desc)
        if bad:
            errors[key] = f"description is {bad}: fix the text in the JSON"
            continue
        try:
            sources[key] = safe_child(audio_dir, key)  # resolved: a symlink out of the folder is refused
        except ValueError as exc:
            errors[key] = str(exc)
            continue
        valid_keys.append(key)
    outputs, name_notes = output_stems(valid_keys)
    for key in valid_keys:
        if outputs[key] is None:
            errors[key] = name_notes[key]
            continue
        try:  # refused up front, before any decoding: names the file system cannot store
            flac = check_output_name(out_audio, outputs[key] + ".flac")
            side = check_output_name(out_audio, outputs[key] + ".json")
        except ValueError as exc:
            errors[key] = str(exc)
            continue
        jobs.append((Item(key, descriptions[key], sources[key]), flac, side, sample_rate, clip_seconds))
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
            if key in name_notes:
                row["notes"] = [name_notes[key], *row["notes"]]
            rows.append(row)
    splits = split_rows(rows, valid_fraction, seed)
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
        "splits": {k: len(v) for k, v in splits.items()}, "min_valid": min_valid_clips(len(rows), valid_fraction),
        "manifests": str(out_manifests),
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


def check_dataset_name(name: str) -> str:
    """Refuse dataset names that are not a plain folder name (`../x`, `a/b`, empty...).

    Args:
        name: the `--name` value.
    Raises:
        ValueError: naming the option and the allowed characters.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
        raise ValueError(f"--name {name!r}: use up to 100 letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit (it becomes a folder name)")
    return name


def output_stems(keys: tp.Sequence[str]) -> tuple[dict[str, str | None], dict[str, str]]:
    """Output stem per id: its stem (`a.mp3` -> `a`), or the whole id when two ids share a stem.

    `a.mp3` and `a.wav` in one JSON would both become `a.flac`, one description silently lost; they become
    `a.mp3.flac` and `a.wav.flac` instead. An id whose name still collides is refused.

    Args:
        keys: the ids.
    Returns:
        ({id: stem or None when refused}, {id: note or refusal reason}).
    """
    by_stem: dict[str, list[str]] = {}
    for key in keys:
        by_stem.setdefault(Path(key).stem, []).append(key)
    stems: dict[str, str | None] = {}
    notes: dict[str, str] = {}
    taken: dict[str, str] = {}
    for key in sorted(keys):
        group = by_stem[Path(key).stem]
        stem = Path(key).stem if len(group) == 1 else key
        if stem in taken:
            stems[key] = None
            notes[key] = f"output name {stem}.flac is already used by id {taken[stem]!r}: rename one of them"
            continue
        taken[stem] = key
        stems[key] = stem
        if len(group) > 1:
            others = ", ".join(repr(k) for k in group if k != key)
            notes[key] = f"written as {stem}.flac ({others} has the same stem)"
    return stems, notes


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
