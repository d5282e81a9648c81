"""Find the token cache an XP trains from, and refuse one written by another codec or policy."""

from __future__ import annotations

import typing as tp
from pathlib import Path

from . import store
from .encode import cache_root, dataset_name, encoded_unit
from .key import StaleTokenCacheError, cache_key, check_key, folder_name, key_hash


def tokens_enabled(cfg) -> bool:
    """Whether the XP trains from a token cache: `zalo.tokens.path` set, or `zalo.tokens.enabled` (train_from=tokens)."""
    return bool(cfg.zalo.tokens.path) or bool(cfg.zalo.tokens.enabled)


def expected_key(cfg, model: tp.Any) -> dict:
    """Key of the codes that `model` (the solver's own compression model) writes under `cfg`'s policy."""
    return cache_key(str(cfg.compression_model_checkpoint), int(cfg.seed), model, encoded_unit(cfg))


def tokenize_hint(argv: tp.Sequence[str]) -> str:
    """The command that builds the cache for an XP launched with `argv`."""
    keep = [a for a in argv if not a.startswith(("zalo.tokens.", "train_from="))]
    return f"`zalo-music tokenize {' '.join(keep)}` (or zalo.tokens.enabled=false to train from audio)"


def resolve_cache(cfg, model: tp.Any, argv: tp.Sequence[str] = ()) -> Path:
    """The cache folder for `cfg`, checked against the solver's compression model.

    Args:
        cfg: the XP config.
        model: the solver's compression model (its state dict is hashed into the key).
        argv: the XP's overrides, to print the exact `tokenize` command in errors.
    Raises:
        StaleTokenCacheError: the cache (or every cache of the dataset) has another key.
        FileNotFoundError: no cache, or an incomplete one.
    """
    key = expected_key(cfg, model)
    fix = tokenize_hint(argv)
    explicit = cfg.zalo.tokens.path
    if explicit:
        folder = Path(str(explicit)).expanduser().resolve()
        check_key(key, store.read_meta(folder)["key"], str(folder), fix)
    else:
        root = cache_root(cfg) / dataset_name(cfg)
        folder = root / folder_name(key)
        if not (folder / "meta.json").is_file():
            others = store.existing_caches(root)
            if others:
                other_folder, other_meta = others[0]
                try:
                    check_key(key, other_meta["key"], str(other_folder), fix)
                except StaleTokenCacheError as exc:
                    raise StaleTokenCacheError(
                        f"no token cache with key {key_hash(key)} for dataset {dataset_name(cfg)!r} in {root}; "
                        f"{len(others)} cache(s) there hold other keys.\n{exc}") from None
            raise FileNotFoundError(f"no token cache for dataset {dataset_name(cfg)!r} at {folder} "
                                    f"(key {key_hash(key)}): build it with {fix}")
        check_key(key, store.read_meta(folder)["key"], str(folder), fix)
    for split in ("train", "valid"):
        if store.read_index(folder / split) is None:
            raise FileNotFoundError(f"token cache {folder} has no complete {split} split: finish it with {fix}")
    return folder
