"""CLAP + FAD + FAS + CLAS from embeddings: the computation shared by the solver and the score command."""

from __future__ import annotations

import dataclasses
import os
import typing as tp
from pathlib import Path

import numpy as np

from .audio import WindowInfo, clap_window, read_clip
from .clap import ClapEmbedder, ClapSpec, clap_cosines
from .fad import GaussianStats, clas, fad_from_stats, fad_infinity, fas


@dataclasses.dataclass(frozen=True)
class ClasSettings:
    """How the scores are computed (the `zalo.eval` config block, or the score command's options).

    Args:
        clap: which CLAP model embeds texts and audio (also the FAD embedding).
        fad_tau: FAS temperature: FAS = exp(-FAD / fad_tau).
        fad_inf: also report FAD-infinity (and FAS/CLAS from it as `fas_inf`/`clas_inf`).
        fad_inf_sizes: subset sizes for FAD-infinity (None: automatic).
        stats_cache: folder of cached reference statistics (None: no cache).
    """

    clap: ClapSpec = ClapSpec()
    fad_tau: float = 1.0
    fad_inf: bool = False
    fad_inf_sizes: tuple[int, ...] | None = None
    stats_cache: str | None = None


def embed_files(embedder: ClapEmbedder, files: tp.Sequence[str | os.PathLike],
                batch_size: int | None = None) -> tuple[np.ndarray, list[WindowInfo]]:
    """Audio embeddings of files, decoding and embedding one batch at a time (bounded memory).

    Args:
        embedder: the CLAP model.
        files: audio files.
        batch_size: clips per batch (default: the embedder's).
    Returns:
        `([N, D] embeddings, per-file window infos)`.
    """
    bs = batch_size or embedder.spec.batch_size
    embs, infos = [], []
    for i in range(0, len(files), bs):
        windows = []
        for f in files[i:i + bs]:
            w, info = clap_window(*read_clip(Path(f)))
            windows.append(w)
            infos.append(info)
        embs.append(embedder.embed_windows(np.stack(windows), batch_size=bs))
    return (np.concatenate(embs) if embs else np.zeros((0, 512))), infos


def scores_from_embeddings(text_emb: np.ndarray, audio_emb: np.ndarray, ref: GaussianStats | None,
                           settings: ClasSettings) -> tuple[dict, np.ndarray]:
    """Every metric from matching text/audio embeddings and reference statistics.

    Args:
        text_emb: `[N, D]` description embeddings.
        audio_emb: `[N, D]` embeddings of the generated clips, row i matching description i.
        ref: statistics of the reference set (None: CLAP only).
        settings: tau, FAD-infinity.
    Returns:
        `(metrics, per_item_cosines)`; metrics has `clap` and, with a reference, `fad`, `fas`, `clas`
        (+ `fad_inf`, `fas_inf`, `clas_inf` when enabled).
    """
    cos = clap_cosines(text_emb, audio_emb)
    metrics: dict = {"clap": float(cos.mean()) if cos.size else float("nan"), "n_items": int(cos.size)}
    if ref is not None:
        fad = fad_from_stats(GaussianStats.from_embeddings(audio_emb), ref)
        metrics.update(fad=fad, fas=fas(fad, settings.fad_tau))
        metrics["clas"] = clas(metrics["clap"], metrics["fas"])
        if settings.fad_inf:
            inf = fad_infinity(audio_emb, ref, settings.fad_inf_sizes)
            metrics["fad_inf"] = inf["fad_inf"]
            # The extrapolation can dip below 0 by noise; a distance is never negative.
            metrics["fas_inf"] = fas(max(inf["fad_inf"], 0.0), settings.fad_tau)
            metrics["clas_inf"] = clas(metrics["clap"], metrics["fas_inf"])
    return metrics, cos
