"""`zalo-music` command line: one sub-command per job, heavy imports only inside each."""

from __future__ import annotations

import argparse
import os
import sys


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import main

    return main(probe_hub=not args.no_hub)


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from .data.demo import build_demo

    build_demo(args.out, n=args.clips, seed=args.seed, force=args.force)
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .data.prepare import prepare

    report = prepare(args.json, args.audio_dir, args.name, sample_rate=args.sample_rate,
                     clip_seconds=args.clip_seconds, valid_fraction=args.valid_fraction, seed=args.seed,
                     workers=args.workers)
    for err in report["errors"][:10]:
        print(f"  skipped {err['id']}: {err['reason']}")
    if len(report["errors"]) > 10:
        print(f"  ... {len(report['errors']) - 10} more in {report['manifests']}/report.json")
    return 0 if report["prepared"] else 1


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from .quickstart import main

    return main(args.overrides, clips=args.clips)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="zalo-music", formatter_class=fmt,
                                description="Fine-tune MusicGen with Audiocraft + Dora; score with CLAS.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("doctor", formatter_class=fmt, help="check the installation and say how to fix it")
    d.add_argument("--no-hub", action="store_true", help="skip the 2-s Hugging Face hub reachability probe")
    d.set_defaults(func=_cmd_doctor)

    g = sub.add_parser("demo-data", formatter_class=fmt,
                       help="render the embedded demo dataset (10-s 16 kHz MP3 + Zalo JSON)")
    g.add_argument("--out", default=os.path.join("data", "demo_source"), help="output folder")
    g.add_argument("--clips", type=int, default=64, help="number of clips")
    g.add_argument("--seed", type=int, default=0, help="master seed (same seed, same files)")
    g.add_argument("--force", action="store_true", help="re-render clips that already exist")
    g.set_defaults(func=_cmd_demo_data)

    r = sub.add_parser("prepare", formatter_class=fmt,
                       help="Zalo JSON + clips -> resampled FLAC, sidecars and audiocraft manifests")
    r.add_argument("--json", required=True, help='the {"<id>.mp3": "<description>"} file')
    r.add_argument("--audio-dir", required=True, help="folder with the clips named by the JSON keys")
    r.add_argument("--name", required=True, help="dataset name: dset=zalo/prepared zalo.dataset=NAME")
    r.add_argument("--sample-rate", type=int, default=32000, help="output sample rate (the codec's)")
    r.add_argument("--clip-seconds", type=float, default=10.0, help="clip length after trimming")
    r.add_argument("--valid-fraction", type=float, default=0.1, help="share of descriptions held out")
    r.add_argument("--seed", type=int, default=0, help="split seed")
    r.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    r.set_defaults(func=_cmd_prepare)

    q = sub.add_parser("quickstart", formatter_class=fmt,
                       help="main job on the demo data: build, prepare, train solver=zalo/tiny, report")
    q.add_argument("--clips", type=int, default=64, help="number of demo clips")
    q.add_argument("overrides", nargs="*", help="extra Hydra overrides for the tiny XP, e.g. optim.epochs=4")
    q.set_defaults(func=_cmd_quickstart)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `zalo-music` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"zalo-music {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
