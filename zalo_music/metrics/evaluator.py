"""CLAP + FAD + FAS + CLAS from embeddings: the computation shared by the solver and the score command."""

from __future__ import annotations

import dataclasses
import os
import typing as tp

import numpy as np

from .audio import WindowInfo
from .clap import ClapEmbedder, ClapSpec, clap_cosines
from .fad import GaussianStats
from .registry import FAD_MIN_RELIABLE_N, enabled  # noqa: F401  (FAD_MIN_RELIABLE_N: re-exported for callers)
from .windows import window_batches


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
        metrics: the metrics that run (`registry.enabled`: the required ones and the optional ones switched on).
    """

    clap: ClapSpec = ClapSpec()
    fad_tau: float = 1.0
    fad_inf: bool = False
    fad_inf_sizes: tuple[int, ...] | None = None
    fad_inf_method: str = "subsets"
    stats_cache: str | None = None
    metrics: tuple[str, ...] = enabled()


def is_empty_description(text: tp.Any) -> bool:
    """The one rule, shared by `score` and the evaluate stage, for items that are left out of the scores.

    An item whose description is missing, not a string, or only whitespace has nothing for CLAP's text tower
    to compare with: it is excluded from CLAP and from FAD, and counted (`n_empty_descriptions`).

    Args:
        text: the item's description.
    """
    return not isinstance(text, str) or not text.strip()


def embed_files(embedder: ClapEmbedder, files: tp.Sequence[str | os.PathLike], batch_size: int | None = None,
                progress: bool | None = None, desc: str = "CLAP audio", dtype: str = "float32"
                ) -> tuple[np.ndarray, list[WindowInfo | None], dict[int, str]]:
    """Audio embeddings of files, one batch at a time (bounded memory), the next batch decoded on CPU threads
    while this one is embedded (`windows.window_batches`).

    A file that cannot be decoded does not stop the pass: it becomes that item's named problem.

    Args:
        embedder: the CLAP model.
        files: audio files.
        batch_size: clips per batch (default: the embedder's).
        progress: show a tqdm bar with ETA on stderr (None: only on a terminal and for more than one batch).
        desc: the bar's label.
        dtype: the audio tower's precision (`ClapEmbedder.embed_windows`); the judge's is float32.
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
        for start, reads in window_batches(files, bs):
            windows = []
            for j, (window, info, reason) in enumerate(reads, start=start):
                if reason is not None:
                    failed[j] = reason
                else:
                    windows.append(window)
                infos.append(info)
            if windows:
                embs.append(embedder.embed_windows(np.stack(windows), batch_size=bs, dtype=dtype))
            bar.update(len(reads))
    return (np.concatenate(embs) if embs else np.zeros((0, 512))), infos, failed


def scores_from_embeddings(text_emb: np.ndarray, audio_emb: np.ndarray, ref: GaussianStats | None,
                           settings: ClasSettings, warnings: list[str] | None = None) -> tuple[dict, np.ndarray]:
    """Every enabled metric (`registry.METRICS`) from matching text/audio embeddings and reference statistics.

    Args:
        text_emb: `[N, D]` description embeddings.
        audio_emb: `[N, D]` embeddings of the generated clips, row i matching description i.
        ref: statistics of the reference set (None: the metrics that need none).
        settings: tau, FAD-infinity, the optional metrics switched on.
        warnings: when given, human-readable caveats are appended to it (small N, FAD-inf subsets).
    Returns:
        `(metrics, per_item_cosines)`; metrics has `n_items`, `clap` and, with a reference, `fad`, `fas`, `clas`
        (+ `fad_inf`, `fas_inf`, `clas_inf` when enabled), and the optional metrics switched on.
    """
    from .registry import Inputs, compute_all

    warnings = warnings if warnings is not None else []
    cos = clap_cosines(text_emb, audio_emb)
    inputs = Inputs(text_emb, audio_emb, cos, ref, settings, {}, warnings)
    metrics = compute_all(inputs, settings.metrics)
    return {**metrics, "n_items": int(cos.size)}, cos
