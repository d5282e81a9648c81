"""The `score` sub-command of `zalo-music` (wired in by `zalo_music.cli` through `register`)."""

from __future__ import annotations

import argparse
import sys

from .clap import CHECKPOINT_ENV, DEFAULT_CHECKPOINT


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `score` to the `zalo-music` sub-commands.

    Args:
        subparsers: what `ArgumentParser.add_subparsers()` returned.
    Returns:
        The `score` parser.
    """
    fmt = argparse.ArgumentDefaultsHelpFormatter
    s = subparsers.add_parser(
        "score", formatter_class=fmt,
        help="CLAP / FAD / FAS / CLAS of a folder of clips against a Zalo JSON (+ per-item JSON report)")
    s.add_argument("--audio-dir", required=True, help="folder of clips named by the JSON keys (MP3, WAV, ...)")
    s.add_argument("--json", required=True, help='the {"<id>.mp3": "<description>"} file the clips answer')
    s.add_argument("--reference", default=None,
                   help="FAD reference: audiocraft manifest folder (data.jsonl[.gz]) or folder of audio; "
                        "without it only CLAP is computed")
    s.add_argument("--out", default=None, help="JSON report path; None: <audio-dir>/score.json")
    s.add_argument("--clap-checkpoint", default=None,
                   help=f"laion-clap checkpoint (path or //reference/...); None: ${CHECKPOINT_ENV}, "
                        f"else {DEFAULT_CHECKPOINT}")
    s.add_argument("--clap-model", default="HTSAT-base",
                   help="audio tower of the checkpoint (HTSAT-base for the music checkpoint)")
    s.add_argument("--batch-size", type=int, default=8,
                   help="clips/texts per CLAP forward pass (4-8 on a CPU, 32+ on a GPU)")
    s.add_argument("--device", default=None, help="torch device; None: cuda if available, else cpu")
    s.add_argument("--fad-tau", type=float, default=1.0, help="FAS = exp(-FAD / tau)")
    s.add_argument("--fad-inf", action="store_true", help="also report FAD-infinity (and fas_inf, clas_inf)")
    s.add_argument("--stats-cache", default="//reference/fad_stats",
                   help="folder caching reference statistics; 'none' disables the cache")
    s.add_argument("--worst", type=int, default=10, help="how many lowest-CLAP items to list")
    s.add_argument("--no-download", action="store_true",
                   help="never download the default CLAP checkpoint from the hub")
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    """Run `score` from parsed arguments (exit status: 0 ok, 2 when CLAP is unavailable).

    Args:
        args: parsed `score` options.
    """
    import os
    from pathlib import Path

    from .clap import ClapSpec, resolve_reference
    from .errors import MetricUnavailableError
    from .evaluator import ClasSettings
    from .score import format_report, score_folder

    cache = None if str(args.stats_cache).lower() == "none" else str(resolve_reference(args.stats_cache, True))
    settings = ClasSettings(
        clap=ClapSpec(checkpoint=args.clap_checkpoint, amodel=args.clap_model, device=args.device,
                      batch_size=args.batch_size, download=not args.no_download),
        fad_tau=args.fad_tau, fad_inf=args.fad_inf, stats_cache=cache)
    out = args.out or os.path.join(args.audio_dir, "score.json")
    try:
        report = score_folder(args.audio_dir, args.json, reference=args.reference, settings=settings, out=out,
                              worst=args.worst)
    except MetricUnavailableError as exc:
        print(f"zalo-music score: error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    print(f"report: {Path(out).resolve()}")
    return 0
