"""Recordings of any length -> consecutive fixed-length windows, streamed (memory bounded by one window).

`prepare` cuts every recording into windows of `clip_seconds` every `hop_seconds` (default: the clip, i.e.
back to back), so each second of a 3-minute song is trained on, and valid/evaluate see every window rather
than one random crop. The end of a recording that does not fill a whole window is handled by `tail`:

- `overlap` (default): one last window that ends where the recording ends (it overlaps the one before), so
  no second is dropped and nothing is padded;
- `pad`: the tail gets its own window, zero-padded, when it holds at least half a clip (else it is dropped);
- `drop`: the tail is dropped.

A remainder of at most `MAX_PAD_SECONDS` is always dropped (an MP3's encoder padding, a 10.03-s "10-s" clip),
and a recording shorter than a clip by at most that much is padded to one clip, as before. Windows whose peak
is below -80 dBFS (silence between tracks) are dropped. The seconds dropped are counted by reason.

Decoding streams through libsndfile (PyAV/FFmpeg for MP3 and for what libsndfile refuses), the downmix is float64 (channels near
the float32 limit do not overflow) and resampling is soxr's streaming resampler, whose output equals a
one-shot `soxr.resample` of the whole recording: a window is exactly the resampled recording at its offset.
"""

from __future__ import annotations

import math
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Longest remainder (end of file) that is dropped, or missing length that is padded, without further ado.
MAX_PAD_SECONDS = 0.5
#: A window whose peak stays below this (-80 dBFS) is silence: dropped.
SILENCE_PEAK = 1e-4
TAILS = ("overlap", "pad", "drop")
#: soxr resamples in float32, where samples near +-3e38 overflow to inf/NaN: they go through it scaled by 2**-64
#: and come back (in float64) scaled by 2**64. Scaling by a power of two is exact in float arithmetic, so for any
#: real audio the output is bit for bit that of resampling the samples as they are.
_HEADROOM = 2.0**-64
#: Seconds decoded per block: small against any window, large enough that per-block overhead is negligible.
BLOCK_SECONDS = 4.0
#: An MP3 of at most this many samples (all channels; 64 MB as float64, ~2 min of 44.1-kHz stereo) is decoded in
#: one read by libsndfile; a longer one streams through PyAV.
ONE_READ_SAMPLES = 8 << 20


@dataclass(frozen=True)
class Windowing:
    """How recordings become training clips (each field is a `prepare` option).

    Args:
        clip_seconds: window length.
        hop_seconds: start-to-start distance (None: the clip length, windows back to back); at most the clip.
        tail: what the end of a recording shorter than a window becomes (see `TAILS`).
        sample_rate: output rate.
    """

    clip_seconds: float = 10.0
    hop_seconds: float | None = None
    tail: str = "overlap"
    sample_rate: int = 32000

    def __post_init__(self) -> None:
        if not (self.clip_seconds > 0 and math.isfinite(self.clip_seconds)):
            raise ValueError(f"--clip-seconds {self.clip_seconds}: must be a positive number of seconds")
        if self.hop_seconds is not None and not (0 < self.hop_seconds <= self.clip_seconds):
            raise ValueError(f"--hop {self.hop_seconds}: must be positive and at most --clip-seconds "
                             f"({self.clip_seconds:g}); a longer hop would skip audio")
        if self.tail not in TAILS:
            raise ValueError(f"--tail {self.tail!r}: choose from {', '.join(TAILS)}")
        if self.sample_rate <= 0:
            raise ValueError(f"--sample-rate {self.sample_rate}: must be positive")

    @property
    def clip(self) -> int:
        """Window length in output samples."""
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def hop(self) -> int:
        """Hop in output samples."""
        return int(round((self.hop_seconds or self.clip_seconds) * self.sample_rate))

    def fingerprint(self) -> dict:
        """What a previous output must have been made with to be reused."""
        return {"clip_seconds": self.clip_seconds, "hop_seconds": self.hop_seconds or self.clip_seconds,
                "tail": self.tail, "sample_rate": self.sample_rate}


