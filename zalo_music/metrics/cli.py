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
    from ..helpfmt import HelpFormatter as fmt

    s = subparsers.add_parser(
        "score", formatter_class=fmt,
        help="CLAP / FAD / FAS / CLAS of a folder of clips against a Zalo JSON (+ per-item JSON report)")
    s.add_argument("--audio-dir", required=True, help="folder of clips named by the JSON keys (MP3, WAV, ...)")
    s.add_argument("--json", required=True, help='the {"<id>.mp3": "<description>"} file the clips answer')
    s.add_argument("--reference", default=None,
                   help="FAD reference: audiocraft manifest folder (data.jsonl[.gz]) or folder of audio "
                        "(default: none, only CLAP is computed)")
    s.add_argument("--out", default=None, help="JSON report path (default: <audio-dir>/score.json)")
    s.add_argument("--clap-checkpoint", default=None,
                   help=f"laion-clap checkpoint (path or //reference/...) (default: ${CHECKPOINT_ENV}, "
                        f"else {DEFAULT_CHECKPOINT})")
    s.add_argument("--clap-model", default="HTSAT-base",
                   help="audio tower of the checkpoint (HTSAT-base for the music checkpoint)")
    s.add_argument("--batch-size", type=int, default=8,
                   help="clips/texts per CLAP forward pass (4-8 on a CPU, 32+ on a GPU)")
    s.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    s.add_argument("--fad-tau", type=float, default=1.0, help="FAS = exp(-FAD / tau)")
    s.add_argument("--fad-inf", action="store_true",
                   help="also report FAD-infinity, FAD extrapolated to N -> infinity (and fas_inf, clas_inf): "
                        "comparable across different numbers of clips, unlike FAD (docs/evaluation.md)")
    s.add_argument("--fad-inf-method", choices=("subsets", "bootstrap"), default="subsets",
                   help="FAD-inf estimator: subsets without replacement (N/5..N), or fadtk's bootstrap (with "
                        "replacement, 25 sizes from 500 to N) to compare with published FAD-inf numbers")
    s.add_argument("--allow-missing", action="store_true",
                   help="exit 0 even when clips are missing or undecodable (the report still lists them and "
                        "gives CLAP/CLAS with each counted as CLAP 0)")
    s.add_argument("--stats-cache", default="//reference/fad_stats",
                   help="folder caching reference statistics; 'none' disables the cache")
    s.add_argument("--worst", type=int, default=10, help="how many lowest-CLAP items to list")
    s.add_argument("--no-download", action="store_true",
                   help="never download the default CLAP checkpoint from the hub")
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    """Run `score` from parsed arguments.

    Exit status: 0 scored completely (or `--allow-missing`); 1 scored, but clips are missing or undecodable
    (the report and the CLAS with each counted as CLAP 0 are still written); 2 nothing scored (CLAP
    unavailable, no clip found, bad reference).

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
        fad_tau=args.fad_tau, fad_inf=args.fad_inf, fad_inf_method=args.fad_inf_method, stats_cache=cache)
    out = args.out or os.path.join(args.audio_dir, "score.json")
    try:
        report = score_folder(args.audio_dir, args.json, reference=args.reference, settings=settings, out=out,
                              worst=args.worst)
    except (MetricUnavailableError, ValueError, FileNotFoundError) as exc:
        print(f"zalo-music score: error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    print(f"report: {Path(out).resolve()}")
    c = report["completeness"]
    if not c["complete"] and not args.allow_missing:
        as_zero = f"CLAP {c['clap_missing_as_zero']:.4f}"
        if "clas_missing_as_zero" in c:
            as_zero += f", CLAS {c['clas_missing_as_zero']:.4f}"
        print(f"zalo-music score: error: incomplete submission: {c['n_missing']} missing and {c['n_failed']} "
              f"undecodable/refused of {c['n_expected']} clips; the metrics above cover the scored clips only "
              f"(with each missing/undecodable clip counted as CLAP 0: {as_zero}). Fix: generate the missing "
              "clips, or pass --allow-missing to accept the partial score.", file=sys.stderr)
        return 1
    return 0
