"""Full fine-tuning vs LoRA on MusicGen-shaped LMs: trainable parameters, optimizer state, checkpoint size,
peak RSS and seconds per training step, side by side in one run.

    .venv/bin/python scripts/bench_lora.py --scales small --steps 3 --seconds 2 --batch 1
    .venv/bin/python scripts/bench_lora.py --scales small,medium --device cuda --steps 10 --seconds 10 --batch 4

Each (scale, mode) runs in its own process, so peak RSS is that configuration's own. The LM is audiocraft's
(`model/lm/model_scale=<scale>` of the real recipe `solver=zalo/musicgen_small_ft`: same layers, same custom
attention, random weights: speed and memory do not depend on the values); the text conditioner is the offline
lookup table, so no T5 is needed (T5 is frozen and identical in both modes). A step is one AdamW update on
`--batch` sequences of `--seconds` of EnCodec 32 kHz codes (50 frames/s, 4 codebooks) with cross-entropy on
every codebook, as the solver computes it. The checkpoint size is what the solver would save (model or
adapter state + optimizer state + best state), written to a temporary file; peak RSS is taken
before that. `--skip` leaves out configurations that
cannot fit (e.g. `medium:full` on a 24 GB machine: fp32 weights, gradients and AdamW moments of 1.5B
parameters alone need ~24 GB).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _worker(args: argparse.Namespace) -> dict:
    os.environ.setdefault("ZALO_MUSIC_DORA_DIR", tempfile.mkdtemp())
    os.environ.setdefault("ZALO_MUSIC_MANIFEST_DIR", tempfile.mkdtemp())
    import torch

    from zalo_music.train import main

    torch.set_num_threads(args.threads or torch.get_num_threads())
    argv = ["solver=zalo/musicgen_small_ft", f"model/lm/model_scale={args.scale}", "conditioner=zalo/offline",
            f"device={args.device}"]
    if args.device == "cpu":
        argv.append("autocast=false")
    cfg = main.get_xp(argv).cfg
    from audiocraft.models import builders
    from audiocraft.modules.conditioners import ConditioningAttributes

    from zalo_music.solvers.lora import LoraSettings, adapter_parameters, attach_lora

    torch.manual_seed(0)
    lm = builders.get_lm_model(cfg).to(args.device)
    total = sum(p.numel() for p in lm.parameters())
    if args.mode == "lora":
        attach_lora(lm, LoraSettings(rank=args.rank, alpha=2 * args.rank))
        params = adapter_parameters(lm)
    else:
        params = list(lm.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5)
    lm.train()
    frames = int(args.seconds * 50)
    codes = torch.randint(0, cfg.transformer_lm.card, (args.batch, cfg.transformer_lm.n_q, frames),
                          device=args.device)
    attrs = [ConditioningAttributes(text={"description": f"calm piano number {i}"}) for i in range(args.batch)]
    # What the solver does on a GPU (zalo_music/solvers/registry.py: bf16 autocast on CUDA, none on CPU).
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if args.device.startswith("cuda")
                else contextlib.nullcontext())
    times = []
    for step in range(args.steps + 1):  # step 0 warms up (allocations, kernels) and is not timed
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast:
            out = lm.compute_predictions(codes, attrs)
            logits = out.logits[out.mask]
            loss = torch.nn.functional.cross_entropy(logits.float(), codes[out.mask])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t0)
    optim_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                      if torch.is_tensor(t))
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before serialising anything
    model_state = lm.state_dict()  # adapters only under LoRA (zalo_music.solvers.lora)
    with tempfile.NamedTemporaryFile(suffix=".th") as f:
        torch.save({"model": model_state, "optimizer": opt.state_dict(), "best_state": {"model": model_state}},
                   f.name)
        checkpoint_bytes = os.path.getsize(f.name)
    result = {
        "scale": args.scale, "mode": args.mode, "params": total, "trainable": sum(p.numel() for p in params),
        "optimizer_bytes": optim_bytes, "checkpoint_bytes": checkpoint_bytes,
        "s_per_step": sorted(times)[len(times) // 2],
        "peak_rss_bytes": peak_rss,
    }
    if args.device.startswith("cuda"):
        result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    return result


def main() -> None:
    from zalo_music.runtime import prepare

    prepare()  # entry point: audiocraft's environment and zalo_music's patches before audiocraft is imported
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scales", default="small", help="comma list of audiocraft LM scales (small, medium, large)")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank (alpha = 2 x rank)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per configuration (median kept)")
    p.add_argument("--seconds", type=float, default=2.0, help="sequence length in seconds of codes (50 frames/s)")
    p.add_argument("--batch", type=int, default=1, help="sequences per step")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--skip", default="", help="comma list of scale:mode to leave out, e.g. medium:full")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--scale", default="small", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    results = []
    for scale in [s.strip() for s in args.scales.split(",") if s.strip()]:
        for mode in ("full", "lora"):
            if f"{scale}:{mode}" in skip:
                print(f"{scale:>7} {mode:>5}: skipped", flush=True)
                continue
            cmd = [sys.executable, __file__, "--worker", "--scale", scale, "--mode", mode, "--rank", str(args.rank),
                   "--steps", str(args.steps), "--seconds", str(args.seconds), "--batch", str(args.batch),
                   "--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
            proc = subprocess.run(cmd, text=True, capture_output=True)
            if proc.returncode != 0:
                print(f"{scale:>7} {mode:>5}: failed ({proc.returncode}): {proc.stderr.strip()[-400:]}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            print(f"{scale:>7} {mode:>5}: {r['trainable'] / 1e6:9.2f}M of {r['params'] / 1e6:7.1f}M trainable, "
                  f"optimizer {r['optimizer_bytes'] / 2**20:9.1f} MiB, checkpoint {r['checkpoint_bytes'] / 2**20:9.1f}"
                  f" MiB, peak RSS {r['peak_rss_bytes'] / 2**30:6.2f} GiB"
                  + (f", peak CUDA {r['peak_cuda_bytes'] / 2**30:6.2f} GiB" if "peak_cuda_bytes" in r else "")
                  + f", {r['s_per_step']:7.3f} s/step", flush=True)
    by = {(r["scale"], r["mode"]): r for r in results}
    for scale in sorted({r["scale"] for r in results}):
        full, lora = by.get((scale, "full")), by.get((scale, "lora"))
        if full and lora:
            print(f"{scale}: LoRA r={args.rank} checkpoint {100 * lora['checkpoint_bytes'] / full['checkpoint_bytes']:.2f}%"
                  f" of full, peak RSS {lora['peak_rss_bytes'] / full['peak_rss_bytes']:.2f}x, "
                  f"step time {lora['s_per_step'] / full['s_per_step']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