class TooShort(ValueError):
    """The recording is shorter than one window (beyond what may be padded)."""


@dataclass
class Window:
    """One window: `audio` (float64, exactly one clip long) starting `start` samples into the recording,
    of which the first `real` samples are audio (the rest is padding)."""

    index: int
    start: int
    audio: np.ndarray
    real: int


@dataclass
class Segmenter:
    """Cuts a stream of mono samples into windows as they arrive (`feed`), then the end (`finish`).

    Memory: at most one window plus one hop plus the last chunk fed, whatever the recording's length.

    Args:
        windowing: the window parameters.
    """

    windowing: Windowing
    total: int = 0
    count: int = 0
    dropped_tail: int = 0
    tail_reason: str = ""
    _buf: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _buf_start: int = 0
    _next: int = 0

    def feed(self, chunk: np.ndarray) -> list[Window]:
        """Append samples; returns the windows they complete."""
        clip, hop = self.windowing.clip, self.windowing.hop
        self._buf = np.concatenate([self._buf, chunk]) if self._buf.size else np.asarray(chunk, np.float64)
        self.total += len(chunk)
        out = []
        while self.total >= self._next + clip:
            a = self._next - self._buf_start
            # a view: the buffer is only ever replaced, never written in place
            out.append(Window(self.count, self._next, self._buf[a:a + clip], clip))
            self.count += 1
            self._next += hop
        # keep what the next window, or an end-aligned last window, may still need
        keep = max(self._buf_start, min(self._next, self.total - clip))
        if keep > self._buf_start:
            self._buf = self._buf[keep - self._buf_start:]
            self._buf_start = keep
        return out

    def finish(self) -> list[Window]:
        """The windows the end of the recording gives (per `tail`); counts the dropped tail in `dropped_tail`.

        Raises:
            TooShort: no window at all fits and the recording is too short to pad.
        """
        w = self.windowing
        clip, pad = w.clip, int(round(MAX_PAD_SECONDS * w.sample_rate))
        if self.count == 0:
            if self.total == 0 or self.total < clip - pad:
                raise TooShort(f"too short: {self.total / w.sample_rate:.2f}s < "
                               f"{w.clip_seconds - MAX_PAD_SECONDS:.2f}s (--clip-seconds {w.clip_seconds:g} less "
                               f"the {MAX_PAD_SECONDS:g}s that may be padded): a truncated file? Training on it "
                               "would mean training on padding; a lower --clip-seconds keeps it")
            return [self._padded(0)]
        last_end = (self.count - 1) * w.hop + clip
        uncovered = self.total - last_end
        if uncovered <= 0:
            return []
        if uncovered <= pad:
            self.dropped_tail, self.tail_reason = uncovered, f"ends under {MAX_PAD_SECONDS:g}s"
            return []
        if w.tail == "overlap":
            start = self.total - clip
            a = start - self._buf_start
            return [Window(self.count, start, self._buf[a:a + clip], clip)]
        if w.tail == "pad" and 2 * (self.total - self._next) >= clip:
            return [self._padded(self._next)]
        self.dropped_tail = uncovered
        self.tail_reason = "tails (--tail drop)" if w.tail == "drop" else "tails under half a clip (--tail pad)"
        return []

    def _padded(self, start: int) -> Window:
        a = start - self._buf_start
        real = self._buf[a:]
        audio = np.pad(real, (0, self.windowing.clip - len(real)))
        return Window(self.count, start, audio, len(real))


@dataclass
class Stream:
    """A recording being decoded: its source rate and channel count, and its mono blocks at the output rate."""

    rate: int
    channels: int
    blocks: tp.Iterator[np.ndarray]


