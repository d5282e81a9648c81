"""`loop` section: the 30-s loop augmentation in token space vs the codes of the looped audio (EnCodec 32 kHz)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import benchkit

from .common import recipe_argv


def _read(model, codes, i: int):
    """Clip i of a token split as the codec takes it (`tokenize` encoded this audio)."""
    from audiocraft.data.audio import audio_read
    from audiocraft.data.audio_utils import convert_audio

    wav, sr = audio_read(codes.rows[i]["path"])
    return convert_audio(wav, sr, model.sample_rate, model.channels)


def _distinct(codes) -> list[int]:
    """Distinct codes per codebook in a [K, T] array."""
    import numpy as np

    return [int(len(np.unique(row))) for row in codes]


def _fit_codebooks(codec, wavs, seed: int = 0) -> None:
    """Refill a transformers-EnCodec's codebooks with frames of its own encoder's output (residual, per stage).

    The stand-in's codebooks are N(0, 1) vectors that sit far from what the random encoder outputs, so every frame
    quantizes to the same code (see `loop.standin.distinct_codes_per_codebook`) and any agreement is trivially
    100%. Drawing each stage's codebook from the residual frames of the clips makes the quantizer use many codes;
    the encoder (convolutions + LSTM, the part whose context at the seams matters) is unchanged.
    """
    import torch

    hf = codec.model  # audiocraft's HFEncodecCompressionModel wraps transformers' EncodecModel
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        frames = torch.cat([hf.encoder(w[None]).transpose(1, 2).reshape(-1, hf.config.codebook_dim) for w in wavs])
        residual = frames.clone()
        for layer in hf.quantizer.layers:
            book = layer.codebook
            idx = torch.randint(len(residual), (book.embed.shape[0],), generator=g)
            jitter = 1e-3 * residual.std() * torch.randn(book.embed.shape, generator=g)
            book.embed.copy_(residual[idx] + jitter)
            book.embed_avg.copy_(book.embed)
            nearest = torch.cdist(residual, book.embed).argmin(dim=1)
            residual = residual - book.embed[nearest]


def section_loop(a: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from zalo_music.tokens.encode import compose_config, load_codec, tokenize
    from zalo_music.tokens.loop import compare_loop, loop_agreement
    from zalo_music.tokens.store import SplitCodes

    # Always on CPU: compare_loop feeds the model CPU tensors, and the cached codes must come from the same device
    # as the looped audio's (on CUDA its own CPU cache, not the train section's; on CPU the same cache).
    argv = recipe_argv(a, tokens=True)
    out = None if a.device == "cpu" else Path(os.environ["ZALO_MUSIC_DATA_DIR"]) / "tokens_loop_cpu"
    t0 = time.perf_counter()
    summary = tokenize(argv, out=out, device="cpu", quiet=True)
    tokenize_s = time.perf_counter() - t0
    cfg = compose_config(argv)
    model = load_codec(cfg, "cpu")
    split = Path(summary["cache"]) / "train"
    codes = SplitCodes(split)
    n = min(a.loop_n, len(codes))
    equal, away, first, per_cb, per_cb_away = [], [], [], [], []
    with benchkit.Peak("cpu") as peak, torch.no_grad():
        t = time.perf_counter()
        for i in range(n):  # one encode of each looped clip; compare_loop's figures and per codebook
            same, mask = loop_agreement(model, _read(model, codes, i), codes.codes(i))
            equal.append(same.mean())
            away.append(same[:, mask].mean())
            first.append(same[0].mean())
            per_cb.append(same.mean(axis=1))
            per_cb_away.append(same[:, mask].mean(axis=1))
        wall = time.perf_counter() - t
    # Cross-check on the first clip(s): the project's own function gives the same figures as the loop above.
    check = compare_loop(model, split, n=min(a.loop_check, n), repeat=3, seam_frames=2)
    mine = float(np.mean(equal[:min(a.loop_check, n)]))
    distinct = np.max([_distinct(codes.codes(i)) for i in range(n)], axis=0).tolist()
    res = {"agree": round(float(np.mean(equal)), 4), "agree_away_from_seams": round(float(np.mean(away)), 4),
           "agree_first_codebook": round(float(np.mean(first)), 4),
           "agree_per_codebook": [round(float(x), 4) for x in np.mean(per_cb, axis=0)],
           "agree_away_from_seams_per_codebook": [round(float(x), 4) for x in np.mean(per_cb_away, axis=0)],
           "distinct_codes_per_codebook": distinct,
           "compare_loop_check": {"clips": min(a.loop_check, n), "agree": round(check["agree"], 4),
                                  "same_as_ours": abs(check["agree"] - mine) < 1e-9},
           "clips": n, "frames_compared": int(same.shape[-1]), "repeat": 3, "seam_frames": 2,
           "codec": str(cfg.compression_model_checkpoint), "device": "cpu", "frame_rate": model.frame_rate,
           "n_q": model.num_codebooks, "cardinality": model.cardinality, "compare_s": round(wall, 1),
           "tokenize_s": round(tokenize_s, 1), **peak.figures(), **benchkit.process_peak(),
           "caveat": "random stand-in EnCodec weights: the agreement is NOT representative of the real codec"}
    if max(distinct) <= 4:
        res["degenerate"] = (f"the stand-in codec uses at most {max(distinct)} distinct codes per codebook on these "
                             "clips: every frame quantizes to the same code, so this agreement is trivially ~100%")
    if a.loop_fit:
        res["fitted_codebooks"] = _loop_fitted(model, codes, n)
    return res


def _loop_fitted(model, codes, n: int) -> dict:
    """The same comparison with codebooks drawn from the encoder's own residual frames (`_fit_codebooks`)."""
    import numpy as np
    import torch

    from zalo_music.tokens.loop import loop_agreement

    wavs = [_read(model, codes, i) for i in range(n)]
    t0 = time.perf_counter()
    _fit_codebooks(model, wavs)
    equal, away, per_cb, per_cb_away, per_copy, distinct = [], [], [], [], [], []
    with torch.no_grad():
        for wav in wavs:
            clip = model.encode(wav[None])[0][0].cpu().numpy()  # what `tokenize` caches (whole clip)
            same, mask = loop_agreement(model, wav, clip)
            frames = clip.shape[-1]
            equal.append(same.mean())
            away.append(same[:, mask].mean())
            per_cb.append(same.mean(axis=1))
            per_cb_away.append(same[:, mask].mean(axis=1))
            per_copy.append([same[:, c * frames:(c + 1) * frames].mean() for c in range(3)])
            distinct.append(_distinct(clip))
    return {"agree": round(float(np.mean(equal)), 4), "agree_away_from_seams": round(float(np.mean(away)), 4),
            "agree_per_codebook": [round(float(x), 4) for x in np.mean(per_cb, axis=0)],
            "agree_away_from_seams_per_codebook": [round(float(x), 4) for x in np.mean(per_cb_away, axis=0)],
            "agree_per_copy": [round(float(x), 4) for x in np.mean(per_copy, axis=0)],
            "distinct_codes_per_codebook": np.max(distinct, axis=0).tolist(), "clips": n,
            "seconds": round(time.perf_counter() - t0, 1),
            "method": "stand-in encoder (random convs + LSTM) unchanged; each residual stage's 2048 codes drawn "
                      "from these clips' encoder frames; clip codes = encode(clip) whole, as `tokenize` does"}
