"""Submission ZIP: written atomically with flat entries, and validated against the test JSON."""

from __future__ import annotations

import io
import typing as tp
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from .data.zalo_json import check_test_item, load_descriptions
from .fileio import atomic_path

DURATION_TOLERANCE = 0.1  # seconds: MP3 frames (1152 samples) and encoder padding
#: Largest entry read from a submission ZIP: a 10-s MP3 is ~0.2-0.5 MB; anything bigger is not a clip, and
#: reading it whole (a zip bomb) would cost its full size in memory.
MAX_ENTRY_BYTES = 8_000_000
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # earliest date ZIP stores


def write_zip(out_dir: str | Path, json_path: str | Path, zip_path: str | Path,
              skip: tp.Collection[str] = ()) -> Path:
    """Zip the MP3 of every id of `json_path` from `out_dir` (flat names, stored: MP3 is compressed).

    Entries are sorted by id with a fixed timestamp, so the ZIP's bytes depend only on the clips. The ZIP is
    re-read (entry names, CRCs) before its atomic rename.

    Args:
        out_dir: folder with one MP3 per id.
        json_path: the test descriptions.
        zip_path: the ZIP to write (atomically).
        skip: ids left out on purpose (`generate --zip-partial`: ids that were refused).

    Raises:
        ValueError: listing the ids that generate refuses (an id such as `../x.mp3` would read, and name a ZIP
            entry, outside `out_dir`).
        FileNotFoundError: listing the ids whose file is missing.
    """
    descriptions = load_descriptions(json_path)
    ids = sorted(set(descriptions) - set(skip))
    files, refused = {}, {}
    for i in ids:
        try:  # generate's own check of an id: the ZIP holds exactly what generate could have written
            files[i] = check_test_item(out_dir, i, descriptions[i])
        except ValueError as exc:
            refused[i] = str(exc)
    if refused:
        raise ValueError(f"{json_path}: {len(refused)} ids cannot be in a submission (first: "
                         f"{sorted(refused.items())[:3]}): fix them in the JSON, or leave them out "
                         "(`generate --zip-partial`)")
    missing = [i for i in ids if not files[i].is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} ids have no file in {out_dir} (first: {missing[:3]}): "
                                "run `zalo-music generate` again to finish them")

    def verify(tmp: Path) -> None:
        try:
            with zipfile.ZipFile(tmp) as zf:
                bad = zf.testzip()
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise OSError(f"{zip_path}: the ZIP written does not read back ({exc}); is the disk full?") from exc
        if bad is not None or names != ids:
            raise OSError(f"{zip_path}: the ZIP written does not read back (entry {bad!r}); is the disk full?")

    with atomic_path(zip_path, verify=verify) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for i in ids:
                # a fixed timestamp: the same clips give the same ZIP bytes, also after a resumed run
                info = zipfile.ZipInfo(i, date_time=ZIP_DATE)
                info.external_attr = 0o644 << 16
                zf.writestr(info, files[i].read_bytes())
    return Path(zip_path)