def _sndfile_blocks(f: tp.Any, first: int | None = None) -> tp.Iterator[np.ndarray]:
    n = int(BLOCK_SECONDS * f.samplerate)
    with f:
        size = first or n
        while True:
            block = f.read(size, dtype="float64", always_2d=True)
            if not len(block):
                return
            yield block
            size = n


def _pyav_blocks(path: Path) -> tuple[int, int, tp.Iterator[np.ndarray]]:
    import av

    container = av.open(str(path))
    if not container.streams.audio:
        container.close()
        raise ValueError("no audio stream")
    stream = container.streams.audio[0]
    rate, channels = int(stream.codec_context.sample_rate), int(stream.codec_context.channels)
    if rate <= 0 or channels <= 0:
        container.close()
        raise ValueError(f"stream announces {rate} Hz and {channels} channels")
    # planar float64 at the stream's rate and layout, whatever the codec's native sample format
    resampler = av.AudioResampler(format="dblp", layout=stream.codec_context.layout, rate=rate)

    def frames() -> tp.Iterator[np.ndarray]:
        with container:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().T
            for out in resampler.resample(None):
                yield out.to_ndarray().T

    def blocks() -> tp.Iterator[np.ndarray]:
        # codec frames (1,152 samples for MP3) gathered into BLOCK_SECONDS blocks: per-frame work downstream
        # (a buffer copy per block) would otherwise cost more than decoding
        pending, size, target = [], 0, int(BLOCK_SECONDS * rate)
        for x in frames():
            pending.append(x)
            size += len(x)
            if size >= target:
                yield np.concatenate(pending)
                pending, size = [], 0
        if pending:
            yield np.concatenate(pending)

    return rate, channels, blocks()


def open_stream(path: str | Path, sample_rate: int) -> Stream:
    """Decode `path` block by block to mono float64 at `sample_rate`.

    Args:
        path: any audio file libsndfile or FFmpeg reads.
        sample_rate: output rate.
    Raises:
        ValueError: when no decoder opens it; decoding errors and NaN/Inf samples surface while iterating.
    """
    import soundfile as sf

    path = Path(path)
    try:
        f = sf.SoundFile(str(path))
    except Exception:  # noqa: BLE001 - libsndfile refuses it: FFmpeg (through PyAV) reads nearly everything else
        f = None
    mp3 = f is not None and f.format in ("MP3", "MPEG")
    if f is not None and (not mp3 or 0 < f.frames * f.channels <= ONE_READ_SAMPLES):
        # an MP3 is read in one block: libsndfile's mpg123 prints "part2_3_length too large" errors to the C
        # stderr at block boundaries (the samples are right); whatever the header's estimate missed follows
        first = f.frames if mp3 else None
        rate, channels, raw = f.samplerate, f.channels, _sndfile_blocks(f, first)
    else:
        # a long MP3 (or what libsndfile refuses) streams through FFmpeg, which does so quietly
        if f is not None:
            f.close()
        rate, channels, raw = _pyav_blocks(path)

    def mono() -> tp.Iterator[np.ndarray]:
        import soxr

        # float32: soxr's float64 stream costs ~4x as much for no audible difference (16-bit FLAC output)
        stream = None if rate == sample_rate else soxr.ResampleStream(rate, sample_rate, 1, dtype="float32",
                                                                      quality="HQ")
        for block in raw:
            if not np.isfinite(block).all():
                raise ValueError("contains NaN or Inf samples")
            # float64 mean: channels near the float32 limit (+-3e38) must not overflow to inf
            x = np.ascontiguousarray(block.mean(axis=1) if block.shape[1] > 1 else block[:, 0])
            if stream is None:
                yield x
            else:
                y = stream.resample_chunk(np.multiply(x, _HEADROOM, dtype=np.float32), last=False)
                yield np.divide(y, _HEADROOM, dtype=np.float64)
        if stream is not None:
            yield np.divide(stream.resample_chunk(np.zeros(0, np.float32), last=True), _HEADROOM, dtype=np.float64)

    return Stream(rate, channels, mono())
