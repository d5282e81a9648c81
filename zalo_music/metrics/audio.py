"""Audio the way CLAP sees it: 48 kHz mono, one deterministic 10-s window per clip.

laion-clap's own `get_audio_embedding_from_*` crops clips longer than 10 s at a *random* offset
(`data_truncating='rand_trunc'`), which makes scores of longer clips change from run to run. We hand it
windows of exactly 480,000 samples instead, so its truncation never triggers:

- longer clips: the first 10 s (the Zalo clips and our generations start at the musical start);
- shorter clips: repeated end to end and cut at 10 s, as laion-clap's own `repeatpad` filling does;
- empty or all-silent clips: zeros; NaN/inf samples: replaced by 0 (reported, never propagated).
"""

from __future__ import annotations

import dataclasses
import os
import typing as tp

import numpy as np
import torch

CLAP_SAMPLE_RATE = 48_000
WINDOW_SECONDS = 10.0
WINDOW = int(CLAP_SAMPLE_RATE * WINDOW_SECONDS)


@dataclasses.dataclass
class WindowInfo:
    """What `clap_window` had to do to one clip (reported per item by the score command)."""

    duration: float
    nonfinite: int = 0
    silent: bool = False
    padded: bool = False
    cropped: bool = False

    def issues(self) -> list[str]:
        """Short human-readable flags, empty when the clip needed nothing."""
        out = []
        if self.nonfinite:
            out.append(f"{self.nonfinite} NaN/inf samples zeroed")
        if self.silent:
            out.append("silent")
        if self.padded:
            out.append(f"short ({self.duration:.2f}s, repeat-padded)")
        if self.cropped:
            out.append(f"long ({self.duration:.2f}s, first {WINDOW_SECONDS:g}s used)")
        return out


def to_mono_48k(wav: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
    """Downmix to mono and resample to 48 kHz.

    Args:
        wav: `[T]`, `[C, T]` or `[1, C, T]` samples (finite: see `clap_window` for NaN handling).
        sample_rate: rate of `wav`.
    Returns:
        A float32 `[T']` tensor at 48 kHz.
    """
    x = _mono(wav)
    if sample_rate != CLAP_SAMPLE_RATE and x.numel() > 0:
        import julius  # audiocraft's resampler: deterministic sinc filter, same on every run

        x = julius.resample_frac(x, int(sample_rate), CLAP_SAMPLE_RATE)
    return x


def _mono(wav: torch.Tensor | np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(wav, dtype=torch.float32)
    while x.dim() > 2:
        x = x[0]
    return x.mean(dim=0) if x.dim() == 2 else x


def clap_window(wav: torch.Tensor | np.ndarray, sample_rate: int) -> tuple[np.ndarray, WindowInfo]:
    """One deterministic 10-s, 48 kHz mono window of a clip, as fed to CLAP.

    Args:
        wav: the clip (`[T]` or `[C, T]`), any sample rate.
        sample_rate: rate of `wav`.
    Returns:
        `(window, info)`: a float32 array of exactly `WINDOW` samples and what was done to get it.
    """
    x = _mono(wav)
    info = WindowInfo(duration=x.numel() / float(sample_rate))
    # Zero NaN/inf *before* resampling: the resampling filter would smear each one over its neighbours.
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        info.nonfinite = int(bad.sum())
        x = torch.where(bad, torch.zeros_like(x), x)
    x = to_mono_48k(x, sample_rate)
    if x.numel() == 0 or float(x.abs().max()) < 1e-8:
        info.silent = True
        info.padded = x.numel() < WINDOW
        return np.zeros(WINDOW, dtype=np.float32), info
    if x.numel() > WINDOW:
        info.cropped = True
        x = x[:WINDOW]
    elif x.numel() < WINDOW:
        info.padded = True
        x = x.repeat(WINDOW // x.numel() + 1)[:WINDOW]
    return x.clamp(-1, 1).numpy().astype(np.float32, copy=False), info


def read_clip(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Decode an audio file (wav, flac, mp3, ...) with audiocraft's reader.

    Args:
        path: the file.
    Returns:
        `(wav [C, T] float32, sample_rate)`.
    """
    from audiocraft.data.audio import audio_read

    wav, sr = audio_read(str(path))
    return wav, int(sr)


def load_windows(paths: tp.Sequence[str | os.PathLike]) -> tuple[np.ndarray, list[WindowInfo]]:
    """Read and window many files.

    Args:
        paths: audio files.
    Returns:
        `([N, WINDOW] float32, infos)`.
    """
    windows, infos = [], []
    for p in paths:
        w, info = clap_window(*read_clip(p))
        windows.append(w)
        infos.append(info)
    if not windows:
        return np.zeros((0, WINDOW), dtype=np.float32), []
    return np.stack(windows), infos
