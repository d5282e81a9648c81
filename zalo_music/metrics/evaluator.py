"""CLAP + FAD + FAS + CLAS from embeddings: the computation shared by the solver and the score command."""

from __future__ import annotations

import dataclasses
import os
import typing as tp
from pathlib import Path

import numpy as np

from .audio import ClipReadError, WindowInfo, load_clip_window
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
        fad_inf_method: "subsets" (without replacement, N/5..N) or "bootstrap" (fadtk's: with replacement,
            25 sizes from 500 to N), see `fad.fad_infinity`.
        stats_cache: folder of cached reference statistics (None: no cache).
    """

    clap: ClapSpec = ClapSpec()
    fad_tau: float = 1.0
    fad_inf: bool = False
    fad_inf_sizes: tuple[int, ...] | None = None
    fad_inf_method: str = "subsets"
    stats_cache: str | None = None


def is_empty_description(text: tp.Any) -> bool:
    """The one rule, shared by `score` and the evaluate stage, for items that are left out of the scores.

    An item whose description is missing, not a string, or only whitespace has nothing for CLAP's text tower
    to compare with: it is excluded from CLAP and from FAD, and counted (`n_empty_descriptions`).

    Args:
        text: the item's description.
    """
    return not isinstance(text, str) or not text.strip()


def embed_files(embedder: ClapEmbedder, files: tp.Sequence[str | os.PathLike], batch_size: int | None = None,
                progress: bool | None = None, desc: str = "CLAP audio"
                ) -> tuple[np.ndarray, list[WindowInfo | None], dict[int, str]]:
    """Audio embeddings of files, decoding and embedding one batch at a time (bounded memory).

    A file that cannot be decoded does not stop the pass: it becomes that item's named problem.

    Args:
        embedder: the CLAP model.
        files: audio files.
        batch_size: clips per batch (default: the embedder's).
        progress: show a tqdm bar with ETA on stderr (None: only on a terminal and for more than one batch).
        desc: the bar's label.
    Returns:
        `(embeddings, infos, failed)`: `[M, D]` embeddings of the M decodable files in input order, per-file
        window infos (None for a failed file) and `{index: reason}` of the files that failed.
    """
    from tqdm.auto import tqdm

    bs = batch_size or embedder.spec.batch_size
    embs: list[np.ndarray] = []
    infos: list[WindowInfo | None] = []
    failed: dict[int, str] = {}
    disable = (not progress) if progress is not None else (None if len(files) > bs else True)
    with tqdm(total=len(files), desc=desc, unit="clip", disable=disable, dynamic_ncols=True) as bar:
        for i in range(0, len(files), bs):
            windows = []
            for j, f in enumerate(files[i:i + bs], start=i):
                try:
                    w, info = load_clip_window(Path(f))
                except ClipReadError as exc:
                    failed[j] = str(exc)
                    infos.append(None)
                    continue
                windows.append(w)
                infos.append(info)
            if windows:
                embs.append(embedder.embed_windows(np.stack(windows), batch_size=bs))
            bar.update(min(bs, len(files) - i))
    return (np.concatenate(embs) if embs else np.zeros((0, 512))), infos, failed


#: CLAP embedding dimension: FAD from fewer generated clips than this is strongly biased upwards.
FAD_MIN_RELIABLE_N = 512


def scores_from_embeddings(text_emb: np.ndarray, audio_emb: np.ndarray, ref: GaussianStats | None,
                           settings: ClasSettings, warnings: list[str] | None = None) -> tuple[dict, np.ndarray]:
    """Every metric from matching text/audio embeddings and reference statistics.

    Args:
        text_emb: `[N, D]` description embeddings.
        audio_emb: `[N, D]` embeddings of the generated clips, row i matching description i.
        ref: statistics of the reference set (None: CLAP only).
        settings: tau, FAD-infinity.
        warnings: when given, human-readable caveats are appended to it (small N, FAD-inf subsets).
    Returns:
        `(metrics, per_item_cosines)`; metrics has `clap` and, with a reference, `fad`, `fas`, `clas`
        (+ `fad_inf`, `fas_inf`, `clas_inf` when enabled).
    """
    warnings = warnings if warnings is not None else []
    cos = clap_cosines(text_emb, audio_emb)
    metrics: dict = {"clap": float(cos.mean()) if cos.size else float("nan"), "n_items": int(cos.size)}
    if ref is not None:
        fad = fad_from_stats(GaussianStats.from_embeddings(audio_emb), ref)
        metrics.update(fad=fad, fas=fas(fad, settings.fad_tau))
        metrics["clas"] = clas(metrics["clap"], metrics["fas"])
        n = audio_emb.shape[0]
        if n < FAD_MIN_RELIABLE_N:
            warnings.append(
                f"FAD from N={n} generated clips (< {FAD_MIN_RELIABLE_N}, the CLAP embedding dimension) is "
                "strongly biased upwards and depends on N: compare FAD/FAS/CLAS only between runs with the same "
                "N, or use the N-independent estimate (--fad-inf, zalo.eval.fad_inf=true)")
        if ref.n < FAD_MIN_RELIABLE_N:
            warnings.append(f"FAD reference has only {ref.n} clips (< {FAD_MIN_RELIABLE_N}): its covariance is "
                            "rank-deficient; FAD values are only comparable against this same reference")
        if settings.fad_inf:
            inf = fad_infinity(audio_emb, ref, settings.fad_inf_sizes, method=settings.fad_inf_method)
            warnings.extend(inf["warnings"])
            metrics["fad_inf"] = inf["fad_inf"]
            # The extrapolation can dip below 0 by noise; a distance is never negative.
            metrics["fas_inf"] = fas(max(inf["fad_inf"], 0.0), settings.fad_tau)
            metrics["clas_inf"] = clas(metrics["clap"], metrics["fas_inf"])
    return metrics, cos
