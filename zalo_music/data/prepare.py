"""`zalo-music prepare`: a Zalo-format dataset -> resampled FLAC windows + sidecars + audiocraft manifests.

Input: a folder of recordings (any length) and a JSON `{"<id>.mp3": "<description>"}`. Output, for `--name NAME`:
  <data_dir>/NAME/audio/<id>.flac + <id>.json     a recording that gives one window (a 10-s Zalo clip)
  <data_dir>/NAME/audio/<id>.segments/NNNNN.flac  a longer one: consecutive windows (`segment.Windowing`),
                                   + NNNNN.json   each with its recording's description and offset,
                                   + index.json   written last
  <manifest_dir>/NAME/{train,valid}/data.jsonl.gz  one row per window (absolute paths; audiocraft reads the
                                                   sidecar beside the audio)
  <manifest_dir>/NAME/report.json                 (counts, seconds in and dropped by reason, one reason per
                                                   skipped recording, notes on fixed ones)
  and, with --augment loop/concat, the 30-s datasets NAME-loop30 / NAME-concat30 built from the windows.
Bad items are reported and skipped, never fatal (an unexpected exception inside one item becomes that item's
reason); originals are never touched; recordings are decoded as a stream (memory does not grow with their
length); every file is re-read and checked before its atomic rename (a segmented recording's folder is renamed
into place whole); a rerun reuses a recording whose outputs pass a cheap check (header, frame count, decodable
tail) and were made from the same source size with the same windowing, redoes the others, and rewrites
sidecars whose description changed in the JSON. Two ids with the same stem (`a.mp3`, `a.wav`) get distinct
outputs (`a.mp3.flac`, `a.wav.flac`). The split is by description, so every window of a recording lands in the
same split; the validation split never holds fewer than `MIN_VALID_CLIPS` windows (or half, whichever is
smaller).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
import typing as tp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..fileio import (
    AUDIO_SUFFIXES,
    PARTIAL_SUFFIX,
    AudioCheckError,
    DiskFull,
    atomic_path,
    check_audio,
    check_output_name,
    is_temp,
    remove_stale_temps,
    safe_child,
    write_json,
)
from ..procutil import pool_initializer
from . import augment
from .manifest import write_manifest
from .segment import SILENCE_PEAK, Segmenter, TooShort, Window, Windowing, open_stream
from .vocab import parse_description
from .zalo_json import description_problem, load_descriptions, read_zalo_json

__all__ = ["prepare", "load_descriptions", "split_of", "normalize_description", "sidecar", "process_one"]

#: The validation split holds at least this many clips (whole description groups), or half the clips when there
#: are fewer than twice as many: one or two clips make the valid loss pure noise.
MIN_VALID_CLIPS = 8
#: Sidecar field (ignored by audiocraft's MusicInfo) that remembers what prepare fixed, for reruns' reports.
NOTES_FIELD = "zalo_notes"
#: Sidecar field (one-window recordings) holding how the output was made: a rerun reuses it only when equal.
PREPARE_FIELD = "zalo_prepare"
#: Written last into a segmented recording's folder: the same record, plus its windows.
INDEX = "index.json"


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


def _read_sidecar(side: Path) -> dict | None:
    import json

    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Outputs:
    """Where one recording's outputs go: `<stem>.flac` + `<stem>.json` when it gives one window, else the
    folder `<stem>.segments/` of `NNNNN.flac` + `NNNNN.json` windows with an `index.json` written last."""

    audio_dir: Path
    stem: str

    @property
    def flac(self) -> Path:
        return self.audio_dir / f"{self.stem}.flac"

    @property
    def side(self) -> Path:
        return self.audio_dir / f"{self.stem}.json"

    @property
    def segments(self) -> Path:
        return self.audio_dir / f"{self.stem}.segments"

    @property
    def partial(self) -> Path:
        return self.audio_dir / f"{self.stem}.segments{PARTIAL_SUFFIX}"


def _recipe(item: Item, windowing: Windowing) -> dict:
    """What an existing output must have been made from to be reused (else the recording is redone)."""
    return {"windowing": windowing.fingerprint(), "source_bytes": item.source.stat().st_size}


def _cheap_ok(flac: Path, windowing: Windowing) -> bool:
    try:  # header (rate, channels, length) and the last block: a truncated FLAC's tail does not decode
        check_audio(flac, sample_rate=windowing.sample_rate, channels=1, container="FLAC",
                    frames=windowing.clip, deep=False)
    except AudioCheckError:
        return False
    return True


def _resume(item: Item, out: Outputs, windowing: Windowing) -> dict | None:
    """The result of a previous run on this recording when its outputs are complete and made the same way."""
    if not item.source.exists():
        return None
    recipe = _recipe(item, windowing)
    side = _read_sidecar(out.side) if out.side.exists() else None
    if side is not None and (side.get(PREPARE_FIELD) or {}).get("recipe") == recipe and _cheap_ok(out.flac, windowing):
        record = side[PREPARE_FIELD]
        windows = [{"flac": out.flac, "side": out.side, "offset": 0.0, "sidecar": side}]
    else:
        record = _read_sidecar(out.segments / INDEX) if (out.segments / INDEX).exists() else None
        if not record or record.get("recipe") != recipe:
            return None
        windows = []
        for w in record.get("windows", []):
            flac, side_path = out.segments / f"{w['file']}.flac", out.segments / f"{w['file']}.json"
            data = _read_sidecar(side_path) if side_path.exists() else None
            if data is None or not _cheap_ok(flac, windowing):
                return None
            windows.append({"flac": flac, "side": side_path, "offset": w["offset"], "sidecar": data})
        if not windows:
            return None
    notes = list(record.get("notes") or [])
    if windows[0]["sidecar"].get("description") != item.description:  # the audio is still right
        for w in windows:
            write_json(w["side"], {**w["sidecar"], **_window_sidecar(item, w["sidecar"]["name"],
                                                                        windowing, w["offset"], notes)})
        notes = notes + ["sidecar updated: the description changed in the JSON"]
    return {"windows": windows, "record": record, "notes": notes, "resumed": True}


def _window_sidecar(item: Item, name: str, windowing: Windowing, offset: float, notes: list[str]) -> dict:
    side = sidecar(item.key, item.description, windowing.sample_rate, windowing.clip_seconds)
    side.update({"title": name, "name": name, "recording": item.key, "offset": round(offset, 6),
                 NOTES_FIELD: notes})
    return side


def _write_window(flac: Path, audio: np.ndarray, windowing: Windowing) -> None:
    def verify(path: Path) -> None:  # re-read what was written before it replaces anything
        check_audio(path, sample_rate=windowing.sample_rate, channels=1, frames=windowing.clip,
                    container="FLAC", deep=True)

    with atomic_path(flac, verify=verify) as tmp:
        # fastest FLAC level: writing is the costliest step, and reading speed (what training pays) is the same
        sf.write(str(tmp), audio.astype(np.float32), windowing.sample_rate, format="FLAC", subtype="PCM_16",
                 compression_level=0.0)


def process_one(item: Item, out: Outputs, windowing: Windowing) -> dict:
    """Decode one recording as a stream, cut it into windows, check and write each.

    Args:
        item: the recording.
        out: where its outputs go.
        windowing: clip length, hop, tail policy and output rate.
    Returns:
        {"rows": one manifest row per window, "notes", "seconds" (recording length), "dropped" ({reason:
        seconds}), "resumed"}, or {"error": reason}.
    """
    if not item.description or not item.description.strip():
        return {"error": "empty description"}
    done = _resume(item, out, windowing)
    if done is not None:
        return _result(item, windowing, **done)
    redo = out.flac.exists() or out.segments.exists()
    if not item.source.exists():
        return {"error": f"audio file not found: {item.source}"}
    if not item.source.is_file():  # a FIFO would block the decoder, a folder or device is no recording
        import stat

        mode = item.source.stat().st_mode
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a device")
        return {"error": f"not a regular file: {item.source.name} is {kind}"}
    if item.source.stat().st_size == 0:
        return {"error": "empty file (0 bytes)"}
    try:
        stream = open_stream(item.source, windowing.sample_rate)
    except Exception as exc:  # noqa: BLE001
        return {"error": f"cannot decode ({type(exc).__name__}: {str(exc)[:120]})"}
    notes = ["previous output was incomplete, stale or invalid: redone"] if redo else []
    if stream.channels > 1:
        notes.append(f"{stream.channels} channels downmixed to mono")
    if stream.rate != windowing.sample_rate:
        notes.append(f"resampled {stream.rate} -> {windowing.sample_rate} Hz")
    seg = Segmenter(windowing)
    kept: list[Window] = []  # the first window stays in memory until a second one says "segments"
    written: list[dict] = []
    covered, covered_end, rescaled, top_peak = 0, 0, 0, 0.0
    shutil.rmtree(out.partial, ignore_errors=True)  # a killed run's leftovers

    def keep(win: Window) -> None:
        nonlocal covered, covered_end, rescaled, top_peak
        peak = max(float(win.audio.max()), -float(win.audio.min()))  # no |x| temporary
        if not math.isfinite(peak):
            raise ValueError("samples overflow after resampling (values near the float limit)")
        if peak < SILENCE_PEAK:
            return
        if peak > 1.0:  # loud masters, float files above full scale, resampling overshoot
            rescaled, top_peak = rescaled + 1, max(top_peak, peak)
            win.audio = win.audio / peak
        end = win.start + win.real
        covered += max(0, end - max(win.start, covered_end))
        covered_end = max(covered_end, end)
        kept.append(win)
        if len(kept) == 2:
            check_output_name(out.audio_dir, out.partial.name)
            out.partial.mkdir(parents=True)
            written.append(_write_segment(out.partial, kept[0], windowing))
        if len(kept) >= 2:
            written.append(_write_segment(out.partial, win, windowing))
            kept[-2].audio = np.zeros(0)  # written: only the newest window is held

    try:
        for block in stream.blocks:
            for win in seg.feed(block):
                keep(win)
        for win in seg.finish():
            keep(win)
    except TooShort as exc:
        return {"error": str(exc)}
    except DiskFull:
        shutil.rmtree(out.partial, ignore_errors=True)
        raise  # every later recording would fail the same way: the run stops, named
    except Exception as exc:  # noqa: BLE001 - a decoder error part-way: the recording is refused whole
        shutil.rmtree(out.partial, ignore_errors=True)
        return {"error": f"cannot decode ({type(exc).__name__}: {str(exc)[:120]})"}
    except BaseException:  # interrupted: nothing half-written stays
        shutil.rmtree(out.partial, ignore_errors=True)
        raise
    if not kept:  # (no folder was started: that takes two windows)
        return {"error": "silent (peak below -80 dBFS)"}
    sr = windowing.sample_rate
    if rescaled:
        notes.append(f"peak {top_peak:.3g} rescaled to 1.0" if len(kept) == 1 else
                     f"{rescaled} windows rescaled to peak 1.0 (loudest {top_peak:.3g})")
    if kept[-1].real < windowing.clip:
        notes.append(f"last {kept[-1].real / sr:.2f}s padded to {windowing.clip_seconds:g}s")
    dropped = {}
    if seg.dropped_tail:
        dropped[seg.tail_reason] = seg.dropped_tail / sr
    silent = seg.total - covered - seg.dropped_tail
    if silent > 0:
        dropped["silent windows"] = silent / sr
    if len(kept) > 1:
        notes.append(f"{seg.total / sr:.2f}s cut into {len(kept)} windows of {windowing.clip_seconds:g}s "
                     f"(hop {windowing.hop / sr:g}s, --tail {windowing.tail})")
    if dropped:
        notes.append("dropped " + ", ".join(f"{v:.2f}s ({k})" for k, v in dropped.items()))
    record = {"recipe": _recipe(item, windowing), "seconds": seg.total / sr, "dropped": dropped, "notes": notes}
    if len(kept) == 1:
        win = kept[0]
        _write_window(out.flac, win.audio, windowing)
        side = {**_window_sidecar(item, Path(item.key).stem, windowing, win.start / sr, notes),
                PREPARE_FIELD: record}
        write_json(out.side, side)  # last: the sidecar's record marks the output complete
        shutil.rmtree(out.segments, ignore_errors=True)  # a previous, segmented version of this recording
        windows = [{"flac": out.flac, "side": out.side, "offset": win.start / sr, "sidecar": side}]
    else:
        for w in written:
            write_json(out.partial / f"{w['file']}.json",
                       _window_sidecar(item, f"{Path(item.key).stem}-{w['file']}", windowing, w["offset"], notes))
        write_json(out.partial / INDEX, {**record, "windows": [{"file": w["file"], "offset": w["offset"]}
                                                               for w in written]})
        old = out.audio_dir / f"{out.stem}.segments.replaced.partial"
        shutil.rmtree(old, ignore_errors=True)
        if out.segments.exists():
            out.segments.rename(old)
        out.partial.rename(out.segments)  # the commit: a folder rename is atomic
        shutil.rmtree(old, ignore_errors=True)
        for stale in (out.flac, out.side):  # a previous, single-window version of this recording
            stale.unlink(missing_ok=True)
        windows = [{"flac": out.segments / f"{w['file']}.flac", "side": out.segments / f"{w['file']}.json",
                    "offset": w["offset"], "sidecar": None} for w in written]
    return _result(item, windowing, windows=windows, record=record, notes=notes, resumed=False)


def _write_segment(folder: Path, win: Window, windowing: Windowing) -> dict:
    name = f"{win.index:05d}"
    _write_window(folder / f"{name}.flac", win.audio, windowing)
    return {"file": name, "offset": round(win.start / windowing.sample_rate, 6)}


def _result(item: Item, windowing: Windowing, windows: list[dict], record: dict, notes: list[str],
            resumed: bool) -> dict:
    many = len(windows) > 1
    rows = [{"path": str(w["flac"]), "duration": windowing.clip_seconds, "sample_rate": windowing.sample_rate,
             "amplitude": None, "weight": None, "info_path": None,
             "key": f"{item.key}#{Path(w['flac']).stem}" if many else item.key, "recording": item.key,
             "offset": w["offset"]} for w in windows]
    return {"rows": rows, "notes": notes, "seconds": record.get("seconds", 0.0),
            "dropped": record.get("dropped", {}), "resumed": resumed}


def _work(args: tuple) -> tuple[str, dict]:
    item, out, windowing = args
    try:
        return item.key, process_one(item, out, windowing)
    except DiskFull:
        raise
    except Exception as exc:  # noqa: BLE001 - one item's failure is that item's reason, never the run's end
        return item.key, {"error": f"failed: {type(exc).__name__}: {str(exc)[:200]}"}


#: Bytes a window may take beyond its 16-bit samples: FLAC framing (a verbatim frame at worst) and its sidecar.
WINDOW_OVERHEAD_BYTES = 8192


def _disk_need(exc: DiskFull, jobs: list, finished: int, rows: list[dict]) -> DiskFull:
    """`exc`, naming the room the jobs after the first `finished` need: their source bytes times the
    output/source byte ratio of the recordings this run holds (resumed ones included); with none yet, a bound
    from each recording's length (its header) and the 16-bit windows it gives."""
    def size(path: str | Path) -> int:
        try:
            return Path(path).stat().st_size
        except OSError:
            return 0

    source = {item.key: item.source for item, _, _ in jobs}
    out_bytes = sum(size(r["path"]) + size(Path(r["path"]).with_suffix(".json")) for r in rows)
    in_bytes = sum(size(source[key]) for key in {r["recording"] for r in rows})
    left = jobs[finished:]
    if out_bytes and in_bytes:
        each = out_bytes / in_bytes * sum(size(item.source) for item, _, _ in left) / len(left)
        return exc.with_need(len(left), "recordings", each)
    bounds = []
    for item, _, windowing in left:
        try:
            seconds = sf.info(str(item.source)).duration
        except Exception:  # noqa: BLE001 - a header libsndfile cannot read: left out of the mean
            continue
        hop_seconds = windowing.hop / windowing.sample_rate
        windows = 1 + max(0, math.ceil((seconds - windowing.clip_seconds) / hop_seconds))  # the tail included
        bounds.append(windows * (2 * windowing.clip + WINDOW_OVERHEAD_BYTES))
    if not bounds:
        return exc.with_need(len(left), "recordings", None)
    return exc.with_need(len(left), "recordings", sum(bounds) / len(bounds), bound="at most")


