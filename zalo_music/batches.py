"""The work of one `generate` run cut into batches: which ids, in which batches, with which seed, in which shard,
and which run holds a batch while it is generated.

Determinism: items are sorted (by the text encoder's length of their description, then id; or by id alone) and
cut into fixed batches of `batch_size`; each batch is seeded from (seed, its ids). A batch is skipped only when
all its files exist, otherwise it is regenerated whole, so an interrupted run finishes with the same bytes as an
uninterrupted one (for the same batch size, batch order and device).
`--shard i/n` hands out those whole batches (batch k to shard k mod n), so the shards' files together are
the unsharded run's bytes. Concurrent runs on one `--out` share the work through per-batch locks
(`BatchLocks`) instead of both generating everything.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import typing as tp
import warnings
from pathlib import Path

from .data.zalo_json import MAX_DESCRIPTION_CHARS, check_test_item

#: One unit of work: (id, description, output path).
Item = tuple[str, str, Path]


def check_items(descriptions: dict[str, str], out_dir: Path) -> tuple[list[Item], dict[str, str]]:
    """Valid (id, text, output path) items sorted by id, and a reason for each refused id.

    Args:
        descriptions: `{id: description}` from the test JSON.
        out_dir: the output folder every id must stay inside.
    """
    items, errors = [], {}
    for key, text in descriptions.items():
        try:  # the same check as prepare-test: ids stay inside out_dir, storable, .mp3, usable description
            target = check_test_item(out_dir, key, text)
        except ValueError as exc:
            errors[key] = str(exc)
            continue
        if len(text) > MAX_DESCRIPTION_CHARS:
            warnings.warn(f"{key}: description of {len(text)} characters truncated to {MAX_DESCRIPTION_CHARS}",
                          stacklevel=2)
            text = text[:MAX_DESCRIPTION_CHARS]
        items.append((key, text, target))
    items.sort(key=lambda it: it[0])
    return items, errors


def make_batches(items: list[Item], batch_size: int,
                 length: tp.Callable[[str], int] | None = None) -> list[list[Item]]:
    """The items cut into consecutive batches of `batch_size` (the last one may be shorter), in id order or, with
    `length`, in order of length (ties by id): a batch pads its descriptions to its longest, so batches of
    similar lengths compute little padding (public test, batch 16: 1.4% padded positions vs 41% in id order;
    docs/BENCHMARKS.md).

    Args:
        items: (id, text, output path) items, sorted by id (`check_items`).
        batch_size: items per batch (>= 1).
        length: `text -> positions the text encoder gets` (`generate.text_length`), or None for id order.
    """
    if length is not None:
        items = sorted(items, key=lambda it: (length(it[1]), it[0]))
    return [items[k:k + batch_size] for k in range(0, len(items), batch_size)]


def shard(batches: list[list[Item]], spec: str | None) -> list[list[Item]]:
    """The batches of shard `i/n` (0-based): batch k of the unsharded run goes to shard k mod n.

    Whole batches, never items: a batch's seed comes from its ids (`batch_seed`), so a shard must hold exactly
    the batches the unsharded run builds, cut from the full sorted item list *before* sharding. Then the union of
    the shards' files is byte-identical to an unsharded run (same batch size and device). Round-robin rather than
    contiguous ranges so that shards stay balanced when batches cost differently along the sorted ids.

    Args:
        batches: every batch of the run, from `make_batches` on the full sorted item list.
        spec: the `--shard` value `i/n`, or None/"" for all batches.
    """
    if not spec:
        return batches
    i, n = parse_shard(spec)
    return batches[i::n]


def parse_shard(spec: str) -> tuple[int, int]:
    """`"i/n"` -> (i, n), with a clear error for anything else.

    Args:
        spec: the `--shard` value.
    """
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard {spec!r}: expected i/n with integers 0 <= i < n, e.g. 0/2") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {spec}: expected i/n with 0 <= i < n")
    return i, n



def batch_seed(seed: int, keys: list[str]) -> int:
    """The torch seed of the batch holding `keys` (a 63-bit hash of the run's seed and the batch's ids).

    Args:
        seed: the run's `--seed`.
        keys: the batch's ids, in order.
    """
    digest = hashlib.sha256((str(seed) + "\n" + "\n".join(keys)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**63)



def remove_stale_temps(items: list[Item]) -> int:
    """Delete the temporary files a killed run left for these items (`fileio.atomic_path` names them
    `.<id>.<random>.tmp<suffix>`); only these items', because other shards may be writing beside them.

    Args:
        items: (id, text, output path) of this run.
    Returns:
        How many files were removed.
    """
    removed = 0
    for key, _, target in items:
        for tmp in target.parent.glob(f".{glob.escape(key)}.*.tmp{glob.escape(target.suffix)}"):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed



class BatchLocks:
    """Per-batch advisory locks shared by every `generate` writing into one folder.

    One lock file inside the output folder (`.generate.lock`: shards on different machines sharing a network
    `--out` see the same file, where a file in each machine's temp folder would lock nothing), one POSIX
    byte-range lock (fcntl, which NFS and Lustre carry across clients) per batch at an offset derived from the
    batch's ids: two runs on the same `--out` (with or without the same shards) never generate the same batch
    at once, and a lock held by a killed run is released by the kernel.
    """

    #: The lock file's name in `--out` (a dot file: no audio reader or ZIP ever lists it).
    NAME = ".generate.lock"

    def __init__(self, out: Path) -> None:
        self.path = out / self.NAME
        self.fd = -1
        self.kept: set[int] = set()  # batches whose lock outlives their loop body (`keep`)

    def __enter__(self) -> BatchLocks:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def held(self, batches: list, before_wait: tp.Callable[[], None] | None = None) -> tp.Iterator[list]:
        """Each batch with its lock held while the caller's loop body runs (and after it, when the body `keep`s
        it): the free ones first, then, waiting for the other run, those it held (it may have finished them: the
        caller re-checks).

        Args:
            batches: the batches, in order.
            before_wait: called before waiting for another run's batch; it must release what the caller kept
                (two runs each keeping a batch while waiting for the other's would wait forever).
        """
        deferred = []
        for batch in batches:
            if not self.acquire(batch, block=False):  # another run on this --out is generating it
                deferred.append(batch)
                continue
            try:
                yield batch
            finally:
                self._done(batch)
        for batch in deferred:
            if before_wait is not None:
                before_wait()
            self.acquire(batch, block=True)
            try:
                yield batch
            finally:
                self._done(batch)

    def keep(self, batch: list) -> None:
        """Hold `batch`'s lock past its loop body, until `release(batch)`: its clips are still being written
        while the next batch is generated, and no other run may take the batch for unfinished meanwhile."""
        self.kept.add(self._offset(batch))

    def _done(self, batch: list) -> None:
        if self._offset(batch) not in self.kept:
            self.release(batch)

    @staticmethod
    def _offset(batch: list) -> int:
        return batch_seed(0, [k for k, _, _ in batch]) % (2**40)

    def acquire(self, batch: list, block: bool) -> bool:
        flags = fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB)
        try:
            fcntl.lockf(self.fd, flags, 1, self._offset(batch))
        except OSError:
            return False
        return True

    def release(self, batch: list) -> None:
        self.kept.discard(self._offset(batch))
        with contextlib.suppress(OSError):
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, self._offset(batch))

    #: Byte of the lock file guarding the best-of-N report (batch offsets are below 2**40).
    REPORT_OFFSET = 2**40 + 1

    @contextlib.contextmanager
    def report_lock(self) -> tp.Iterator[None]:
        """Held while a run reads, merges and rewrites the folder's best-of-N report."""
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, self.REPORT_OFFSET)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, self.REPORT_OFFSET)

    def report_lock_update(self, out: Path, settings: dict, records: dict) -> None:
        """Merge a batch's best-of-N records into the report under the report lock.

        Args:
            out: the output folder.
            settings: the run's settings.
            records: `{id: record}`.
        """
        from .rerank import update_report

        update_report(out, settings, records, self.report_lock())


