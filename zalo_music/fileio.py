"""Atomic, verified file writes and safe output naming: nothing half-written, nothing outside the output folder.

- `atomic_path` writes beside the destination and renames only when the block succeeded *and* the optional
  `verify` check passed, so a truncated write (a full disk that the writer library did not report) is never
  committed. Committed files get the usual `0o666 & ~umask` mode (mkstemp alone would leave 0600).
- `check_audio` re-opens a written audio file: container, rate, channels, frame count, and (deep) a decode of
  every frame or (cheap, for resume) of the tail.
- `check_output_name` refuses names that cannot be written (too long once the temporary suffix is added,
  unencodable) before any work is spent on them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import typing as tp
from pathlib import Path

#: Suffixes of the audio files the project reads (lower case: compare `path.suffix.lower()`): the one list for
#: `prepare` (audio files the JSON does not name), FAD reference folders and `score` (extra files). audiocraft's
#: `audio_dataset.DEFAULT_EXTS` is the same list without .opus; it is not imported from there because that
#: module loads all of audiocraft (torch, laion_clap), seconds these light commands do not need.
AUDIO_SUFFIXES = frozenset({".mp3", ".wav", ".flac", ".ogg", ".m4a", ".opus"})

#: mkstemp's random part: `.<name>.<8 chars>.tmp<suffix>` (see `atomic_path`).
_TEMP_RANDOM_CHARS = 8


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def temp_name(name: str) -> str:
    """The longest temporary name `atomic_path` uses for a destination called `name` (for length checks)."""
    return f".{name}." + "x" * _TEMP_RANDOM_CHARS + ".tmp" + Path(name).suffix


#: Suffix of a folder being filled before it is renamed into place (`prepare`'s segment folders).
PARTIAL_SUFFIX = ".partial"


def is_temp(path: str | os.PathLike) -> bool:
    """Whether `path` is one of `atomic_path`'s temporary files (`.<name>.<random>.tmp<suffix>`) or lies in an
    uncommitted folder (`*.partial`): readers of audio folders skip them, writers remove stale ones (a killed
    run's) before they start."""
    path = Path(path)
    return (path.name.startswith(".") and ".tmp" in path.name[1:]) or path.parent.name.endswith(PARTIAL_SUFFIX)


def remove_stale_temps(folder: str | os.PathLike, recursive: bool = True) -> int:
    """Delete `atomic_path` temporaries under `folder` (call only while no other writer uses it). Returns how many.

    Args:
        folder: an output folder of this project.
        recursive: also in its sub-folders.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    found = [p for p in (folder.rglob(".*") if recursive else folder.glob(".*")) if p.is_file() and is_temp(p)]
    for p in found:
        p.unlink(missing_ok=True)
    return len(found)


#: A temporary of a one-file output older than this belongs to a killed run (writing one report or export
#: takes seconds to minutes): `remove_stale_temps_of` leaves younger ones to a writer that may be alive.
STALE_AFTER_S = 3600.0


def remove_stale_temps_of(path: str | os.PathLike, older_than_s: float = STALE_AFTER_S) -> int:
    """Delete what killed writers of one destination left beside it: `atomic_path` temporaries
    (`.<name>.<random>.tmp<suffix>`) and temporary folders (`.<name>.<random>`, as `export` makes), when older
    than `older_than_s` (outputs without a lock: a younger one may be a live writer's). Returns how many.

    Args:
        path: the destination (a report file, an export folder).
        older_than_s: minimum age (modification time) of what is removed.
    """
    import glob
    import re
    import shutil
    import time

    path = Path(path)
    if not path.parent.is_dir():
        return 0
    pattern = re.compile(re.escape(f".{path.name}.") + rf"[A-Za-z0-9_]{{{_TEMP_RANDOM_CHARS}}}(\.tmp.*)?")
    removed = 0
    for p in path.parent.glob(f".{glob.escape(path.name)}.*"):
        try:
            old = time.time() - p.lstat().st_mtime > older_than_s
        except OSError:
            continue
        if not old or not pattern.fullmatch(p.name):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed += 1
    return removed


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str, wait: bool = False) -> tp.Iterator[None]:
    """Hold an exclusive `flock` on `path` (created; it records who holds it), or refuse at once (or wait).

    flock works across processes and, on NFSv4 and Lustre, across machines; the lock goes with the process
    (kill -9 included), so a stale lock file never blocks a rerun.

    Args:
        path: the lock file.
        what: what it protects, for the message.
        wait: block until the holder is done instead of refusing.
    Raises:
        ValueError: another process holds it (named by the pid and host it wrote), when not waiting.
    """
    import fcntl
    import socket

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        holder = ""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            if wait:
                import logging

                logging.getLogger(__name__).info("%s is in use by %s: waiting for it", what, holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
                holder = ""
        if holder:
            raise ValueError(f"{what} is in use by another run ({holder}): wait for it to finish, or use "
                             "another name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)


def format_bytes(n: float) -> str:
    """`n` bytes for people: `812 B`, `3.4 MB`, `1.2 GB` (powers of 1000, as `df -H` and file managers show)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class DiskFull(OSError):
    """A write failed because its file system is full (whatever library reported it, e.g. libsndfile's
    "System error"). The message names the file system, the file and, once the command has said it
    (`with_need`), the space the rest of the run needs."""

    def __init__(self, folder: Path, target: str, free: int | None, need: str = "") -> None:
        self.folder, self.target, self.free, self.need = folder, target, free, need
        room = "no space left" if not free else f"only {format_bytes(free)} left"
        super().__init__(errno.ENOSPC, f"{room} on the file system of {folder} (writing {target}){need}: free some "
                                       "space (or point the output elsewhere) and rerun: it resumes")

    def __reduce__(self) -> tuple:  # raised in pool workers: it must cross the process boundary whole
        return DiskFull, (self.folder, self.target, self.free, self.need)

    def with_need(self, left: int, what: str, each: float | None, bound: str = "about") -> DiskFull:
        """This error, naming the space still needed: `left` items of `each` bytes (None: unknown).

        Args:
            left: items the run had not finished.
            what: their name, plural (`recordings`, `clips`).
            each: bytes one of them takes (measured on this run's outputs, or a bound).
            bound: how `each` is known: `about` (measured) or `at most` (a bound).
        """
        if not left:
            return self
        need = f"; the {left} {what} left need {bound} {format_bytes(left * each)} more" if each else \
            f"; {left} {what} are left"
        return DiskFull(self.folder, self.target, self.free, need)


#: Below this many free bytes, a failed write is taken to be a full disk.
FULL_DISK_BYTES = 1 << 20


def _full_disk(folder: Path, exc: BaseException, target: Path) -> DiskFull | None:
    import shutil

    if isinstance(exc, DiskFull):
        return None
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = None
    else:
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return None
        if free >= FULL_DISK_BYTES:
            return None
    return DiskFull(folder, target.name, free)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, verify: tp.Callable[[Path], tp.Any] | None = None) -> tp.Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the block succeeds and `verify` passes.

    Args:
        path: final destination. Its folder is created if needed.
        verify: called with the temporary path after the block; it raises to refuse the file (e.g. an audio
            file whose frame count is short because the disk filled up). The file is then deleted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if verify is not None:
            verify(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600: give the file the mode open() would
        os.replace(tmp_path, path)
    except Exception as exc:
        # libraries report a full disk in their own words (libsndfile: "System error"): name it, one way
        full = _full_disk(path.parent, exc, path)
        if full is not None:
            raise full from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> tp.Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` (a folder) only if the block succeeds.

    A killed writer's temporary folders (an hour old: `remove_stale_temps_of`) are removed first.

    Args:
        path: the final folder. Its parent is created if needed.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps_of(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _json_text(obj: tp.Any, indent: int | None) -> str:
    text = json.dumps(obj, indent=indent, ensure_ascii=False) + "\n"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (e.g. from a hostile id): escape it rather than lose the file
        text = json.dumps(obj, indent=indent, ensure_ascii=True) + "\n"
    return text


def write_json(path: str | os.PathLike, obj: tp.Any, indent: int | None = 2) -> None:
    """Write `obj` as UTF-8 JSON atomically (strings that are not valid Unicode are written \\u-escaped).

    Args:
        path: destination file.
        obj: JSON-serialisable object.
        indent: JSON indentation (None for compact).
    """
    with atomic_path(path) as tmp:
        tmp.write_text(_json_text(obj, indent), encoding="utf-8")


def safe_child(root: str | os.PathLike, name: str) -> Path:
    """`root/name` for a name taken from user data, refusing anything that would land outside `root`.

    Args:
        root: the output folder.
        name: a file name from a JSON key (e.g. "1699168558.3313167.mp3").
    Raises:
        ValueError: for empty names, path separators, `..`, absolute paths or NUL bytes.
    """
    if not isinstance(name, str) or not name or name in {".", ".."} or "\x00" in name or "/" in name \
            or "\\" in name:
        raise ValueError(f"unsafe file name {name!r}: ids must be plain file names (no folders, no '..')")
    bad = unicode_problem(name)
    if bad:  # checked first: resolving such a name raises UnicodeEncodeError, not a reason
        raise ValueError(f"file name {name!r} is {bad}: rename the id")
    root_path = Path(root).resolve()
    child = (root_path / name).resolve()
    if child.parent != root_path:
        raise ValueError(f"unsafe file name {name!r}: it resolves outside {root_path}")
    return child


def name_max(folder: str | os.PathLike) -> int:
    """Longest file name (bytes) the file system of `folder` (or its nearest existing parent) accepts."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def unicode_problem(text: str) -> str | None:
    """Why `text` cannot be written as UTF-8 (a lone surrogate), or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"not valid Unicode (lone surrogate {text[exc.start]!r} at character {exc.start})"
    return None


def check_output_name(folder: str | os.PathLike, name: str, limit: int | None = None) -> Path:
    """`safe_child(folder, name)`, also refusing names that the file system cannot store.

    Args:
        folder: output folder.
        name: output file name (from user data).
        limit: longest name in bytes (default: the file system's, usually 255).
    Raises:
        ValueError: naming the problem (unsafe, unencodable, or too long including the temporary suffix).
    """
    target = safe_child(folder, name)
    limit = limit or name_max(folder)
    size = len(temp_name(name).encode("utf-8"))
    if size > limit:
        raise ValueError(f"file name {name[:40]!r}... is too long: {len(name.encode())} bytes, the file system "
                         f"takes {limit} including the {size - len(name.encode())}-byte temporary suffix; "
                         "shorten the id")
    return target


class AudioCheckError(ValueError):
    """A written or existing audio file is not what it should be (the message says what differs)."""


def check_audio(path: str | os.PathLike, *, sample_rate: int | None = None, channels: int | None = None,
                frames: int | None = None, frames_tolerance: int = 0, container: str | None = None,
                deep: bool = True) -> dict:
    """Re-open an audio file and check it; returns `{"frames", "sample_rate", "channels", "format"}`.

    Args:
        path: the file.
        sample_rate: expected rate (None: any).
        channels: expected channel count (None: any).
        frames: expected length in samples (None: any).
        frames_tolerance: accepted difference from `frames`.
        container: expected libsndfile major format ("FLAC", "MPEG", "WAV"...; None: any).
        deep: decode every frame (before a commit); otherwise decode only the last block (resume: a truncated
            FLAC still carries its full length in the header, its tail does not decode).
    Raises:
        AudioCheckError: naming what differs.
    """
    import numpy as np
    import soundfile as sf

    try:
        f = sf.SoundFile(str(path))
    except Exception as exc:  # noqa: BLE001 - libsndfile raises its own error types
        raise AudioCheckError(f"does not open as audio ({type(exc).__name__}: {str(exc)[:100]})") from exc
    with f:
        info = {"frames": int(f.frames), "sample_rate": f.samplerate, "channels": f.channels, "format": f.format}
        if container and f.format != container:
            raise AudioCheckError(f"container is {f.format}, expected {container}")
        if sample_rate and f.samplerate != sample_rate:
            raise AudioCheckError(f"sample rate {f.samplerate}, expected {sample_rate}")
        if channels and f.channels != channels:
            raise AudioCheckError(f"{f.channels} channels, expected {channels}")
        if frames is not None and abs(f.frames - frames) > frames_tolerance:
            raise AudioCheckError(f"{f.frames} frames ({f.frames / f.samplerate:.3f}s), expected {frames} "
                                  f"({frames / f.samplerate:.3f}s): incomplete write?")
        block = 1 << 16
        if not deep and f.seekable() and f.frames > block:
            f.seek(f.frames - block)
            expected = block
        else:
            expected = f.frames
        decoded = 0
        try:  # read until the decoder stops: MP3/FLAC headers announce a length that a truncated file lacks
            while True:
                chunk = f.read(block, dtype="float32", always_2d=True)
                if not len(chunk):
                    break
                if not np.isfinite(chunk).all():
                    raise AudioCheckError("NaN or Inf samples")
                decoded += chunk.shape[0]
        except AudioCheckError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise AudioCheckError(f"does not decode to its end ({type(exc).__name__}: {str(exc)[:100]})") from exc
        if decoded != expected:
            raise AudioCheckError(f"decodes {decoded} of the {expected} frames its header announces: truncated")
    return info


def friendly_os_error(exc: OSError) -> str:
    """One line for an OSError: the file, what happened and what to do."""
    if isinstance(exc, DiskFull):  # its message already names the file system, the need and the fix
        return exc.strerror
    where = exc.filename if exc.filename is not None else ""
    fixes = {
        errno.ENOSPC: "free some disk space (or pick another --out); a rerun resumes where this one stopped",
        errno.EDQUOT: "free some disk space (quota); a rerun resumes where this one stopped",
        errno.EACCES: "make it readable/writable for this user, or choose another path",
        errno.EPERM: "make it readable/writable for this user, or choose another path",
        errno.EROFS: "the file system is read-only: choose a writable folder",
        errno.EISDIR: "a file was expected here, not a folder",
        errno.ENOTDIR: "a folder was expected here, not a file",
        errno.ENAMETOOLONG: "shorten the name",
        errno.ENOENT: "check the path",
    }
    fix = fixes.get(exc.errno or -1, "check the path and the disk")
    text = exc.strerror or str(exc)
    return f"{where}: {text}: {fix}" if where else f"{text}: {fix}"
