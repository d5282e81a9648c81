"""`levers` section: the training-speed levers of `zalo.speed.*`, each off and on, side by side on ONE solver.

The real recipe from tokens (`train_from=tokens`), built once with every lever off; then, in alternating rounds
after untimed warm-up steps, the same solver trains with each configuration: the baseline, the text-encoder cache
alone, fused AdamW alone, sync-free steps alone (the step's own waits: masked loss and divergence flag; the
stage's averaging and logging are outside these timed loops), `torch.compile` alone (`--levers-compile 1`;
compiling the full-shape LM takes minutes), and all of them together. The levers are switched in place between rounds (`TextEncoderCache.install/uninstall`,
one AdamW per `fused` value sharing the weights, the compiled call toggled), so every configuration runs on the
same weights, batches of the same loader and the same memory state. T5's word dropout is 0 in every mode: the
cache serves training steps only without it.
"""

from __future__ import annotations

import argparse

import benchkit

from .common import recipe_argv


class Levers:
    """Switches the levers of one built solver in place.

    Args:
        solver: the solver, built with every lever off.
        text_cache_mb: the cache's bound.
    """

    def __init__(self, solver, text_cache_mb: float):
        import torch

        from zalo_music.text_cache import install_text_cache

        self.solver = solver
        # The cache serves training steps only without word dropout (each step would see other words): 0 in every
        # mode, so that modes differ by the lever alone (dropping words is a few string operations per batch).
        self.word_dropout = {name: c.word_dropout for name, c in solver.model.condition_provider.conditioners.items()
                             if hasattr(c, "word_dropout")}
        for name in self.word_dropout:
            solver.model.condition_provider.conditioners[name].word_dropout = 0.0
        self.cache = install_text_cache(solver.model, text_cache_mb)
        if self.cache is not None:
            self.cache.uninstall()
        cfg = solver.cfg.optim
        params = [p for p in solver.model.parameters() if p.requires_grad]
        adam = {k: v for k, v in dict(cfg.adam).items() if k != "fused"}
        self.optimizers = {fused: torch.optim.AdamW(params, lr=cfg.lr, fused=fused, **adam)
                           for fused in (False, True)}
        self.compiled = False

    def set(self, text_cache: bool, fused: bool, compiled: bool, sync_free: bool = False) -> None:
        """Put the solver in one configuration."""
        self.solver.cfg.zalo.speed.sync_free = sync_free  # read at each step (SpeedMixin.sync_free)
        if self.cache is not None:
            self.cache.install() if text_cache else self.cache.uninstall()
        self.solver.optimizer = self.optimizers[fused]
        transformer = self.solver.model.transformer
        if compiled and not self.compiled:
            transformer.compile(dynamic=False)
        elif not compiled and self.compiled:
            transformer._compiled_call_impl = None  # nn.Module.compile's switch: back to the eager forward
        self.compiled = compiled


def host_waits(levers: Levers, setting: tuple, runner: benchkit.SolverSteps) -> dict:
    """Host reads and blocking copies per step of one configuration (`benchkit.HostReads`), from two untimed
    stages of 1 and 3 steps (the difference leaves out what a stage does once), with the call sites."""
    levers.set(*setting)
    counted = []
    for n in (1, 3):
        with benchkit.HostReads() as waits:
            runner.run(n, timed=False)
        counted.append(waits)
    short, long = counted
    sites = {site: (long.sites[site] - short.sites[site]) / 2 for site in long.sites}
    return {"host_reads_per_step": (long.n - short.n) / 2, "blocking_copies_per_step": (long.copies - short.copies) / 2,
            "host_wait_sites": {site: k for site, k in sorted(sites.items()) if k}}


def profile_steps(runner: benchkit.SolverSteps, steps: int, device: str) -> dict:
    """`benchkit.profile_summary` of `steps` training steps of the runner's configuration, in one train stage."""
    runner.solver._start_epoch()
    runner.solver.model.train()
    state = {"idx": 0}

    def step() -> None:
        runner.solver.run_step(state["idx"], runner._next(), {})
        state["idx"] += 1

    summary: dict = {}
    runner.solver.run_stage("train", lambda: summary.update(benchkit.profile_summary(step, steps, device)) or {})
    return summary


def section_levers(a: argparse.Namespace) -> dict:
    import torch
    from audiocraft import train as ac_train

    from zalo_music.solvers.throughput import train_flops_per_frame
    from zalo_music.tokens.encode import tokenize
    from zalo_music.train import main

    argv = recipe_argv(a, tokens=True)
    tokenize(argv, device=a.device, quiet=True)
    xp = main.get_xp([*argv, "zalo.speed.text_cache=false", "zalo.speed.fused_adamw=false"])
    with xp.enter():
        solver = ac_train.get_solver(xp.cfg)
    levers = Levers(solver, float(solver.cfg.zalo.speed.text_cache_mb))
    configs = {"baseline": (False, False, False, False), "text_cache": (True, False, False, False),
               "fused_adamw": (False, True, False, False), "sync_free": (False, False, False, True)}
    if a.levers_compile:
        configs["compile"] = (False, False, True, False)
    configs["all_on"] = (True, True, bool(a.levers_compile), True)
    runners = {name: benchkit.SolverSteps(solver, solver.dataloaders["train"], a.device) for name in configs}
    for name, setting in configs.items():
        levers.set(*setting)
        runners[name].run(a.warmup, timed=False)
    waits = {name: host_waits(levers, setting, runners[name]) for name, setting in configs.items()}
    per_round = max(1, a.steps // a.rounds)
    for _ in range(a.rounds):
        for name, setting in configs.items():
            levers.set(*setting)
            runners[name].run(per_round)
    res: dict = {"modes": {name: {**r.result(), **waits[name]} for name, r in runners.items()}}
    for name in ("baseline", "all_on"):  # what bounds the step: launches and waits, or the GPU's work
        levers.set(*configs[name])
        res["modes"][name]["profile"] = profile_steps(runners[name], a.profile_steps, a.device)
    shape = solver._shape()
    step_flops = train_flops_per_frame(shape, 1.0) * shape.frames * a.batch
    base = res["modes"]["baseline"]["s_per_step"]
    for m in res["modes"].values():
        m["speedup_vs_baseline"] = round(base / m["s_per_step"], 3)
        m["tflops_per_s"] = round(step_flops / m["step_s"] / 1e12, 3)
    res.update({"step_tflop": round(step_flops / 1e12, 3), "batch": a.batch, "segment_s": a.segment,
                "frames_per_sample": shape.frames, "warmup_steps": a.warmup, "rounds": a.rounds,
                "steps_per_round": per_round,
                "text_cache_hit": levers.cache.hit_rate() if levers.cache is not None else None,
                "word_dropout": {"recipe": levers.word_dropout, "measured": 0.0},
                "threads": torch.get_num_threads(), **benchkit.process_peak()})
    return res
