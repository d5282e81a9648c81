"""Benchmark best-of-N: clips/s of `generate` at N=1, at N=4 in one batched pass, and as 4 separate runs.

    .venv/bin/python scripts/bench_candidates.py [--n 16] [--batch 8] [--duration 10] [--standin]

Three ways to get the clips of `--n` descriptions, each phase in its own child process (so its peak RSS is its
own), on the tiny recipe's LM (random weights, debug codec) and a CLAP:

- `n1`: `zalo_music.generate.generate` with `--candidates 1` (no CLAP): today's cost.
- `n4_batched`: `generate --candidates 4`: 4 samples per description in the same LM pass (batch x 4 sequences),
  every candidate encoded to MP3, read back and scored by CLAP, the best kept.
- `n4_separate`: 4 `--candidates 1` runs with seeds 0..3 into 4 folders, then the same best-of-4 done by hand:
  every clip scored by CLAP (`score_folder`) and the best copied. `gen_seconds` is the 4 runs alone.

Throughput is final clips per second (n / seconds, wall clock) and per CPU-second of the process (all its
threads: the cost, and a figure less sensitive to other processes loading the machine than the wall clock). `--standin` uses the tests' random HTSAT-tiny CLAP and
stand-in HF cache (offline machines); otherwise `--clap-checkpoint` / `--clap-model` pick a real one.
The model and CLAP are loaded before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def _clap_spec(args: argparse.Namespace):
    from zalo_music.metrics.clap import ClapSpec

    if args.standin:
        from tests.helpers import clap_fixture  # sets HF_HOME before transformers is imported

        ckpt = clap_fixture.build_clap_checkpoint(clap_fixture.HF_ROOT / "clap_HTSAT-tiny_random.pt")
        return ClapSpec(checkpoint=str(ckpt), amodel="HTSAT-tiny", device=args.device)
    return ClapSpec(checkpoint=args.clap_checkpoint, amodel=args.clap_model, device=args.device)


def run_phase(args: argparse.Namespace) -> dict:
    """Run one phase in this process and return its figures.

    Args:
        args: the parsed command line (`--phase` set).
    """
    import torch
    from bench_generate import build_model

    from zalo_music.data.demo import make_specs
    from zalo_music.generate import GenerationConfig, generate
    from zalo_music.metrics.clap import get_embedder
    from zalo_music.metrics.evaluator import ClasSettings
    from zalo_music.metrics.score import score_folder
    from zalo_music.rerank import RerankOptions

    spec = _clap_spec(args)
    torch.manual_seed(0)
    model = build_model("tiny", args.device)
    get_embedder(spec)  # loaded before the clock, like the model
    tmp = Path(tempfile.mkdtemp(prefix="bench-candidates-"))
    try:
        texts = {s.key_id: s.description for s in make_specs(args.n, seed=11)}
        js = tmp / "texts.json"
        js.write_text(json.dumps(texts))
        gen = GenerationConfig(duration=args.duration, batch_size=args.batch, seed=0)
        rerank = RerankOptions(clap=spec)
        # warm-up outside the clock (first-call costs of torch, the thread pool, LAME and CLAP)
        (tmp / "warm.json").write_text(json.dumps(dict(list(texts.items())[:2])))
        generate("bench", tmp / "warm.json", tmp / "warm", GenerationConfig(duration=1.0, batch_size=2, candidates=2),
                 model=model, quiet=True, rerank=rerank)
        out: dict = {"phase": args.phase}
        start, cpu_start = time.perf_counter(), time.process_time()
        if args.phase == "n1":
            generate("bench", js, tmp / "out", gen, model=model, quiet=True)
        elif args.phase == "n4_batched":
            s = generate("bench", js, tmp / "out", GenerationConfig(**{**vars(gen), "candidates": 4}), model=model,
                         quiet=True, rerank=rerank)
            out["mean_clap_chosen"] = s["rerank"]["mean_clap_chosen"]
            out["mean_clap_first"] = s["rerank"]["mean_clap_first"]
        else:
            for seed in range(4):
                generate("bench", js, tmp / f"run{seed}", GenerationConfig(**{**vars(gen), "seed": seed}),
                         model=model, quiet=True)
            out["gen_seconds"] = round(time.perf_counter() - start, 2)
            scores = [score_folder(tmp / f"run{seed}", js, None, ClasSettings(clap=spec))["items"]
                      for seed in range(4)]
            (tmp / "out").mkdir()
            for key in texts:
                best = max(range(4), key=lambda i: scores[i][key]["clap"])
                shutil.copyfile(tmp / f"run{best}" / key, tmp / "out" / key)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        out.update(seconds=round(seconds, 2), clips_per_s=round(args.n / seconds, 3), cpu_seconds=round(cpu, 2),
                   clips_per_cpu_s=round(args.n / cpu, 3),
                   peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run the three phases (each in a child process) and print one JSON line of figures.

    Args:
        argv: command-line arguments (default: sys.argv).
    """
    from zalo_music.runtime import prepare

    prepare()  # entry point: audiocraft's environment and zalo_music's patches before audiocraft is imported
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=16, help="descriptions")
    p.add_argument("--batch", type=int, default=8, help="descriptions per LM pass (N=4: 4x as many sequences)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per clip")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--standin", action="store_true", help="random HTSAT-tiny CLAP + stand-in HF cache (offline)")
    p.add_argument("--clap-checkpoint", default=None, help="real laion-clap checkpoint (without --standin)")
    p.add_argument("--clap-model", default="HTSAT-base", help="audio tower of --clap-checkpoint")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds of the three phases (interleaved); the fastest round of each phase is reported, "
                        "which filters out load from other processes")
    p.add_argument("--phase", choices=("n1", "n4_batched", "n4_separate"), default=None,
                   help="run one phase in this process (internal; default: all three, one child each)")
    args = p.parse_args(argv)
    if args.phase:
        print("PHASE " + json.dumps(run_phase(args)), flush=True)
        return 0
    rows: dict = {}
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    for round_ in range(args.repeat):
        for phase in ("n1", "n4_batched", "n4_separate"):
            proc = subprocess.run([sys.executable, __file__, *base, "--phase", phase], cwd=ROOT, text=True,
                                  capture_output=True, env=dict(os.environ))
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PHASE ")), None)
            if proc.returncode != 0 or line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                return 1
            row = json.loads(line[len("PHASE "):])
            print(f"round {round_} {phase:12} {row}", file=sys.stderr, flush=True)
            if phase not in rows or row["seconds"] < rows[phase]["seconds"]:
                rows[phase] = row
    summary = {"n": args.n, "batch": args.batch, "repeat": args.repeat, "duration": args.duration, "device": args.device,
               "clap": "standin HTSAT-tiny" if args.standin else args.clap_model, **rows,
               "batched_vs_separate_speedup": round(rows["n4_separate"]["seconds"] / rows["n4_batched"]["seconds"],
                                                    2),
               "batched_vs_separate_cpu": round(rows["n4_separate"]["cpu_seconds"]
                                                / rows["n4_batched"]["cpu_seconds"], 2),
               "n4_batched_cost_vs_n1": round(rows["n4_batched"]["seconds"] / rows["n1"]["seconds"], 2),
               "n4_batched_cpu_vs_n1": round(rows["n4_batched"]["cpu_seconds"] / rows["n1"]["cpu_seconds"], 2)}
    print(json.dumps(summary))
    print(f"bench_candidates: N=1 {rows['n1']['clips_per_s']} clips/s, N=4 batched "
          f"{rows['n4_batched']['clips_per_s']} clips/s, 4 separate runs {rows['n4_separate']['clips_per_s']} "
          f"clips/s: batched is {summary['batched_vs_separate_speedup']}x faster than 4 runs "
          f"({summary['batched_vs_separate_cpu']}x in CPU time) and costs {summary['n4_batched_cost_vs_n1']}x N=1 "
          f"({summary['n4_batched_cpu_vs_n1']}x in CPU time)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
