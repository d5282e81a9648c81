"""`train` section: seconds per training step from audio vs from tokens, one solver, alternating rounds."""

from __future__ import annotations

import argparse
import time

import benchkit

from .common import recipe_argv


def section_train(a: argparse.Namespace) -> dict:
    import torch
    from audiocraft import train as ac_train
    from audiocraft.solvers import builders

    from zalo_music.tokens.encode import tokenize
    from zalo_music.train import main

    t0 = time.perf_counter()
    summary = tokenize(recipe_argv(a, tokens=True), device=a.device, quiet=True)
    tokenize_s = time.perf_counter() - t0
    xp = main.get_xp(recipe_argv(a, tokens=True))
    t0 = time.perf_counter()
    with xp.enter():
        solver = ac_train.get_solver(xp.cfg)  # LM built at full shape, random init (no restore: values don't matter)
    build_s = time.perf_counter() - t0
    if getattr(solver, "token_cache", None) is None:
        raise RuntimeError("the token solver did not switch to the token cache")
    audio_loaders = builders.get_audio_datasets(solver.cfg, dataset_type=solver.DATASET_TYPE)
    runners = {"audio": benchkit.SolverSteps(solver, audio_loaders["train"], a.device),
               "tokens": benchkit.SolverSteps(solver, solver.dataloaders["train"], a.device)}
    for r in runners.values():
        r.run(a.warmup, timed=False)
    per_round = max(1, a.steps // a.rounds)
    for _ in range(a.rounds):
        for r in runners.values():
            r.run(per_round)
    res = {name: r.result() for name, r in runners.items()}
    res["speedup_tokens_vs_audio"] = round(res["audio"]["s_per_step"] / res["tokens"]["s_per_step"], 2)
    lm_params = sum(p.numel() for p in solver.model.parameters())
    res.update({
        "lm_params_m": round(lm_params / 1e6, 1), "lm_layers": int(solver.cfg.transformer_lm.num_layers),
        "codec": str(solver.cfg.compression_model_checkpoint), "frame_rate": solver.compression_model.frame_rate,
        "batch": a.batch, "segment_s": a.segment, "num_workers": a.num_workers, "warmup_steps": a.warmup,
        "rounds": a.rounds, "steps_per_round": per_round,
        "autocast": getattr(solver.autocast, "autocast", None) is not None,
        "autocast_dtype": str(solver.cfg.autocast_dtype), "optimizer": str(solver.cfg.optim.optimizer),
        "solver_build_s": round(build_s, 1), "tokenize_s": round(tokenize_s, 1),
        "tokenized_clips": {s: v["clips"] for s, v in summary["splits"].items()},
        "token_cache": summary["cache"], "threads": torch.get_num_threads(), **benchkit.process_peak()})
    return res
