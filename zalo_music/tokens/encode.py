"""`zalo-music tokenize`: encode every clip of a prepared dataset once with the XP's compression model.

The config is composed exactly as `dora run` composes it (same overrides, through the Dora main of
`zalo_music.train`), so the codec, sample rate, channels and segment policy are the XP's own.
"""

from __future__ import annotations

import logging
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch

from .. import env
from ..data.manifest import read_manifest
from ..fileio import exclusive_lock, remove_stale_temps, write_json
from . import store
from .key import cache_key, folder_name

logger = logging.getLogger(__name__)
SPLITS = ("train", "valid")


def compose_config(overrides: tp.Sequence[str]):
    """The XP config `dora run OVERRIDES` would use (no XP folder is created).

    Args:
        overrides: Hydra overrides, e.g. `["solver=zalo/tiny", "dset=zalo/demo"]`.
    """
    from ..train import main  # imports audiocraft after zalo_music has set its environment

    return main.get_xp(list(overrides)).cfg


def load_codec(cfg, device: str = "cpu"):
    """The compression model the solver of `cfg` trains on, in eval mode.

    Loaded by audiocraft's own loader, as the solver loads it (`CompressionSolver.model_from_checkpoint`:
    `//pretrained/NAME`, an exported file such as the tiny recipe's persisted debug codec, a checkpoint path or
    `//sig/SIG`), then wrapped like the solver wraps it (`compression_model_n_q`, stereo interleaving).

    Args:
        cfg: composed XP config.
        device: torch device for encoding.
    """
    from audiocraft.models.builders import get_wrapped_compression_model
    from audiocraft.solvers.compression import CompressionSolver

    from .. import debug_codec

    ckpt = str(cfg.compression_model_checkpoint)
    debug_codec.ensure(ckpt)
    model = CompressionSolver.model_from_checkpoint(ckpt, device)
    model = get_wrapped_compression_model(model, cfg)
    return model.to(device).eval()


def token_repeat(cfg) -> int:
    """How many times a cached clip is tiled in time (`zalo.tokens.repeat`, the 30-s loop augmentation)."""
    return int(cfg.zalo.tokens.repeat)


def encoded_unit(cfg) -> float:
    """Seconds of audio encoded per cached clip: the segment duration, divided by the token-space tiling."""
    seg = cfg.dataset.segment_duration
    if seg is None:
        seg = cfg.zalo.clip_duration
    return float(seg) / token_repeat(cfg)


def dataset_name(cfg) -> str:
    """Name under which the cache of `cfg`'s dataset lives: `zalo.dataset`."""
    return str(cfg.zalo.dataset)


def cache_root(cfg=None, override: str | Path | None = None) -> Path:
    """Root of the token caches: `override`, else `zalo.tokens.dir`, else `$ZALO_MUSIC_DATA_DIR/tokens`."""
    if override:
        return Path(override).expanduser().resolve()
    configured = None
    if cfg is not None:
        configured = cfg.zalo.tokens.dir
    return Path(configured).expanduser().resolve() if configured else env.data_dir() / "tokens"


def split_manifest(cfg, split: str) -> Path:
    """Manifest folder of `split` (`datasource.<split>`)."""
    return Path(str(cfg.datasource[split]))


@torch.no_grad()
def _encode_batch(model, wavs: list[torch.Tensor], device: str) -> list[np.ndarray]:
    codes, scale = model.encode(torch.stack(wavs).to(device))
    assert scale is None, "a scaled compression model cannot feed MusicGen"
    return [c.cpu().numpy().astype(np.int16) for c in codes]


def _encode_rows(model, rows: list[dict], cfg, batch_size: int, device: str, bar) -> list[np.ndarray]:
    from audiocraft.data.audio import audio_read
    from audiocraft.data.audio_utils import convert_audio

    wavs = []
    for r in rows:
        wav, sr = audio_read(r["path"])
        wavs.append(convert_audio(wav, sr, int(cfg.sample_rate), int(cfg.channels)))
    out: list[np.ndarray | None] = [None] * len(rows)
    # Batch only clips of equal length: zero padding would change the codes of a shorter clip's last frames
    # (the codec's convolutions see past the end), and the cache must hold each clip's own codes.
    by_len: dict[int, list[int]] = {}
    for j, w in enumerate(wavs):
        by_len.setdefault(w.shape[-1], []).append(j)
    for idxs in by_len.values():
        for s in range(0, len(idxs), batch_size):
            chunk = idxs[s:s + batch_size]
            for j, c in zip(chunk, _encode_batch(model, [wavs[j] for j in chunk], device), strict=True):
                out[j] = c
            bar.update(len(chunk))
    return tp.cast(list, out)


