"""Audio the way LAION-CLAP sees it: 48 kHz mono, one 10-s window per clip, prepared as laion-clap does.

laion-clap's `CLAP_Module.get_audio_embedding_from_filelist` loads a file with `librosa.load(f, sr=48000)`
(libsndfile decoding, channel mean, soxr "HQ" resampling to 48 kHz), quantises it to int16 and back, then
`get_audio_features(..., data_truncating='rand_trunc', data_filling='repeatpad')` makes it exactly 480,000
samples. We do the same steps with the same libraries (soundfile, soxr; the int16 round trip happens inside
`get_audio_embedding_from_data`), so a clip's embedding matches laion-clap's own, with one documented
difference:

- clips longer than 10 s: laion-clap crops at a *random* offset (scores would change from run to run); we
  take the first 10 s (laion's crop at offset 0). Only that window, plus `RESAMPLE_MARGIN_S` for the
  resampling filter, is decoded: a 3-hour file costs as much memory as an 11-s one.
- clips shorter than 10 s: laion's `repeatpad`: the clip repeated a whole number of times, then zeros.
- empty clips: zeros; NaN/inf samples: replaced by 0 before resampling (reported, never propagated; laion
  would pass them to the model).

Formats libsndfile cannot open (m4a, ...) are decoded with PyAV, streaming until the window is full.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing as tp

import numpy as np

if tp.TYPE_CHECKING:
    import torch

# torch is not imported here (only numpy, soundfile, soxr): reading a window costs ~50 MB, not torch's ~650 MB.
CLAP_SAMPLE_RATE = 48_000
WINDOW_SECONDS = 10.0
WINDOW = int(CLAP_SAMPLE_RATE * WINDOW_SECONDS)
#: Extra input read beyond 10 s for a long clip, so the resampling filter sees the same neighbourhood as when
#: the whole file is resampled (soxr HQ needs far less than this; 1 s keeps any rate safe).
RESAMPLE_MARGIN_S = 1.0
#: Version of this preparation recipe: part of the reference-statistics cache key. Bump on any change here.
PREP_VERSION = "prep-v2:sndfile+soxr_hq-mono-first10s-laion_repeatpad"


class ClipReadError(RuntimeError):
    """A clip that could not be decoded; the message names the file and the decoder's reason."""


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


def _mono(wav: torch.Tensor | np.ndarray) -> np.ndarray:
    """`[T]`, `[C, T]` or `[1, C, T]` -> float32 `[T]` (channel mean, as `librosa.to_mono`)."""
    if hasattr(wav, "detach"):  # a torch tensor
        wav = wav.detach().cpu().numpy()
    x = np.asarray(wav, dtype=np.float32)
    while x.ndim > 2:
        x = x[0]
    return x.mean(axis=0, dtype=np.float32) if x.ndim == 2 else x


