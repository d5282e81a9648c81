"""Cache key of a token cache: which codec, which rates, which segment policy produced the codes.

A cache is only valid for the exact compression model that wrote it: same checkpoint string, same seed for
audiocraft's random debug codec, and (the ground truth) the same weights, checked through a hash of the state
dict. The key also records the sample rate, frame rate, number of codebooks, cardinality and the segment
policy (each clip encoded whole; `segment_duration` is the encoded unit), so that a cache written under
another policy is refused instead of silently trained on.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing as tp

import torch

#: Bump when the on-disk layout or the encoding policy changes: older caches are then refused.
CACHE_VERSION = 1
DEBUG_CODEC = "debug_compression_model"


class StaleTokenCacheError(ValueError):
    """A token cache that does not match the compression model / policy of the current config."""


def state_dict_sha(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a model's state dict: names, dtypes, shapes and raw bytes.

    Args:
        model: the compression model (wrapped or not: wrappers hold the same tensors).
    """
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def is_debug_codec(checkpoint: str) -> bool:
    """Whether `compression_model_checkpoint` names audiocraft's random-init debug codec."""
    return str(checkpoint).rstrip("/").split("/")[-1] == DEBUG_CODEC


def cache_key(checkpoint: str, seed: int | None, model: tp.Any, segment_duration: float) -> dict:
    """The key of the codes `model` writes for clips encoded whole, `segment_duration` seconds long.

    Args:
        checkpoint: `compression_model_checkpoint` of the config (e.g. `//pretrained/facebook/encodec_32khz`).
        seed: the XP seed (only part of the key for the random debug codec; None otherwise).
        model: the audiocraft `CompressionModel` (after `get_wrapped_compression_model`).
        segment_duration: the encoded unit in seconds (the clip duration of the tokenized dataset).
    """
    return {
        "version": CACHE_VERSION,
        "codec": {"checkpoint": str(checkpoint), "seed": int(seed) if is_debug_codec(checkpoint) else None,
                  "state_sha": state_dict_sha(model)},
        "sample_rate": int(model.sample_rate),
        "frame_rate": float(model.frame_rate),
        "n_q": int(model.num_codebooks),
        "cardinality": int(model.cardinality),
        "segment": {"policy": "whole_clip", "segment_duration": round(float(segment_duration), 6)},
    }


def key_hash(key: dict) -> str:
    """Short stable hash of a key (12 hex digits)."""
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def folder_name(key: dict) -> str:
    """Cache folder name: readable codec slug + key hash, e.g. `facebook_encodec_32khz-1a2b3c4d5e6f`."""
    codec = key["codec"]
    name = str(codec["checkpoint"]).replace("//pretrained/", "", 1)
    if name.startswith("/"):  # a checkpoint file (the tiny recipe's debug codec): its name, not its folders
        name = name.rsplit("/", 1)[-1].removesuffix(".th")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
    if codec.get("seed") is not None:
        slug += f"-seed{codec['seed']}"
    return f"{slug[:80]}-{key_hash(key)}"


def key_diff(expected: dict, found: dict, prefix: str = "") -> list[str]:
    """Human-readable list of the fields where two keys differ (`codec.state_sha: a != b`)."""
    out = []
    for name in sorted(set(expected) | set(found)):
        a, b = expected.get(name), found.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            out += key_diff(a, b, f"{prefix}{name}.")
        elif a != b:
            out.append(f"{prefix}{name}: this XP {a!r} != cache {b!r}")
    return out


def check_key(expected: dict, found: dict, where: str, fix: str) -> None:
    """Refuse a cache whose key differs from the expected one.

    Args:
        expected: key of the current config's compression model and policy.
        found: key recorded in the cache's `meta.json`.
        where: the cache folder (for the message).
        fix: the command that rebuilds a matching cache.
    Raises:
        StaleTokenCacheError: naming both keys, the differing fields and the fix.
    """
    if expected == found:
        return
    raise StaleTokenCacheError(
        f"stale token cache {where}: it was written by another compression model or segment policy.\n"
        f"  differs: {'; '.join(key_diff(expected, found)) or 'layout'}\n"
        f"  this XP expects key {key_hash(expected)} = {json.dumps(expected, sort_keys=True)}\n"
        f"  the cache holds key {key_hash(found)} = {json.dumps(found, sort_keys=True)}\n"
        f"  fix: {fix}")
