"""`zalo-music demo-data`, `prepare`, `prepare-test` and `eda`: the data commands' parsers and entry points (light
at import: numpy, soundfile and the decoders load inside each command)."""

from __future__ import annotations

import argparse
import os

from ..argtypes import POSITIVE_FLOAT, POSITIVE_INT, number, printable


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from .demo import build_demo

    build_demo(args.out, n=args.clips, seed=args.seed, force=args.force)
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare

    augment = [a.strip() for a in args.augment.split(",") if a.strip()]
    report = prepare(args.json, args.audio_dir, args.name, sample_rate=args.sample_rate,
                     clip_seconds=args.clip_seconds, hop_seconds=args.hop, tail=args.tail,
                     valid_fraction=args.valid_fraction, seed=args.seed,
                     augmentations=augment, workers=args.workers)
    for err in report["errors"][:10]:
        # repr: an id or reason from the JSON may carry ESC sequences or newlines that would forge terminal lines
        print(f"  skipped {err['id']!r}: {printable(err['reason'])}")
    if len(report["errors"]) > 10:
        print(f"  ... {len(report['errors']) - 10} more in {report['manifests']}/report.json")
    return 0 if report["prepared"] else 1


def _cmd_prepare_test(args: argparse.Namespace) -> int:
    from .testset import prepare_test

    report = prepare_test(args.json, args.name, train_json=args.train_json)
    for err in report["refused"][:10]:
        print(f"  refused {err['id']!r}: {err['reason']}")
    return 0 if report["usable"] else 1


def _cmd_eda(args: argparse.Namespace) -> int:
    from .eda import write_report

    write_report(args.json, args.out, test_json=args.test_json, dataset=args.dataset,
                 audio_sample=args.audio_sample)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the data commands to the `zalo-music` parser.

    Args:
        subparsers: what `ArgumentParser.add_subparsers()` returned.
    """
    from ..helpfmt import HelpFormatter as fmt

    g = subparsers.add_parser("demo-data", formatter_class=fmt,
                       help="render the embedded demo dataset (10-s 16 kHz MP3 + Zalo JSON)")
    g.add_argument("--out", default=os.path.join("data", "demo_source"), help="output folder")
    g.add_argument("--clips", type=POSITIVE_INT, default=64, help="number of clips")
    g.add_argument("--seed", type=int, default=0, help="master seed (same seed, same files)")
    g.add_argument("--force", action="store_true", help="re-render clips that already exist")
    g.set_defaults(func=_cmd_demo_data)

    r = subparsers.add_parser("prepare", formatter_class=fmt,
                       help="Zalo JSON + recordings -> resampled FLAC windows, sidecars and audiocraft manifests")
    r.add_argument("--json", required=True, help='the {"<id>.mp3": "<description>"} file')
    r.add_argument("--audio-dir", required=True, help="folder with the recordings named by the JSON keys (any length)")
    r.add_argument("--name", required=True, help="dataset name: dset=zalo/prepared zalo.dataset=NAME")
    r.add_argument("--sample-rate", type=POSITIVE_INT, default=32000, help="output sample rate (the codec's)")
    r.add_argument("--clip-seconds", type=POSITIVE_FLOAT, default=10.0,
                   help="window length: each recording becomes consecutive windows this long")
    r.add_argument("--hop", type=POSITIVE_FLOAT, default=None,
                   help="seconds from one window's start to the next's, at most --clip-seconds (default: "
                        "--clip-seconds, back to back)")
    r.add_argument("--tail", choices=("overlap", "pad", "drop"), default="overlap",  # data.segment.TAILS
                   help="a recording's end that fills no whole window: overlap (a last window ending at the "
                        "recording's end), pad (zero-padded, when at least half a clip) or drop")
    r.add_argument("--valid-fraction", type=number(float, 0, 1, high_open=True), default=0.1, help="share of descriptions held out")
    r.add_argument("--seed", type=int, default=0, help="split seed")
    r.add_argument("--augment", default="none",
                   help="comma list of: none (native 10-s clips), loop (each clip x3 -> NAME-loop30), "
                        "concat (3 clips with matching descriptions -> NAME-concat30)")
    r.add_argument("--workers", type=POSITIVE_INT, default=None, help="parallel processes (default: all cores)")
    r.set_defaults(func=_cmd_prepare)

    t = subparsers.add_parser("prepare-test", formatter_class=fmt,
                       help="check and clean a test description JSON (no audio) for generation")
    t.add_argument("--json", required=True, help="the public_test.json-style file")
    t.add_argument("--name", required=True, help="output name: manifests/NAME/test.json")
    t.add_argument("--train-json", default=None, help="training JSON, to count descriptions seen in training (default: not counted)")
    t.set_defaults(func=_cmd_prepare_test)

    a = subparsers.add_parser("eda", formatter_class=fmt,
                       help="exploratory report (PNG plots + Markdown) on descriptions, and audio when present")
    a.add_argument("--json", required=True, help="training descriptions (Zalo JSON)")
    a.add_argument("--test-json", default=None, help="a test JSON, to measure its overlap with training (default: no overlap report)")
    a.add_argument("--dataset", default=None,
                   help="name of a prepared dataset (manifests/NAME) for duration and loudness plots (default: no plots)")
    a.add_argument("--audio-sample", type=number(int, 0), default=2000, help="at most this many clips read for loudness")
    a.add_argument("--out", default="reports/eda", help="output folder")
    a.set_defaults(func=_cmd_eda)
