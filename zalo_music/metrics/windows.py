"""CLAP windows read ahead: the next batch's files are decoded on CPU threads while CLAP embeds this batch.

Reading a window (`audio.load_clip_window`: libsndfile decode, soxr resampling to 48 kHz, laion's padding) costs
~6 ms per 10-s clip on one core; one clip at a time, that alone caps a GPU scorer at ~150 clips/s, whatever the
audio tower's speed. Both libraries release the GIL, so threads (one per core) decode side by side, and the next
batch is submitted before this one is handed over, so the decoding hides behind the embedding. Windows and
failures come back in input order: the result is the serial loop's, only sooner.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import typing as tp
from pathlib import Path

import numpy as np

from ..procutil import usable_cores
from .audio import ClipReadError, WindowInfo, load_clip_window

#: One window's read: `(window, info, None)`, or `(None, None, reason)` for a file that cannot be decoded.
Read = tuple[np.ndarray | None, WindowInfo | None, str | None]


@functools.lru_cache(maxsize=2)
def _pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clap-window")


def read_window(path: str | os.PathLike) -> Read:
    """One file's CLAP window, or the reason it cannot be read.

    Args:
        path: an audio file.
    """
    try:
        window, info = load_clip_window(Path(path))
    except ClipReadError as exc:
        return None, None, str(exc)
    return window, info, None


def window_batches(files: tp.Sequence[str | os.PathLike], batch_size: int,
                   workers: int | None = None) -> tp.Iterator[tuple[int, list[Read]]]:
    """The files' windows, one batch at a time, each batch read while the caller works on the one before.

    Args:
        files: audio files.
        batch_size: files per batch.
        workers: decoding threads (default: one per usable core).
    Yields:
        `(start, reads)`: the index of the batch's first file and one `Read` per file, in input order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size}: must be at least 1")
    pool = _pool(workers or usable_cores())

    def submit(start: int) -> list[concurrent.futures.Future]:
        return [pool.submit(read_window, f) for f in files[start:start + batch_size]]

    ahead = submit(0)
    try:
        for start in range(0, len(files), batch_size):
            current, nxt = ahead, start + batch_size
            ahead = submit(nxt) if nxt < len(files) else []  # read while the caller embeds `current`
            yield start, [f.result() for f in current]
    finally:
        for f in ahead:  # the caller stopped early (an error): no reads left running for nobody
            f.cancel()
