"""Submission ZIP: written atomically with flat entries, and validated against the test JSON."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from .data.zalo_json import load_descriptions
from .fileio import atomic_path

DURATION_TOLERANCE = 0.1  # seconds: MP3 frames (1152 samples) and encoder padding
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # earliest date ZIP stores


def write_zip(out_dir: str | Path, json_path: str | Path, zip_path: str | Path) -> Path:
    """Zip the MP3 of every id of `json_path` from `out_dir` (flat names, stored: MP3 is compressed).

    Entries are sorted by id with a fixed timestamp, so the ZIP's bytes depend only on the clips.

    Args:
        out_dir: folder with one MP3 per id.
        json_path: the test descriptions.
        zip_path: the ZIP to write (atomically).

    Raises:
        FileNotFoundError: listing the ids whose file is missing.
    """
    ids = sorted(load_descriptions(json_path))
    missing = [i for i in ids if not (Path(out_dir) / i).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} ids have no file in {out_dir} (first: {missing[:3]}): "
                                "run `zalo-music generate` again to finish them")
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for i in ids:
                # a fixed timestamp: the same clips give the same ZIP bytes, also after a resumed run
                info = zipfile.ZipInfo(i, date_time=ZIP_DATE)
                info.external_attr = 0o644 << 16
                zf.writestr(info, (Path(out_dir) / i).read_bytes())
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
             sample_rate: int | None = None) -> Report:
    """Check a submission ZIP against its test JSON.

    Args:
        zip_path: the ZIP.
        json_path: the test descriptions; every id must be in the ZIP exactly once, nothing else.
        duration: expected clip length in seconds (+-0.1 s).
        sample_rate: expected rate, or None for any.
    """
    expected = set(load_descriptions(json_path))
    report = Report()
    with zipfile.ZipFile(zip_path) as zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                report.add(name, "duplicate entry")
            seen.add(name)
            if "/" in name or "\\" in name:
                report.add(name, "entry is inside a folder: entries must be flat")
            if name not in expected:
                report.add(name, "not an id of the test JSON")
                continue
            report.checked += 1
            try:
                audio, sr = sf.read(io.BytesIO(zf.read(name)), dtype="float32", always_2d=True)
            except Exception as exc:  # noqa: BLE001
                report.add(name, f"does not decode ({type(exc).__name__})")
                continue
            seconds = audio.shape[0] / sr
            if abs(seconds - duration) > DURATION_TOLERANCE:
                report.add(name, f"{seconds:.3f}s, expected {duration}s +-{DURATION_TOLERANCE}")
            if sample_rate and sr != sample_rate:
                report.add(name, f"sample rate {sr}, expected {sample_rate}")
            if not np.isfinite(audio).all():
                report.add(name, "NaN or Inf samples")
                continue
            peak = float(np.abs(audio).max()) if audio.size else 0.0
            if peak < 1e-3:
                report.add(name, "silent (peak below -60 dBFS)")
            if np.mean(np.abs(audio) >= 0.999) > 1e-3:
                report.add(name, "clipping (>0.1% of samples at full scale)")
        for name in sorted(expected - seen):
            report.add(name, "missing from the ZIP")
    return report
