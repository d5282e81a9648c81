"""Peak RSS of `zalo-music export` on an XP checkpoint that carries AdamW state, before/after memory-mapping.

Builds a fake XP folder (`checkpoint.th` in audiocraft's layout: `xp.cfg` of the tiny recipe, `model`,
`best_state.model`, an AdamW `optimizer` state with `exp_avg`/`exp_avg_sq` for every parameter, `history`) whose
LM has `--params` float32 parameters, then exports it in a fresh child process per method and reports the child's
peak RSS during export (Linux VmHWM, reset after the imports) and its RSS before (Python + torch +
audiocraft imported):

- `full`: what export did before (the whole checkpoint `torch.load`ed by export, then again by audiocraft's
  `export_lm`): `export_xp` with those two loads swapped back in.
- `lazy`: `zalo_music.export.export_xp` (checkpoint memory-mapped: only the best state is read).

    .venv/bin/python scripts/bench_export.py --params 120e6            # both methods, ~1.9 GB checkpoint
    .venv/bin/python scripts/bench_export.py --params 420e6 --methods lazy   # musicgen-small's LM: 6.7 GB

The LM weights are fake tensors of the given size (the real architecture does not change what export reads).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 2048 * 2048  # elements per fake weight tensor (16 MB in float32)


def _fake_state(n_params: int, seed: int) -> dict:
    import torch

    gen = torch.Generator().manual_seed(seed)
    state, left, i = {}, int(n_params), 0
    while left > 0:
        n = min(CHUNK, left)
        state[f"transformer.layers.{i}.weight"] = torch.randn(n, generator=gen)
        left, i = left - n, i + 1
    return state


def build_xp(folder: Path, n_params: int, optimizer_params: int | None = None) -> Path:
    """Write `folder/checkpoint.th`: an XP checkpoint with a `n_params` LM and AdamW state.

    Args:
        folder: the fake XP folder (created).
        n_params: parameters of the LM (model and best state each hold that many float32 values).
        optimizer_params: parameters covered by the AdamW state (default `n_params`; 2 float32 tensors each).
    Returns:
        The checkpoint path.
    """
    import torch

    from zalo_music.tokens.encode import compose_config

    cfg = compose_config(["solver=zalo/tiny", "dset=zalo/demo"])
    model = _fake_state(n_params, 0)
    best = _fake_state(n_params, 1)
    opt_params = _fake_state(n_params if optimizer_params is None else optimizer_params, 2)
    optimizer = {"state": {i: {"step": torch.tensor(100.0), "exp_avg": t, "exp_avg_sq": t.abs()}
                           for i, t in enumerate(opt_params.values())},
                 "param_groups": [{"lr": 2e-5, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1,
                                   "amsgrad": False, "params": list(range(len(opt_params)))}]}
    pkg = {"xp.cfg": cfg, "model": model, "best_state": {"model": best}, "fsdp_best_state": None,
           "optimizer": optimizer, "history": [{"train": {"ce": 5.0}, "valid": {"ce": 4.5}}], "epoch": 1}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "checkpoint.th"
    torch.save(pkg, path)
    return path


def _child(method: str, xp: Path, out: Path) -> None:
    # Everything export needs is imported before the baseline, so the growth is what export itself reads.
    import importlib

    import torch

    from zalo_music import export  # before audiocraft: it sets audiocraft's environment and import guards

    importlib.import_module("audiocraft.models.builders")
    export_lm = importlib.import_module("audiocraft.utils.export").export_lm

    # VmHWM (peak RSS) is reset after the imports, whose own transient peak would otherwise hide export's.
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_mb("VmRSS")
    if method == "full":  # the pre-mmap export: whole checkpoint loaded by export, then again by `export_lm`
        export.open_checkpoint = lambda p: torch.load(p, map_location="cpu", weights_only=True)
        export.export_lm_state = lambda pkg, out_file, source: export_lm(source, out_file)
    t0 = time.perf_counter()
    export.export_xp(xp, out, force=True)
    seconds = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    print(json.dumps({"method": method, "baseline_mb": base, "peak_mb": peak, "growth_mb": peak - base,
                      "seconds": seconds}))


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def measure(method: str, xp: Path, out: Path) -> dict:
    """Export `xp` into `out` with `method` in a fresh child process; returns its RSS figures (MB) and time.

    Args:
        method: `lazy` (zalo-music's export) or `full` (the old whole-checkpoint load).
        xp: fake XP folder from `build_xp`.
        out: export folder.
    """
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, __file__, "--child", method, "--xp", str(xp), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"export ({method}) failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    from zalo_music.runtime import prepare

    prepare()  # entry point: audiocraft's environment and zalo_music's patches before audiocraft is imported
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=float, default=120e6, help="LM parameters (musicgen-small: 420e6)")
    parser.add_argument("--methods", default="full,lazy", help="comma list of full, lazy")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--xp", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.xp, args.out)
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        t0 = time.perf_counter()
        ckpt = build_xp(work / "xp", int(args.params))
        size = ckpt.stat().st_size / 2**30
        print(f"checkpoint {ckpt}: {size:.2f} GiB ({args.params / 1e6:.0f}M-parameter LM: model, best state, "
              f"AdamW exp_avg + exp_avg_sq), built in {time.perf_counter() - t0:.0f}s")
        for method in args.methods.split(","):
            r = measure(method, work / "xp", work / f"export-{method}")
            print(f"{method:5s} peak RSS {r['peak_mb']:7.0f} MB = baseline {r['baseline_mb']:5.0f} MB "
                  f"+ {r['growth_mb']:7.0f} MB for export; {r['seconds']:.1f}s")
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