def resample_48k(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Resample mono float32 audio to 48 kHz exactly as `librosa.resample(res_type='soxr_hq')` does.

    Args:
        x: `[T]` float32 samples.
        sample_rate: rate of `x`.
    Returns:
        float32 `[ceil(T * 48000 / sample_rate)]` samples (librosa's `fix=True` length).
    """
    if int(sample_rate) == CLAP_SAMPLE_RATE or x.size == 0:
        return np.asarray(x, dtype=np.float32)
    import soxr  # librosa's default resampler (res_type='soxr_hq')

    y = soxr.resample(x, int(sample_rate), CLAP_SAMPLE_RATE, quality="soxr_hq")
    n = int(math.ceil(x.size * CLAP_SAMPLE_RATE / float(sample_rate)))
    if y.size >= n:
        return np.asarray(y[:n], dtype=np.float32)
    return np.pad(y, (0, n - y.size)).astype(np.float32, copy=False)


def repeatpad(x: np.ndarray, length: int = WINDOW) -> np.ndarray:
    """laion-clap's `repeatpad` fill: whole repetitions of `x`, then zeros up to `length`.

    Args:
        x: `[T]` samples with `0 < T <= length`.
        length: target length.
    """
    n_repeat = length // x.size  # laion: int(max_len / len(audio_data))
    out = np.zeros(length, dtype=np.float32)
    out[: n_repeat * x.size] = np.tile(x, n_repeat)
    return out


def window_from_48k(x: np.ndarray, duration: float, nonfinite: int = 0) -> tuple[np.ndarray, WindowInfo]:
    """The 10-s window of mono 48 kHz audio: first 10 s of a long clip, `repeatpad` of a short one."""
    info = WindowInfo(duration=duration, nonfinite=nonfinite)
    if x.size == 0 or float(np.abs(x).max()) < 1e-8:
        # Below int16 resolution: laion's quantisation would make it all zeros anyway.
        info.silent = True
        info.padded = x.size < WINDOW
        return np.zeros(WINDOW, dtype=np.float32), info
    if x.size > WINDOW:
        info.cropped = True
        return np.ascontiguousarray(x[:WINDOW], dtype=np.float32), info
    if x.size < WINDOW:
        info.padded = True
        return repeatpad(x), info
    return np.asarray(x, dtype=np.float32), info


def clap_window(wav: torch.Tensor | np.ndarray, sample_rate: int) -> tuple[np.ndarray, WindowInfo]:
    """One deterministic 10-s, 48 kHz mono window of in-memory audio, as fed to CLAP.

    Args:
        wav: the clip (`[T]` or `[C, T]`), any sample rate.
        sample_rate: rate of `wav`.
    Returns:
        `(window, info)`: a float32 array of exactly `WINDOW` samples and what was done to get it.
    """
    x = _mono(wav)
    duration = x.size / float(sample_rate)
    # Only the first 10 s (+ filter margin) can reach the window: resample no more than that.
    keep = int(math.ceil(WINDOW_SECONDS * sample_rate)) + int(RESAMPLE_MARGIN_S * sample_rate)
    x, nonfinite = _zero_nonfinite(x[:keep])
    return window_from_48k(resample_48k(x, sample_rate), duration, nonfinite)


def _zero_nonfinite(x: np.ndarray) -> tuple[np.ndarray, int]:
    # Zero NaN/inf *before* resampling: the resampling filter would smear each one over its neighbours.
    bad = ~np.isfinite(x)
    count = int(bad.sum())
    if count:
        x = np.where(bad, np.float32(0), x).astype(np.float32, copy=False)
    return x, count


def read_head(path: str | os.PathLike, seconds: float) -> tuple[np.ndarray, int, float]:
    """Decode at most the first `seconds` of an audio file, downmixed to mono.

    libsndfile first (what `librosa.load` uses, so MP3/WAV/FLAC/OGG decode exactly as in laion-clap), PyAV
    (streaming) for what libsndfile cannot open.

    Args:
        path: the file.
        seconds: how much to decode from the start.
    Returns:
        `(mono float32 samples, sample_rate, duration of the whole file in seconds)`.
    Raises:
        ClipReadError: the file cannot be decoded by either.
    """
    import soundfile as sf

    path = str(path)
    try:
        with sf.SoundFile(path) as f:
            sr = int(f.samplerate)
            total = int(f.frames)
            need = int(math.ceil(seconds * sr))
            data = f.read(frames=min(need, total) if total > 0 else need, dtype="float32", always_2d=True)
        return _mono(data.T), sr, (total if total > 0 else data.shape[0]) / float(sr)
    except Exception as exc:  # noqa: BLE001 - libsndfile refuses the format, or the file is unreadable
        if not os.path.isfile(path):
            raise ClipReadError(f"{path}: not a readable file ({exc})") from exc
        sf_error = exc
    try:
        return _read_head_av(path, seconds)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this clip's named problem
        raise ClipReadError(f"{path}: undecodable audio (libsndfile: {sf_error}; PyAV: {type(exc).__name__}: "
                            f"{exc})") from exc


def _read_head_av(path: str, seconds: float) -> tuple[np.ndarray, int, float]:
    import av

    with av.open(path) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        sr = int(stream.rate or stream.codec_context.sample_rate)
        need = int(math.ceil(seconds * sr))
        to_float = av.AudioResampler(format="fltp", rate=sr)  # planar float, same rate and channels
        chunks, got = [], 0
        for frame in container.decode(stream):
            for f in to_float.resample(frame):
                arr = f.to_ndarray()  # [C, n]
                chunks.append(_mono(arr))
                got += arr.shape[-1]
            if got >= need:
                break
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = got / float(sr)
    x = np.concatenate(chunks)[:need] if chunks else np.zeros(0, np.float32)
    return x.astype(np.float32, copy=False), sr, max(duration, x.size / float(sr))


def load_clip_window(path: str | os.PathLike) -> tuple[np.ndarray, WindowInfo]:
    """The CLAP window of an audio file, decoding only the part that can reach it.

    Args:
        path: the file (MP3, WAV, FLAC, OGG; m4a/opus through PyAV).
    Returns:
        `(window, info)` as `clap_window`.
    Raises:
        ClipReadError: the file cannot be decoded.
    """
    x, sr, duration = read_head(path, WINDOW_SECONDS + RESAMPLE_MARGIN_S)
    x, nonfinite = _zero_nonfinite(x)
    return window_from_48k(resample_48k(x, sr), duration, nonfinite)


def read_clip(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Decode a whole audio file (wav, flac, mp3, ...) with audiocraft's reader (not used for scoring).

    Args:
        path: the file.
    Returns:
        `(wav [C, T] float32, sample_rate)`.
    """
    from audiocraft.data.audio import audio_read

    wav, sr = audio_read(str(path))
    return wav, int(sr)
