"""How exact the 30-s loop augmentation is in token space: tiled codes vs codes of the looped audio.

Tiling a clip's codes 3x is not bit-identical to encoding the clip's audio looped 3x: near each seam the
codec's convolutions (and, for EnCodec 32 kHz, its LSTM) see the neighbouring copy instead of the
reflection padding they saw at the clip's edges. `compare_loop` measures the agreement, overall and away
from the seams.
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

import numpy as np
import torch

from .store import SplitCodes


@torch.no_grad()
def loop_agreement(model: tp.Any, wav: torch.Tensor, clip_codes: np.ndarray, repeat: int = 3,
                   seam_frames: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Which codes of the clip's audio looped `repeat` times equal its cached codes tiled `repeat` times.

    Args:
        model: the compression model that wrote the cache.
        wav: the clip's audio `[C, T]`, at the model's rate and channels.
        clip_codes: the clip's cached codes `[K, frames]`.
        repeat: loop count (3: 10 s -> 30 s).
        seam_frames: frames on each side of a seam counted as "at the seam".
    Returns:
        `(equal, away)`: `equal` is `[K, T]` booleans, `away` is `[T]`, False within `seam_frames` of a seam.
    """
    looped, _ = model.encode(wav.to(next(model.parameters()).device).repeat(1, repeat)[None])
    looped = looped[0].cpu().numpy()
    tiled = np.tile(clip_codes, (1, repeat))
    t = min(looped.shape[-1], tiled.shape[-1])
    frames = clip_codes.shape[-1]
    away = np.ones(t, dtype=bool)
    for s in range(1, repeat):
        away[max(0, s * frames - seam_frames):s * frames + seam_frames] = False
    return looped[:, :t] == tiled[:, :t], away


@torch.no_grad()
def compare_loop(model: tp.Any, split_dir: str | Path, n: int = 4, repeat: int = 3, seam_frames: int = 2) -> dict:
    """Agreement of tiled cached codes with the codes of the looped audio, on the first `n` clips of a split.

    Args:
        model: the compression model that wrote the cache.
        split_dir: a split folder of the cache.
        n: clips to compare.
        repeat: loop count (3: 10 s -> 30 s).
        seam_frames: frames on each side of a seam counted as "at the seam".
    Returns:
        `agree` (fraction of equal codes), `agree_away_from_seams`, `agree_first_codebook`, `frames`.
    """
    from audiocraft.data.audio import audio_read
    from audiocraft.data.audio_utils import convert_audio

    codes = SplitCodes(split_dir)
    equal, away, first = [], [], []
    for i in range(min(n, len(codes))):
        wav, sr = audio_read(codes.rows[i]["path"])
        wav = convert_audio(wav, sr, model.sample_rate, model.channels)
        same, mask = loop_agreement(model, wav, codes.codes(i), repeat, seam_frames)
        equal.append(same.mean())
        first.append(same[0].mean())
        away.append(same[:, mask].mean())
    return {"agree": float(np.mean(equal)), "agree_away_from_seams": float(np.mean(away)),
            "agree_first_codebook": float(np.mean(first)), "frames": int(same.shape[-1]),
            "frames_away": int(mask.sum())}