def _pool_map(fn: tp.Callable, jobs: list, workers: int, desc: str, quiet: bool, unit: str = "clip") -> tp.Iterator:
    """`fn` over `jobs` in `workers` processes, in order, with a progress bar; bounded look-ahead."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit=unit, disable=quiet)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield fn(job)
            bar.update()
        bar.close()
        return
    window = workers * 16  # in-flight futures: memory stays bounded whatever the dataset size
    # workers are killed with this process (kill -9 included): none is left blocked on its pipe
    pool = ProcessPoolExecutor(workers, initializer=pool_initializer, initargs=(os.getpid(),))
    try:
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
    finally:
        # interrupted (Ctrl-C, SIGTERM, a full disk): drop what is queued, let the items being written commit
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


def prepare(json_path: str | Path, audio_dir: str | Path, name: str, *, sample_rate: int = 32000,
            clip_seconds: float = 10.0, hop_seconds: float | None = None, tail: str = "overlap",
            valid_fraction: float = 0.1, seed: int = 0,
            augmentations: tp.Sequence[str] = ("none",), workers: int | None = None,
            data_dir: str | Path | None = None, manifest_dir: str | Path | None = None,
            quiet: bool = False) -> dict:
    """Prepare a Zalo-format dataset for audiocraft.

    Args:
        json_path: `{"<id>.mp3": "<description>"}`.
        audio_dir: folder holding the recordings named by the keys (any length).
        name: dataset name (`dset=zalo/prepared zalo.dataset=NAME`).
        sample_rate: output rate (the compression model's, 32000 for MusicGen).
        clip_seconds: window length: each recording becomes consecutive windows this long (one clip when it is
            this long, padded when it is shorter by at most 0.5 s).
        hop_seconds: start-to-start distance of the windows (None: `clip_seconds`, back to back).
        tail: the end of a recording that fills no whole window: `overlap`, `pad` or `drop` (see `segment`).
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
    windowing = Windowing(clip_seconds, hop_seconds, tail, sample_rate)  # checks each value, naming its option
    if workers is not None and workers < 1:
        raise ValueError(f"--workers {workers}: must be at least 1")
    unknown = set(augmentations) - set(augment.CHOICES)
    if unknown:
        raise ValueError(f"--augment {sorted(unknown)}: choose from {augment.CHOICES}")
    from ..fileio import exclusive_lock

    manifest_root = Path(manifest_dir or env.manifest_dir())
    # one run per dataset at a time: two would do all the work twice and "redo" each other's files
    with exclusive_lock(manifest_root / name / ".prepare.lock", f"dataset {name!r} ({manifest_root / name})"):
        start = time.time()
        descriptions, duplicates = read_zalo_json(json_path)
        audio_dir = Path(audio_dir)
        if not audio_dir.is_dir():
            raise FileNotFoundError(f"--audio-dir {audio_dir}: no such folder")
        data_root = Path(data_dir or env.data_dir())
        out_audio = data_root / name / "audio"
        out_manifests = manifest_root / name
        out_audio.mkdir(parents=True, exist_ok=True)
        # what a killed run (kill -9, a node lost) left: temporaries and uncommitted segment folders
        stale = remove_stale_temps(out_audio) + remove_stale_temps(out_manifests)
        for folder in out_audio.glob(f"*.segments*{PARTIAL_SUFFIX}"):
            shutil.rmtree(folder, ignore_errors=True)
            stale += 1
        errors: dict[str, str] = {}
        for key, n in duplicates.items():
            errors[key] = f"duplicate key ({n} times in the JSON): which description is right is ambiguous"
        jobs = []
        valid_keys = []
        sources: dict[str, Path] = {}
        for key, desc in descriptions.items():
            if key in errors:
                continue
            problem = description_problem(desc)
            if problem and problem != "empty description":  # empty ones are reported per item, as before
                errors[key] = problem
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
                for suffix in (".flac", ".json"):
                    check_output_name(out_audio, outputs[key] + suffix)
            except ValueError as exc:
                errors[key] = str(exc)
                continue
            jobs.append((Item(key, descriptions[key], sources[key]), Outputs(out_audio, outputs[key]), windowing))
        for f in sorted(audio_dir.iterdir()):
            if (f.is_file() and f.name not in descriptions and f.suffix.lower() in AUDIO_SUFFIXES
                    and not is_temp(f)):
                errors[f.name] = "audio file has no description in the JSON"
        workers = workers or os.cpu_count() or 1
        rows: list[dict] = []
        notes: list[dict] = []
        resumed, seconds_in = 0, 0.0
        dropped: dict[str, float] = {}
        finished = 0
        results = _pool_map(_work, jobs, workers, f"prepare {name}", quiet, unit="recording")
        while True:
            try:
                key, result = next(results)
            except StopIteration:
                break
            except DiskFull as exc:  # say how much room the rest of the run needs
                raise _disk_need(exc, jobs, finished, rows) from exc.__cause__
            finished += 1
            if "error" in result:
                errors[key] = result["error"]
                continue
            for row in result["rows"]:
                row["description"] = descriptions[key]
                rows.append(row)
            item_notes = ([name_notes[key]] if key in name_notes else []) + result["notes"]
            if item_notes:
                notes.append({"id": key, "note": "; ".join(item_notes)})
            resumed += result["resumed"]
            seconds_in += result["seconds"]
            for reason, secs in result["dropped"].items():
                dropped[reason] = dropped.get(reason, 0.0) + secs
        recordings = len({r["recording"] for r in rows})
        splits = split_rows(rows, valid_fraction, seed)
        for split, items in splits.items():
            write_manifest(out_manifests / split, items)
        augmented = {}
        for kind in augmentations:
            if kind != "none":
                augmented[f"{name}-{kind}{int(3 * clip_seconds)}"] = _augment(
                    splits, kind, name, clip_seconds, data_root, manifest_root, seed, workers, quiet)
        report = {
            "name": name, "json": str(json_path), "audio_dir": str(audio_dir), **windowing.fingerprint(),
            "total": len(descriptions), "prepared": recordings, "segments": len(rows), "resumed": resumed,
            "skipped": len(errors), "splits": {k: len(v) for k, v in splits.items()},
            "min_valid": min_valid_clips(len(rows), valid_fraction),
            "audio_seconds": {"recordings": round(seconds_in, 3), "windows": round(len(rows) * clip_seconds, 3),
                              "dropped": {k: round(v, 3) for k, v in sorted(dropped.items())}},
            "manifests": str(out_manifests),
            "audio": str(out_audio), "augmented": augmented, "seconds": round(time.time() - start, 2),
            "stale_temps_removed": stale,
            "errors": [{"id": k, "reason": v} for k, v in sorted(errors.items())],
            "notes": sorted(notes, key=lambda n: n["id"]),
        }
        write_json(out_manifests / "report.json", report)
        if not quiet:
            if stale:
                print(f"  removed {stale} temporary files or folders an interrupted run had left")
            print(summary_line(report))
        return report


def summary_line(report: dict) -> str:
    """The one line `prepare` ends with: recordings, windows, seconds in, dropped and why, splits, paths.

    Args:
        report: what `prepare` returns.
    """
    secs = report["audio_seconds"]
    lost = sum(secs["dropped"].values())
    why = f" ({', '.join(f'{v:.1f}s {k}' for k, v in secs['dropped'].items())})" if lost else ""
    extra = "".join(f", {k}: {v['train']}+{v['valid']}" for k, v in report["augmented"].items())
    return (f"prepared {report['prepared']}/{report['total']} recordings ({report['resumed']} already done, "
            f"{report['skipped']} skipped, {len(report['notes'])} with notes) in {report['seconds']}s: "
            f"{secs['recordings']:.1f}s of audio -> {report['segments']} clips of {report['clip_seconds']:g}s, "
            f"{lost:.1f}s dropped{why}; train {report['splits']['train']}, valid {report['splits']['valid']} clips"
            f"{extra} -> {report['manifests']} (report: {Path(report['manifests']) / 'report.json'})")


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