def tokenize(overrides: tp.Sequence[str], dataset: str | None = None, out: str | Path | None = None,
             batch_size: int = 16, device: str = "cpu", shard_size: int = 512, quiet: bool = False) -> dict:
    """Encode the train and valid clips of the config's dataset into a token cache (resumable).

    Args:
        overrides: Dora/Hydra overrides of the XP, e.g. `["solver=zalo/tiny", "dset=zalo/demo"]`.
        dataset: prepared dataset name (adds `zalo.dataset=NAME`).
        out: cache root (default `zalo.tokens.dir`, else `$ZALO_MUSIC_DATA_DIR/tokens`).
        batch_size: clips per encoder forward pass.
        device: torch device of the encoder.
        shard_size: clips per shard (the unit of resumption).
        quiet: no progress bar.
    Returns:
        Summary: cache folder, key, clips encoded / already cached per split, seconds.
    """
    from tqdm import tqdm

    argv = list(overrides) + ([f"zalo.dataset={dataset}"] if dataset else [])
    cfg = compose_config(argv)
    t0 = time.time()
    model = load_codec(cfg, device)
    key = cache_key(str(cfg.compression_model_checkpoint), int(cfg.seed), model, encoded_unit(cfg))
    folder = cache_root(cfg, out) / dataset_name(cfg) / folder_name(key)
    # one writer per cache (grid XPs may tokenize the same dataset at once: the second waits, then finds it
    # done); what a killed run left is removed first
    with exclusive_lock(folder / ".tokenize.lock", f"token cache {folder}", wait=True):
        remove_stale_temps(folder)
        meta_path = folder / "meta.json"
        if meta_path.is_file():
            from .key import check_key

            check_key(key, store.read_meta(folder)["key"], str(folder), f"remove {folder} and tokenize again")
        meta = {"key": key, "dataset": dataset_name(cfg), "overrides": argv, "splits": {}}
        write_json(meta_path, meta)
        summary: dict = {"cache": str(folder), "key": key, "splits": {}}
        for split in SPLITS:
            rows = store.as_rows(read_manifest(split_manifest(cfg, split)))
            split_dir = folder / split
            split_dir.mkdir(parents=True, exist_ok=True)
            done_rows = store.read_index(split_dir)
            paths = [r["path"] for r in rows]
            if done_rows is not None and [r["path"] for r in done_rows] == paths:
                problems = store.split_problems(split_dir, done_rows)
                if not problems:
                    summary["splits"][split] = {"clips": len(rows), "encoded": 0, "cached": len(rows)}
                    continue
                # A finished split whose shard was damaged since: the shard loop below re-encodes only that shard.
                logger.warning("token cache %s: %s; re-checking every shard", split_dir, "; ".join(problems))
            n_shards = (len(rows) + shard_size - 1) // shard_size
            encoded = cached = 0
            with tqdm(total=len(rows), desc=f"tokenize {dataset_name(cfg)}/{split}", unit="clip",
                      disable=quiet) as bar:
                for i in range(n_shards):
                    chunk = rows[i * shard_size:(i + 1) * shard_size]
                    if store.shard_done(split_dir, i, [r["path"] for r in chunk]):
                        cached += len(chunk)
                        bar.update(len(chunk))
                        continue
                    codes = _encode_rows(model, chunk, cfg, batch_size, device, bar)
                    store.write_shard(split_dir, i, codes, [{**r, "frames": int(c.shape[-1])}
                                                            for r, c in zip(chunk, codes, strict=True)])
                    encoded += len(chunk)
            store.write_index(split_dir, n_shards)
            summary["splits"][split] = {"clips": len(rows), "encoded": encoded, "cached": cached}
        meta["splits"] = {s: v["clips"] for s, v in summary["splits"].items()}
        write_json(meta_path, meta)
    summary["seconds"] = round(time.time() - t0, 2)
    return summary