@dataclass
class Report:
    """Validation result: problems per entry, plus totals."""

    problems: dict[str, list[str]] = field(default_factory=dict)
    checked: int = 0

    def add(self, name: str, problem: str) -> None:
        self.problems.setdefault(name, []).append(problem)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate(zip_path: str | Path, json_path: str | Path, duration: float = 10.0,
             sample_rate: int | None = None, channels: int | None = 1) -> Report:
    """Check a submission ZIP against its test JSON.

    Memory stays bounded whatever the ZIP holds: an entry is read only up to `MAX_ENTRY_BYTES` (a larger one,
    whatever its header claims, is refused undecoded), an entry whose header is already wrong is not decoded,
    and the others are decoded `CHECK_BLOCK_SAMPLES` samples at a time.

    Args:
        zip_path: the ZIP.
        json_path: the test descriptions; every id must be in the ZIP exactly once, nothing else.
        duration: expected clip length in seconds (+-0.1 s).
        sample_rate: expected rate, or None for any.
        channels: expected channel count (1: mono), or None for any.
    """
    expected = set(load_descriptions(json_path))
    report = Report()
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        report.add(Path(zip_path).name, f"not a readable ZIP file ({exc}): rebuild it (generate --zip)")
        return report
    with zf:
        seen: set[str] = set()
        for info in zf.infolist():
            name = info.filename
            if info.is_dir():
                continue
            if name in seen:
                report.add(name, "duplicate entry")
            seen.add(name)
            if "/" in name or "\\" in name:
                report.add(name, "entry is inside a folder: entries must be flat")
            if name not in expected:
                report.add(name, "not an id of the test JSON")
                continue
            report.checked += 1
            if info.file_size > MAX_ENTRY_BYTES:
                report.add(name, f"{info.file_size / 1e6:.1f} MB uncompressed, over the {MAX_ENTRY_BYTES / 1e6:.0f} "
                                 "MB a 10-s MP3 could need: not decoded")
                continue
            try:
                with zf.open(info) as f:
                    data = f.read(MAX_ENTRY_BYTES + 1)  # the header may lie about the size: never trust it
            except Exception as exc:  # noqa: BLE001 - corrupt entry (CRC, bad compression, encrypted)
                report.add(name, f"cannot be read from the ZIP ({type(exc).__name__}: {str(exc)[:80]})")
                continue
            if len(data) > MAX_ENTRY_BYTES:
                report.add(name, f"over {MAX_ENTRY_BYTES / 1e6:.0f} MB uncompressed: not decoded")
                continue
            _check_clip(report, name, data, duration, sample_rate, channels)
        for name in sorted(expected - seen):
            report.add(name, "missing from the ZIP")
    return report


#: Samples (all channels together) decoded at a time: the check's memory, whatever a header declares (4 MB).
CHECK_BLOCK_SAMPLES = 1 << 20


def _check_clip(report: Report, name: str, data: bytes, duration: float, sample_rate: int | None,
                channels: int | None) -> None:
    """Check one entry; memory is `CHECK_BLOCK_SAMPLES` float32 samples whatever its header declares.

    The header is judged first (container, channels, rate, announced length): an entry already wrong there is
    reported without decoding it, since a hostile header can declare 255 channels at 96 kHz. Otherwise it is
    decoded in blocks of at most `CHECK_BLOCK_SAMPLES` samples, keeping only running statistics.
    """
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - libsndfile raises its own error types
        report.add(name, f"does not decode ({type(exc).__name__})")
        return
    with f:
        fmt, sr, ch = f.format, f.samplerate, f.channels
        wrong = []
        if fmt != "MP3":
            wrong.append(f"is {fmt} audio named .mp3: the submission needs real MP3 files")
        if channels and ch != channels:
            wrong.append(f"{ch} channels, expected {channels} ({'mono' if channels == 1 else 'multi-channel'})")
        if sample_rate and sr != sample_rate:
            wrong.append(f"sample rate {sr}, expected {sample_rate}")
        if wrong:
            for problem in wrong:
                report.add(name, problem)
            if f.frames > 0 and abs(f.frames / sr - duration) > DURATION_TOLERANCE:
                report.add(name, f"{f.frames / sr:.3f}s (as its header says), expected {duration}s "
                                 f"+-{DURATION_TOLERANCE}")
            return
        block = max(1, CHECK_BLOCK_SAMPLES // max(ch, 1))
        frames, peak, at_full_scale, finite = 0, 0.0, 0, True
        try:
            while True:
                chunk = f.read(block, dtype="float32", always_2d=True)
                if not len(chunk):
                    break
                frames += len(chunk)
                if not finite:
                    continue  # still counted: the real length is reported
                if not np.isfinite(chunk).all():
                    finite = False
                    continue
                mag = np.abs(chunk, out=chunk)
                peak = max(peak, float(mag.max()))
                at_full_scale += int(np.count_nonzero(mag >= 0.999))
        except Exception as exc:  # noqa: BLE001
            report.add(name, f"does not decode ({type(exc).__name__})")
            return
    seconds = frames / sr
    if abs(seconds - duration) > DURATION_TOLERANCE:
        report.add(name, f"{seconds:.3f}s, expected {duration}s +-{DURATION_TOLERANCE}")
    if not finite:
        report.add(name, "NaN or Inf samples")
        return
    if peak < 1e-3:
        report.add(name, "silent (peak below -60 dBFS)")
    if frames and at_full_scale / (frames * ch) > 1e-3:
        report.add(name, "clipping (>0.1% of samples at full scale)")
