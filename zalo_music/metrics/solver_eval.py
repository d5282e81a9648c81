"""The CLAP/FAD/FAS/CLAS part of the evaluate stage of `ZaloMusicGenSolver` (config block `zalo.eval`).

One generation pass over the evaluate split: each batch's descriptions are generated once (same sampling
parameters and loudness normalisation as the generate stage), windowed and embedded by CLAP in batches. With
several ranks every rank embeds its shard and the embeddings are all-gathered (deduplicated by item: the
distributed sampler pads shards with repeats), so every rank computes the same metrics on the whole split.
The reference statistics come from a manifest (default: the evaluate split's own manifest) and are cached
on disk.
"""

from __future__ import annotations

import logging
import typing as tp

import flashy
import numpy as np
import torch

from .eval_settings import (  # noqa: F401  (the readers of `zalo.eval` live there; re-exported for callers)
    clap_spec_from_cfg,
    reference_path,
    settings_from_cfg,
    stats_cache_from_cfg,
)
from .evaluator import ClasSettings, embed_files, scores_from_embeddings

logger = logging.getLogger(__name__)


def evaluate_split_descriptions(solver: tp.Any) -> tuple[dict[str, str], int]:
    """The evaluate split as a Zalo JSON: `{"<clip>.mp3": description}`, plus the count of empty descriptions.

    Ids are the audio files' stems (with `@<seek>` when an item starts inside a file), so they are stable from
    run to run and the same on every rank; items repeated by the sampler are kept once.

    Args:
        solver: the solver whose `evaluate` dataloader is read (descriptions only; the audio is not used).
    """
    from pathlib import Path

    from .evaluator import is_empty_description

    items: dict[str, str] = {}
    empty: set[str] = set()
    for _, meta in solver.dataloaders["evaluate"]:
        for m in meta:
            stem = Path(m.meta.path).stem
            key = f"{stem}@{m.seek_time:g}.mp3" if m.seek_time else f"{stem}.mp3"
            if is_empty_description(m.description):
                empty.add(key)
            else:
                items.setdefault(key, str(m.description))
    gathered: dict[str, str] = {}
    for part in _gather([items]):
        for k, v in part.items():
            gathered.setdefault(k, v)
    return dict(sorted(gathered.items())), len(set(_gather(sorted(empty))))


