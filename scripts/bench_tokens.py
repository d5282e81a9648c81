"""Training steps/s from precomputed tokens vs from audio: same tiny solver, same CPU, side by side.

Builds the demo dataset in a temporary folder, tokenizes it, then builds two `solver=zalo/tiny` solvers
in-process (dset=zalo/demo: audio; plus train_from=tokens: tokens) and runs real training steps
(`run_step`: forward, backward, optimizer) in alternating rounds, timing separately the wait on the
dataloader (`next(iter)`) and the step itself (for audio it includes the codec encode).

    .venv/bin/python scripts/bench_tokens.py --steps 24 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def _setup(root: Path, clips: int) -> None:
    os.environ.update({"ZALO_MUSIC_DORA_DIR": str(root / "outputs"), "AUDIOCRAFT_DORA_DIR": str(root / "outputs"),
                       "ZALO_MUSIC_DATA_DIR": str(root / "data"), "ZALO_MUSIC_MANIFEST_DIR": str(root / "manifests"),
                       "HF_HUB_OFFLINE": "1"})
    from zalo_music.data.demo import build_demo
    from zalo_music.data.prepare import prepare
    from zalo_music.runtime import prepare as prepare_runtime

    prepare_runtime()  # after the variables above: it exports them to audiocraft

    src = build_demo(root / "data" / "demo_source", n=clips)
    prepare(src, src.parent / "audio", "demo", workers=2, quiet=True)


def _solver(argv: list[str]):
    from audiocraft import train as ac_train

    from zalo_music.train import main

    xp = main.get_xp(argv)
    with xp.enter():
        return ac_train.get_solver(xp.cfg)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=64, help="demo clips")
    ap.add_argument("--steps", type=int, default=24, help="timed training steps per path (split over rounds)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating audio/tokens rounds (noise control)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per path first")
    ap.add_argument("--loop-clips", type=int, default=8,
                    help="valid clips on which the 30-s loop in token space is compared with the looped audio's codes")
    args = ap.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="zalo-bench-tokens-"))
    _setup(root, args.clips)
    from zalo_music.tokens.encode import tokenize

    t0 = time.time()
    summary = tokenize(["solver=zalo/tiny", "dset=zalo/demo"], quiet=True)
    tokenize_s = time.time() - t0
    from zalo_music.tokens.encode import compose_config, load_codec
    from zalo_music.tokens.loop import compare_loop

    codec, split = load_codec(compose_config(["solver=zalo/tiny", "dset=zalo/demo"])), Path(summary["cache"]) / "valid"
    loop = {f"seams_pm{s}": compare_loop(codec, split, n=args.loop_clips, seam_frames=s) for s in (2, 4)}
    import benchkit

    solvers = {"audio": _solver(["solver=zalo/tiny", "dset=zalo/demo"]),
               "tokens": _solver(["solver=zalo/tiny", "dset=zalo/demo", "train_from=tokens"])}
    runners = {name: benchkit.SolverSteps(s, s.dataloaders["train"], "cpu") for name, s in solvers.items()}
    for r in runners.values():
        r.run(args.warmup, timed=False)
    per_round = max(1, args.steps // args.rounds)
    for _ in range(args.rounds):
        for r in runners.values():
            r.run(per_round)
    res = {name: r.result() for name, r in runners.items()}
    res["speedup_steps_per_s"] = round(res["tokens"]["steps_per_s"] / res["audio"]["steps_per_s"], 2)
    res["tokenize_s"] = round(tokenize_s, 1)
    res["clips"] = args.clips
    res["cache"] = summary["cache"]
    res["loop"] = {"clips": args.loop_clips, "agree": round(loop["seams_pm2"]["agree"], 5),
                   **{f"agree_outside_{k}": round(v["agree_away_from_seams"], 5) for k, v in loop.items()}}
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
