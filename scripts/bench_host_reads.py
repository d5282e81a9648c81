"""Host waits per training step (each one a stall of the GPU's queue), upstream's step vs `zalo.speed.sync_free`.

Runs the train stage of the tiny recipe (audiocraft's own stage loop: step, metric averaging, progress log) at two
lengths with the sync-free lever off and on, counts what the solver's step and metrics make the host wait on
(`benchkit.HostReads`: reads of tensor values, `.item()`, `float()`, `bool()`, formatting, boolean-mask indexing,
outside the data pipeline; and blocking copies to the device), and reports them per step (the difference between
the two lengths over their step difference), by call site, and whether the stage metrics agree. On a CPU nothing
waits; on a GPU each one per step stalls the queue. The tiny recipe trains from audio, whose batch copy is
upstream's (`MusicGenSolver._prepare_tokens_and_attributes`); the real recipe from tokens is counted by
`bench_fullshape.py --only levers`.

    .venv/bin/python scripts/bench_host_reads.py [--steps 4 8]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import benchkit


def stage(overrides: list[str]) -> tuple[dict, benchkit.HostReads]:
    """The tiny recipe's train stage: its metrics and what waits for the device in it (reads, copies)."""
    import torch
    from audiocraft import train as ac_train

    from zalo_music.train import main

    xp = main.get_xp(["solver=zalo/tiny", "dset=zalo/demo", "logging.log_updates=1", *overrides])
    with xp.enter():
        solver = ac_train.get_solver(xp.cfg)
        random.seed(1)
        torch.manual_seed(1)
        solver._start_epoch()
        with benchkit.HostReads() as reads:
            metrics = solver.run_stage("train", solver.train)
    return metrics, reads


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, nargs=2, default=[4, 8], help="the two stage lengths (steps)")
    p.add_argument("--json", default=None, help="also write the result here")
    a = p.parse_args(argv)
    import os

    root = Path(tempfile.mkdtemp(prefix="zalo-bench-host-reads-"))
    os.environ.update({"ZALO_MUSIC_DORA_DIR": str(root / "outputs"), "AUDIOCRAFT_DORA_DIR": str(root / "outputs"),
                       "ZALO_MUSIC_DATA_DIR": str(root / "data"), "ZALO_MUSIC_MANIFEST_DIR": str(root / "manifests")})
    benchkit.ensure_project_on_path()
    from zalo_music.runtime import prepare

    prepare()
    from zalo_music.data.demo import build_demo
    from zalo_music.data.prepare import prepare as prepare_data

    source = build_demo(root / "data" / "demo_source", n=64)
    prepare_data(source, source.parent / "audio", "demo", workers=2, quiet=True)
    runs = {(free, n): stage([f"zalo.speed.sync_free={free}", f"optim.updates_per_epoch={n}",
                              f"dataset.train.num_samples={8 * n}"])
            for free in ("false", "true") for n in a.steps}
    short, long = a.steps
    keys = ("ce", "ppl", "grad_norm")
    result = {**benchkit.result_header(__file__, argv if argv is not None else sys.argv[1:]), "modes": {}}
    for free in ("false", "true"):
        result["modes"]["sync_free" if free == "true" else "upstream"] = {
            "reads": {n: runs[(free, n)][1].n for n in a.steps},
            "reads_per_step": (runs[(free, long)][1].n - runs[(free, short)][1].n) / (long - short),
            "blocking_copies_per_step": (runs[(free, long)][1].copies - runs[(free, short)][1].copies) / (long - short),
            "sites_per_step": {site: (k - runs[(free, short)][1].sites[site]) / (long - short)
                               for site, k in sorted(runs[(free, long)][1].sites.items())
                               if k != runs[(free, short)][1].sites[site]},
            "metrics": {n: {k: runs[(free, n)][0][k] for k in keys} for n in a.steps}}
    result["max_metric_difference"] = max(abs(runs[("true", n)][0][k] - runs[("false", n)][0][k])
                                          for n in a.steps for k in keys)
    benchkit.write_result(result, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
