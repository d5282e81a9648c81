"""`zalo-music grid-local`: run every XP of a Dora grid on this machine, no SLURM.

Each XP runs as `python -m dora -P zalo_music run -f <SIG>` in its own process (audiocraft sets the
multiprocessing start method once per process), one GPU per XP (`CUDA_VISIBLE_DEVICES`) or CPU when no GPU is
given, `--parallel` at a time. XPs whose history already holds all their epochs are skipped; interrupted ones
resume from their own checkpoint (that is what `dora run` does). The run ends with the grid table.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import threading
import time
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from . import env
from .argtypes import POSITIVE_INT
from .procutil import preexec_die_with_parent, run_dora


@dataclass
class LocalXP:
    """One XP of the grid and its state on disk."""

    sig: str
    folder: Path
    epochs: int
    argv: list[str]
    done_epochs: int = 0
    status: str = "todo"
    log: Path | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def _history_len(folder: Path) -> int:
    try:
        return len(json.loads((folder / "history.json").read_text()))
    except (OSError, ValueError):
        return 0


def load_explorer(grid: str, main: tp.Any) -> tp.Any:
    """The `explorer` of grid module `<grid package>.<grid>`, found the way `dora grid NAME` finds it.

    Dora has no public function for this lookup (its own is the private `dora.grid._get_explore`, which also
    calls `sys.exit(0)` on an unknown name); this follows its convention: the module `grid` (dots or slashes
    for sub-folders) of `main.dora.grid_package` (default `<package>.grids`) holds a `dora.Explorer` named
    `explorer`.

    Args:
        grid: grid module name under `grids/` (e.g. `zalo_tiny_lr_epochs`).
        main: the project's Dora main (`zalo_music.train.main`).
    Raises:
        ValueError: naming the grid and listing the grids there are.
    """
    import importlib

    from dora import Explorer

    package = main.dora.grid_package or f"{main.package}.grids"
    grids = importlib.import_module(package)
    name = grid.replace("/", ".").removesuffix(".py")
    folder = Path(grids.__file__).parent
    if not name or not (folder / (name.replace(".", "/") + ".py")).is_file():
        known = sorted(str(p.relative_to(folder).with_suffix("")).replace("/", ".") for p in folder.rglob("*.py")
                       if not p.name.startswith("_"))
        raise ValueError(f"no grid {grid!r} in {folder}: pick one of {', '.join(known)}")
    module = importlib.import_module(f"{package}.{name}")
    explorer = getattr(module, "explorer", None)
    if not isinstance(explorer, Explorer):
        raise ValueError(f"{module.__file__}: defines no `explorer` (a dora.Explorer, e.g. made with "
                         "`@Explorer` on the grid function)")
    return explorer


def grid_xps(grid: str) -> list[LocalXP]:
    """Register the grid's XPs (like `dora grid NAME --dry_run --init`) and return them in grid order.

    Args:
        grid: grid module name under `grids/` (e.g. `zalo_tiny_lr_epochs`).
    """
    from dora.grid import RunGridArgs, run_grid

    from .train import main

    explorer = load_explorer(grid, main)
    sheeps = run_grid(main, explorer, grid, args=RunGridArgs(dry_run=True, init=True, silent=True))
    out = []
    for sheep in sheeps:
        xp = sheep.xp
        epochs = int(xp.cfg.optim.epochs)
        out.append(LocalXP(xp.sig, xp.folder, epochs, list(xp.argv), _history_len(xp.folder)))
    return out


def _last(history: list[dict], stage: str, key: str) -> float | None:
    for entry in reversed(history):
        if key in entry.get(stage, {}):
            return float(entry[stage][key])
    return None


def rank(scores: list[tuple[float | None, float | None]]) -> list[int | None]:
    """1-based rank of each XP: by evaluate CLAS (higher first) when any XP has one, else by valid ce (lower first).

    The one ranking rule of zalo-music: `compare` and the `dora grid` table (grids/_explorers.py) use it.

    Args:
        scores: `(clas, valid_ce)` per XP, None where the XP has not reported that metric yet.
    Returns:
        The rank of each XP, in the order given; None for an XP without the deciding metric.
    """
    by_clas = any(clas is not None for clas, _ in scores)
    keys = [(None if clas is None else -clas) if by_clas else ce for clas, ce in scores]
    order = sorted((k, i) for i, k in enumerate(keys) if k is not None)
    ranks: list[int | None] = [None] * len(scores)
    for r, (_, i) in enumerate(order, start=1):
        ranks[i] = r
    return ranks


def compare(grid: str, xps: list[LocalXP] | None = None) -> list[dict]:
    """Rank a grid's XPs: by evaluate CLAS (higher is better) when present, else by valid ce (lower is better).

    Args:
        grid: grid name under `grids/`.
        xps: the grid's XPs when already listed.
    Returns:
        One row per XP, best first, the best marked `best: True`.
    """
    rows = []
    for x in xps or grid_xps(grid):
        try:
            history = json.loads((x.folder / "history.json").read_text())
        except (OSError, ValueError):
            history = []
        rows.append({"sig": x.sig, "epochs": f"{len(history)}/{x.epochs}",
                     "valid_ce": _last(history, "valid", "ce"),
                     **{name: _last(history, "evaluate", name) for name in _columns()},
                     "gpu_hours": _device_hours(history), "argv": " ".join(x.argv)})
    for row, r in zip(rows, rank([(row["clas"], row["valid_ce"]) for row in rows]), strict=True):
        row["rank"], row["best"] = r, r == 1
    rows.sort(key=lambda row: (row["rank"] is None, row["rank"] or 0))
    return rows


def print_comparison(grid: str, rows: list[dict], title: str | None = None) -> None:
    """Print `compare` rows as a table, best first.

    Args:
        grid: the grid's name (in the title).
        rows: what `compare` returns.
        title: replaces the title line.
    """
    metric = "CLAS" if any(r["clas"] is not None for r in rows) else "valid ce"

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    columns = _columns()
    print(title or f"grid {grid}, ranked by {metric}:")
    print(f"  {'':1} {'sig':8} {'epochs':>7} {'valid ce':>9} " + " ".join(f"{c:>8}" for c in columns)
          + f" {'dev-h':>7}  overrides")
    for r in rows:
        hours = "-" if r.get("gpu_hours") is None else f"{r['gpu_hours']:.3f}"
        print(f"  {'*' if r['best'] else ' '} {r['sig']:8} {r['epochs']:>7} {f(r['valid_ce']):>9} "
              + " ".join(f"{f(r.get(c)):>8}" for c in columns) + f" {hours:>7}  {r['argv']}")


def _device_hours(history: list[dict]) -> float | None:
    """Device-hours (GPU-hours on GPUs) an XP's train stages took: the sum of their `device_seconds`
    (zalo_music/solvers/throughput.py; None for XPs trained before it reported them)."""
    seconds = [h["train"]["device_seconds"] for h in history if "device_seconds" in h.get("train", {})]
    return sum(seconds) / 3600 if seconds else None


def _columns() -> list[str]:
    """The evaluate metrics `compare` shows (metrics/registry.py decides which)."""
    from .metrics.registry import table_columns

    return table_columns()


def git_state(root: Path) -> dict:
    """Commit and dirtiness of the checkout the XPs are launched from (provenance)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=root, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or None, "dirty": bool(dirty), "changed_files": dirty.splitlines()[:50]}


