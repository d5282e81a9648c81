"""`zalo-music quickstart`: the main job on the embedded demo data, on CPU, with no download.

demo data -> prepare -> `dora run solver=zalo/tiny` -> the XP's metrics table (`compare`) -> generated samples.
Rerunning resumes: finished clips, prepared files and the trained XP are reused.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import env
from .argtypes import POSITIVE_INT
from .procutil import run_dora

TINY_ARGV = ["solver=zalo/tiny", "dset=zalo/demo"]


def xp_signature(argv: list[str]) -> tuple[str, Path, int]:
    """Signature, folder and epoch count of the XP that `dora run ARGV` would run (Dora's own lookup, no child
    process).

    Args:
        argv: the XP's Hydra overrides.
    """
    from .train import main

    xp = main.get_xp(argv)
    return xp.sig, xp.folder, int(xp.cfg.optim.epochs)


def main(extra: list[str] | None = None, clips: int = 64) -> int:
    """Run the main job.

    Args:
        extra: more Hydra overrides for the tiny solver (e.g. optim.epochs=4).
        clips: number of demo clips to render.
    """
    start = time.time()
    from .data.demo import build_demo
    from .data.prepare import prepare
    from .gridlocal import LocalXP, compare, print_comparison

    src = env.data_dir() / "demo_source"
    json_path = build_demo(src, n=clips)
    prepare(json_path, src / "audio", "demo")
    argv = TINY_ARGV + list(extra or [])
    sig, folder, epochs = xp_signature(argv)
    print(f"training XP {sig} ({' '.join(argv)}) in {folder}", flush=True)
    run_dora("run", *argv)
    rows = compare("quickstart", xps=[LocalXP(sig, folder, epochs, argv)])
    print_comparison("quickstart", rows, title=f"XP {sig} (raw metrics: dora -P zalo_music info -f {sig} -m):")
    samples = sorted((folder / "samples").rglob("*.wav"))
    generated = [p for p in samples if "reference" not in p.parts]
    print(f"{len(generated)} generated samples in {folder / 'samples'}")
    for p in generated[:4]:
        print(f"  {p}")
    print(f"quickstart done in {time.time() - start:.0f}s: XP {sig} -> {folder} "
          f"(history: {folder / 'history.json'}; checkpoint: {folder / 'checkpoint.th'})")
    return 0 if rows and rows[0]["valid_ce"] is not None else 1


if __name__ == "__main__":
    sys.exit(main(os.environ.get("ZALO_MUSIC_QUICKSTART_ARGS", "").split() or None))


def _cmd_quickstart(args: argparse.Namespace) -> int:
    return main(args.overrides, clips=args.clips)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `quickstart` to the `zalo-music` parser.

    Args:
        subparsers: what `ArgumentParser.add_subparsers()` returned.
    """
    from .helpfmt import HelpFormatter as fmt

    q = subparsers.add_parser("quickstart", formatter_class=fmt,
                       help="main job on the demo data: build, prepare, train solver=zalo/tiny, report")
    q.add_argument("--clips", type=POSITIVE_INT, default=64, help="number of demo clips")
    q.add_argument("overrides", nargs="*", help="extra Hydra overrides for the tiny XP, e.g. optim.epochs=4")
    q.set_defaults(func=_cmd_quickstart)
