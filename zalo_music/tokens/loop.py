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
    equal, away, first, total_away = [], [], [], 0
    for i in range(min(n, len(codes))):
        wav, sr = audio_read(codes.rows[i]["path"])
        wav = convert_audio(wav, sr, model.sample_rate, model.channels).to(next(model.parameters()).device)
        looped, _ = model.encode(wav.repeat(1, repeat)[None])
        looped = looped[0].cpu().numpy()
        tiled = np.tile(codes.codes(i), (1, repeat))
        t = min(looped.shape[-1], tiled.shape[-1])
        same = looped[:, :t] == tiled[:, :t]
        frames = codes.rows[i]["frames"]
        mask = np.ones(t, dtype=bool)
        for s in range(1, repeat):
            mask[max(0, s * frames - seam_frames):s * frames + seam_frames] = False
        equal.append(same.mean())
        first.append(same[0].mean())
        away.append(same[:, mask].mean())
        total_away = int(mask.sum())
    return {"agree": float(np.mean(equal)), "agree_away_from_seams": float(np.mean(away)),
            "agree_first_codebook": float(np.mean(first)), "frames": int(t), "frames_away": total_away}
