"""Reference sets for FAD and their cached Gaussian statistics.

A reference is an audiocraft manifest folder (`data.jsonl[.gz]`, as written by `zalo-music prepare`), a
manifest file, or a folder of audio files. Its statistics (mu, sigma, n) are cached on disk under a key that
hashes the reference *content* (the bytes of every reference file, plus the manifest or the file names) and
the embedding model identity (CLAP towers, checkpoint sha256, laion-clap version, preparation version): change
any of them and the cache misses. Sizes and mtimes are never trusted: a clip rewritten in place with the same
size and mtime (`cp -p`, `rsync -t`) changes the key. Hashing reads every byte once per evaluation, which is
cheap next to embedding (figures in docs/evaluation.md).

A reference clip that cannot be decoded is left out of the statistics and listed (`skipped`), also on a
cache hit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import typing as tp
from pathlib import Path

import numpy as np

from ..fileio import AUDIO_SUFFIXES, is_temp
from .fad import GaussianStats

logger = logging.getLogger(__name__)


def reference_files(path: str | os.PathLike, limit: int | None = None) -> tuple[list[Path], str]:
    """The audio files of a reference and a hash of its content.

    Args:
        path: manifest folder, manifest file, or folder of audio files (searched recursively).
        limit: keep only the first `limit` files (manifest order, or sorted names); part of the hash.
    Returns:
        `(files, content_hash)`.
    Raises:
        FileNotFoundError: when `path` is none of those or holds no audio.
    """
    from ..data.manifest import manifest_bytes, manifest_file, parse_manifest

    root = Path(path).expanduser()
    manifest = manifest_file(root)
    h = hashlib.sha256()
    if manifest is not None:
        raw = manifest_bytes(manifest)  # hashed as read: the key covers the manifest's exact content
        h.update(b"manifest:" + hashlib.sha256(raw).digest())
        try:
            files = [Path(row["path"]) for row in parse_manifest(raw, manifest)]
        except ValueError as exc:
            raise ValueError(f"FAD reference manifest {exc}") from exc
        names = [str(p) for p in files]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*")
                       if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file() and not is_temp(p))
        names = [str(p.relative_to(root)) for p in files]
    else:
        raise FileNotFoundError(f"FAD reference {root}: not a manifest (data.jsonl[.gz]) or a folder of audio")
    if limit is not None:
        files, names = files[:limit], names[:limit]
        h.update(f"limit:{limit}".encode())
    if not files:
        raise FileNotFoundError(f"FAD reference {root} holds no audio file")
    for name, f in zip(names, files, strict=True):
        h.update(f"{name}\0{file_digest(f)}\n".encode())
    return files, h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, streamed (bounded memory); "missing" / "unreadable" when it cannot be read.

    Args:
        path: the file.
    """
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable:{exc.errno}"


def cache_key(content_hash: str, model_identity: str) -> str:
    """Cache key of reference statistics.

    Args:
        content_hash: from `reference_files`.
        model_identity: `ClapEmbedder.identity` (towers, checkpoint identity, windowing recipe).
    """
    return hashlib.sha256(f"{content_hash}|{model_identity}".encode()).hexdigest()[:24]


def load_stats(path: Path) -> tuple[GaussianStats, dict] | None:
    """Read cached statistics and their provenance, or None when absent or unreadable (then recomputed).

    Args:
        path: the `.npz` file.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
            return GaussianStats(mu=z["mu"], sigma=z["sigma"], n=int(z["n"])), meta
    except (OSError, KeyError, ValueError, EOFError) as exc:
        logger.warning("ignoring unreadable FAD stats cache %s: %s", path, exc)
        return None


def save_stats(path: Path, stats: GaussianStats, meta: dict | None = None) -> None:
    """Write statistics atomically (a concurrent reader sees the old file or the new one, never half).

    Args:
        path: the `.npz` file.
        stats: what to store.
        meta: JSON-serialisable provenance stored beside the arrays.
    """
    from zalo_music.fileio import atomic_path, remove_stale_temps_of

    remove_stale_temps_of(path)  # a killed run's half-written cache
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, mu=stats.mu, sigma=stats.sigma, n=np.int64(stats.n),
                     meta=np.array(json.dumps(meta or {})))


def reference_stats(path: str | os.PathLike, embed: tp.Callable[[list[Path]], tp.Any], model_identity: str,
                    cache_dir: str | os.PathLike | None, limit: int | None = None
                    ) -> tuple[GaussianStats, bool, dict[str, str]]:
    """Statistics of a reference set, from the cache when possible.

    Args:
        path: reference (see `reference_files`).
        embed: maps the reference files to `[N, D]` embeddings, or to `(embeddings, {index: reason})` when
            some files could not be embedded (they are left out); only called on a cache miss.
        model_identity: identity of the embedding model (`ClapEmbedder.identity`), part of the cache key.
        cache_dir: where `<key>.npz` files live; None disables caching.
        limit: use only the first `limit` reference files.
    Returns:
        `(stats, cache_hit, skipped)`; `skipped` maps each reference file left out to its reason.
    Raises:
        ValueError: no reference file could be embedded.
    """
    files, content = reference_files(path, limit)
    cache_path = Path(cache_dir) / f"{cache_key(content, model_identity)}.npz" if cache_dir else None
    if cache_path is not None:
        cached = load_stats(cache_path)
        if cached is not None:
            stats, meta = cached
            logger.info("FAD reference stats: cache hit %s (%d clips)", cache_path, stats.n)
            return stats, True, dict(meta.get("skipped") or {})
    result = embed(files)
    emb, failed = result if isinstance(result, tuple) else (result, {})
    skipped = {str(files[i]): reason for i, reason in sorted(failed.items())}
    for f, reason in skipped.items():
        logger.warning("FAD reference: skipping %s: %s", f, reason)
    if len(emb) == 0:
        raise ValueError(f"FAD reference {path}: none of its {len(files)} clips could be decoded "
                         f"(first: {next(iter(skipped.values()), '?')})")
    stats = GaussianStats.from_embeddings(emb)
    if cache_path is not None:
        save_stats(cache_path, stats, {"reference": str(path), "model": model_identity, "n": stats.n,
                                       "skipped": skipped})
        logger.info("FAD reference stats: cached %s (%d clips)", cache_path, stats.n)
    return stats, False, skipped