def evaluate_clas_as_generate(solver: tp.Any, settings: ClasSettings) -> dict:
    """CLAS of the evaluate split generated exactly as `zalo-music generate` would, then scored as `score` does.

    With `zalo.eval.candidates=N` the evaluate stage writes the split's descriptions as a Zalo JSON
    (`<XP>/eval_generate/epoch<E>/descriptions.json`), runs `generate.generate` on the XP's best state with the
    `zalo.generate.*` decoding and best-of-N (CLAP of `zalo.eval.clap_*`), and scores the MP3s with
    `metrics.score.score_folder` against the evaluate reference. The metrics therefore equal `zalo-music score`
    on `zalo-music generate --from-xp <SIG>` output (tests/test_best_of_n.py checks it). The clips, the
    best-of-N report (`candidates.json`, N > 1) and the score report stay in `<XP>/eval_generate/epoch<E>/` (a
    resumed evaluate of that epoch reuses finished clips: same seed, same bytes). Rank 0 does the work; the other ranks read its score.

    Args:
        solver: a `ZaloMusicGenSolver` in eval mode (its best state swapped in by the caller).
        settings: from `settings_from_cfg`.
    Returns:
        `score`'s metrics plus `candidates`, `n_empty_descriptions` and, for N > 1, `clap_first` (the mean
        CLAP candidate 0 alone would have had: what best-of-N gained).
    """
    import dataclasses
    import json
    from pathlib import Path

    from audiocraft.models import MusicGen

    from zalo_music.decoding import from_cfg as generation_config_from_cfg
    from zalo_music.fileio import write_json
    from zalo_music.generate import generate

    from .clap import get_embedder
    from .eval_settings import rerank_options_from_cfg
    from .score import score_folder

    cfg = solver.cfg
    get_embedder(settings.clap)  # fails fast, before generating
    if cfg.zalo.eval.reference_max:
        logger.warning("zalo.eval.reference_max is not applied with zalo.eval.candidates (scored as `score` "
                       "scores, on the whole reference)")
    gen = generation_config_from_cfg(cfg)
    descriptions, n_empty = evaluate_split_descriptions(solver)
    if not descriptions:
        raise ValueError("CLAS evaluation: every item of the evaluate split has an empty description")
    # One folder per epoch: generate skips clips that already exist, which is right for a resumed evaluate of
    # the same epoch but would re-score an earlier epoch's clips after more training.
    folder = Path(solver.folder) / "eval_generate" / f"epoch{solver.epoch}"
    score_path = folder / "score.json"
    if flashy.distrib.is_rank_zero():
        json_path = folder / "descriptions.json"
        write_json(json_path, descriptions)
        # The very weights and codec the solver evaluates, wrapped as generate's model.
        from zalo_music.patches import allow_short_segment_musicgen

        allow_short_segment_musicgen()  # as generate.load_model does
        # max_duration as an exported model gets it (`lm.cfg.dataset.segment_duration`, see BaseGenModel).
        model = MusicGen(f"xp/{solver.xp.sig}", solver.compression_model, solver.model,
                         max_duration=float(cfg.dataset.segment_duration))
        rerank = rerank_options_from_cfg(cfg, reference_path(cfg))
        rerank = dataclasses.replace(rerank, clap=settings.clap, stats_cache=settings.stats_cache)
        cuda = [torch.cuda.current_device()] if str(solver.device).startswith("cuda") else []
        with torch.random.fork_rng(devices=cuda):  # generate seeds per batch: leave training's RNG alone
            summary = generate(str(folder), json_path, folder / "clips", gen, model=model, quiet=True,
                               rerank=rerank)
        if summary["refused"]:
            raise ValueError(f"CLAS evaluation: generate refused or failed {len(summary['refused'])} items "
                             f"(first: {next(iter(summary['refused'].items()))})")
        report = score_folder(folder / "clips", json_path, reference_path(cfg), settings, out=score_path,
                              progress=False)
        for w in report.get("warnings", []):
            logger.warning("CLAS evaluation: %s", w)
    flashy.distrib.barrier()
    report = json.loads(score_path.read_text(encoding="utf-8"))
    metrics = {k: v for k, v in report["metrics"].items() if isinstance(v, (int, float))}
    metrics.update(candidates=gen.candidates, n_empty_descriptions=n_empty)
    bon = folder / "clips" / "candidates.json"
    if gen.candidates > 1 and bon.is_file():
        metrics["clap_first"] = json.loads(bon.read_text(encoding="utf-8"))["summary"]["mean_clap_first"]
    logger.info("CLAS evaluation as generate (best of %d, %s) on %d items: %s", gen.candidates,
                {k: v for k, v in vars(gen).items() if k != "candidates"}, metrics.get("n_items"), metrics)
    return metrics


def _gather(items: list) -> list:
    if flashy.distrib.world_size() <= 1:
        return items
    out: list = [None] * flashy.distrib.world_size()
    torch.distributed.all_gather_object(out, items)
    return [x for part in out for x in part]