def run_local(grid: str, gpus: list[str] | None = None, parallel: int | None = None,
              allow_dirty: bool = False, dry_run: bool = False) -> int:
    """Run a grid locally; returns the number of XPs that failed.

    Args:
        grid: grid name under `grids/`.
        gpus: GPU ids, one XP per GPU at a time (None: CPU).
        parallel: XPs at a time (default: number of GPUs, or 1 on CPU).
        allow_dirty: run from a git tree with uncommitted changes (the XPs then do not map to one commit).
        dry_run: only list what would run.
    """
    state = git_state(env.PROJECT_ROOT)
    if state["dirty"] and not allow_dirty and not dry_run:
        raise ValueError(
            "the git tree has uncommitted changes: an XP's signature covers its config, not the code, so results "
            "could not be traced back to a commit. Commit first, or pass --allow-dirty (the changed files are "
            "then recorded in each XP's grid_local.json).")
    xps = grid_xps(grid)
    parallel = parallel or (len(gpus) if gpus else 1)
    todo = [x for x in xps if x.done_epochs < x.epochs]
    for x in xps:
        x.status = "done" if x.done_epochs >= x.epochs else ("resume" if x.done_epochs else "todo")
    print(f"grid {grid}: {len(xps)} XPs, {len(xps) - len(todo)} done, {len(todo)} to run "
          f"({parallel} at a time on {'GPUs ' + ','.join(gpus) if gpus else 'CPU'}); XPs in {env.dora_dir()}")
    for x in xps:
        print(f"  {x.sig}  {x.status:<6} {x.done_epochs}/{x.epochs} epochs  {' '.join(x.argv)}")
    if dry_run or not todo:
        return 0
    free: list[str | None] = [gpus[i % len(gpus)] for i in range(parallel)] if gpus else [None] * parallel
    lock = threading.Lock()
    failures = 0
    start = time.time()

    def worker(x: LocalXP, device: str | None) -> None:
        nonlocal failures
        envs = {"CUDA_VISIBLE_DEVICES": device} if device is not None else {}
        x.folder.mkdir(parents=True, exist_ok=True)
        (x.folder / "grid_local.json").write_text(json.dumps({"grid": grid, "git": state, "device": device},
                                                             indent=2))
        x.log = x.folder / "grid_local.log"
        t0 = time.time()
        with open(x.log, "a") as log:
            # the XP gets SIGTERM if this runner dies (kill -9 included): no training is left running alone
            # (it stops its DataLoader workers and resumes from its checkpoint on the next grid-local)
            rc = run_dora("run", "-f", x.sig, env=envs, check=False, stdout=log, stderr=subprocess.STDOUT,
                          preexec_fn=preexec_die_with_parent(signal.SIGTERM)).returncode
        x.seconds = time.time() - t0
        x.done_epochs = _history_len(x.folder)
        with lock:
            x.status = "done" if rc == 0 and x.done_epochs >= x.epochs else f"failed(rc={rc})"
            failures += x.status != "done"
            finished = sum(1 for y in todo if y.status == "done" or y.status.startswith("failed"))
            eta = (time.time() - start) / finished * (len(todo) - finished)
            print(f"[{finished}/{len(todo)}] {x.sig} {x.status} in {x.seconds:.0f}s "
                  f"({x.done_epochs}/{x.epochs} epochs; log {x.log}); ETA {eta:.0f}s", flush=True)
            free.append(device)

    threads = []
    queue = list(todo)
    while queue:
        with lock:
            device = free.pop(0) if free else "busy"
        if device == "busy":
            time.sleep(0.5)
            continue
        x = queue.pop(0)
        x.status = "running"
        print(f"start {x.sig} on {device or 'cpu'}: {' '.join(x.argv)}", flush=True)
        t = threading.Thread(target=worker, args=(x, device), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    table = run_dora("grid", grid, "--dry_run", check=False, capture_output=True)
    print(table.stdout + "\n".join(ln for ln in table.stderr.splitlines() if "Warning" not in ln))
    print_comparison(grid, compare(grid, xps))
    print(f"grid-local {grid}: {len(todo) - failures} run, {failures} failed, {len(xps) - len(todo)} already done "
          f"in {time.time() - start:.0f}s")
    return failures


def _cmd_grid_local(args: argparse.Namespace) -> int:
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    return 1 if run_local(args.grid, gpus=gpus, parallel=args.parallel, allow_dirty=args.allow_dirty,
                          dry_run=args.dry_run) else 0


def _cmd_compare(args: argparse.Namespace) -> int:
    rows = compare(args.grid)
    print_comparison(args.grid, rows)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `grid-local` and `compare` to the `zalo-music` parser.

    Args:
        subparsers: what `ArgumentParser.add_subparsers()` returned.
    """
    from .helpfmt import HelpFormatter as fmt

    gl = subparsers.add_parser("grid-local", formatter_class=fmt,
                        help="run every XP of a Dora grid on this machine (no SLURM), resuming, then the table")
    gl.add_argument("grid", help="grid name under grids/ (e.g. zalo_tiny_lr_epochs)")
    gl.add_argument("--gpus", default=None, help="comma list of GPU ids, one XP per GPU (default: CPU)")
    gl.add_argument("--parallel", type=POSITIVE_INT, default=None, help="XPs at a time (default: number of GPUs, or 1)")
    gl.add_argument("--allow-dirty", action="store_true",
                    help="run from a git tree with uncommitted changes (recorded in each XP's grid_local.json)")
    gl.add_argument("--dry-run", action="store_true", help="list the XPs and their state, run nothing")
    gl.set_defaults(func=_cmd_grid_local)

    c = subparsers.add_parser("compare", formatter_class=fmt,
                       help="rank a grid's XPs by evaluate CLAS (else valid ce) and mark the best")
    c.add_argument("grid", help="grid name under grids/")
    c.add_argument("--json", action="store_true", help="also print the rows as JSON")
    c.set_defaults(func=_cmd_compare)
