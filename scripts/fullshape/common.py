"""What the sections of `bench_fullshape.py` share: the recipe, its size overrides, the defaults per device."""

from __future__ import annotations

import argparse

DATASET = "bench_fullshape"
RECIPE = "solver=zalo/musicgen_small_ft"

#: Defaults per device: CPU sizes keep the whole run near 15 min on 2 cores; CUDA ones are the recipe's.
DEFAULTS = {
    "cpu": {"clips": 16, "batch": 2, "segment": 2.0, "steps": 2, "rounds": 2, "warmup": 1, "num_workers": 0,
            "gen_duration": 2.0, "gen_batch": 16, "gen_n": 16, "gen_n_single": 1, "e2e": "none",
            "clap_n": 8, "clap_batch": 8, "clap_n_single": 4, "loop_n": 4, "loop_check": 1, "loop_fit": 1,
            "levers_compile": 0, "profile_steps": 1},
    "cuda": {"clips": 48, "batch": 16, "segment": 10.0, "steps": 12, "rounds": 3, "warmup": 3, "num_workers": 4,
             "gen_duration": 10.0, "gen_batch": 16, "gen_n": 32, "gen_n_single": 4, "e2e": "all",
             "clap_n": 128, "clap_batch": 32, "clap_n_single": 16, "loop_n": 8, "loop_check": 2, "loop_fit": 1,
             "levers_compile": 1, "profile_steps": 3},
}


def autocast_overrides(device: str, dtype: str) -> list[str]:
    """The recipe's autocast overrides for `--dtype` (the solver turns autocast off on CPU)."""
    if dtype == "fp32":
        return ["autocast=false"]
    if dtype == "fp16":
        return ["autocast=true", "autocast_dtype=float16"]
    return ["autocast=true", "autocast_dtype=bfloat16"]  # the recipe's default (turned off on CPU by the solver)


def recipe_argv(a: argparse.Namespace, tokens: bool) -> list[str]:
    """The real recipe plus size overrides only (as the rehearsal does), on the benchmark's dataset."""
    return [RECIPE, "dset=zalo/prepared", *(["train_from=tokens"] if tokens else []), f"zalo.dataset={DATASET}",
            f"device={a.device}", f"dataset.batch_size={a.batch}", f"dataset.num_workers={a.num_workers}",
            f"dataset.segment_duration={a.segment}", "optim.updates_per_epoch=1",
            "dataset.valid.num_samples=2", "dataset.evaluate.num_samples=2", "dataset.generate.num_samples=1",
            *autocast_overrides(a.device, a.dtype), *a.standin_overrides]