def evaluate_clas(solver: tp.Any, settings: ClasSettings) -> dict:
    """Generate for the evaluate split once and score it.

    Args:
        solver: a `ZaloMusicGenSolver` in eval mode (its best state swapped in by the caller).
        settings: from `settings_from_cfg`.
    Returns:
        `{"clap", "fad", "fas", "clas"[, "fad_inf", "fas_inf", "clas_inf"], "n_items"}`.
    Raises:
        MetricUnavailableError: the CLAP checkpoint (or laion-clap itself) is unavailable; raised before any
            generation so no time is wasted.
    """
    if solver.cfg.zalo.eval.candidates is not None:
        return evaluate_clas_as_generate(solver, settings)
    from audiocraft.data.audio_utils import normalize_audio

    from .audio import clap_window
    from .clap import get_embedder
    from .evaluator import is_empty_description
    from .reference import reference_stats

    cfg = solver.cfg
    embedder = get_embedder(settings.clap)  # fails fast, before generating
    normalize_kwargs = dict(cfg.generate.audio)
    normalize_kwargs.pop("format", None)
    items: list = []
    empty_keys: list[str] = []
    loader = solver.dataloaders["evaluate"]
    lp = solver.log_progress("evaluate_clas inference", loader, total=len(loader), updates=solver.log_updates)
    # Own RNG stream: the same XP evaluates the same samples, and training's RNG state is left untouched.
    cuda = [torch.cuda.current_device()] if str(solver.device).startswith("cuda") else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(cfg.seed) + flashy.distrib.rank())
        for audio, meta in lp:
            duration = cfg.evaluate.fixed_generation_duration or audio.shape[-1] / cfg.sample_rate
            gen = solver.run_generate_step((audio, meta), gen_duration=duration, **solver.generation_params)
            wavs = gen["gen_audio"].detach().float().cpu()
            # Same rule as `score`: an item without a description is left out of CLAP and FAD (counted).
            keep = [i for i, m in enumerate(meta) if not is_empty_description(m.description)]
            empty_keys += [f"{m.meta.path}@{m.seek_time}" for i, m in enumerate(meta) if i not in keep]
            if not keep:
                continue
            windows = [clap_window(normalize_audio(wavs[i], **normalize_kwargs), cfg.sample_rate)[0]
                       for i in keep]
            audio_emb = embedder.embed_windows(np.stack(windows))
            text_emb = embedder.embed_text([meta[i].description for i in keep])
            for i, t, a in zip(keep, text_emb, audio_emb, strict=True):
                items.append((f"{meta[i].meta.path}@{meta[i].seek_time}", t, a))
    unique: dict = {}
    for key, t, a in _gather(items):  # every rank gathers, even one whose shard was all empty descriptions
        unique.setdefault(key, (t, a))
    n_empty = len(set(_gather(empty_keys)))  # whole split, the same on every rank
    if not unique:
        raise ValueError("CLAS evaluation: every item of the evaluate split has an empty description")
    keys = sorted(unique)  # rank- and order-independent
    text_emb = np.stack([unique[k][0] for k in keys])
    audio_emb = np.stack([unique[k][1] for k in keys])

    def ref_stats():
        def embed(files):
            emb, _, failed = embed_files(embedder, files, desc="CLAP: reference clips")
            return emb, failed

        return reference_stats(reference_path(cfg), embed, embedder.identity, settings.stats_cache,
                               cfg.zalo.eval.reference_max)

    # Rank 0 embeds the reference and fills the cache; the other ranks then read it instead of recomputing.
    if settings.stats_cache and flashy.distrib.world_size() > 1:
        if flashy.distrib.is_rank_zero():
            ref_stats()
        flashy.distrib.barrier()
    ref, hit, skipped = ref_stats()
    warnings: list[str] = []
    metrics, _ = scores_from_embeddings(text_emb, audio_emb, ref, settings, warnings)
    metrics["n_empty_descriptions"] = n_empty
    for f, reason in skipped.items():
        logger.warning("CLAS evaluation: reference clip left out: %s: %s", f, reason)
    for w in warnings:
        logger.warning("CLAS evaluation: %s", w)
    logger.info("CLAS evaluation on %d items (reference %d clips, stats cache %s): %s", len(keys), ref.n,
                "hit" if hit else "miss", metrics)
    return metrics
