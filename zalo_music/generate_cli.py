"""`zalo-music generate` and `validate-submission`: their parsers and entry points (light at import: torch and
the codecs load inside each command). The decoding flags come from `decoding.GenerationConfig`."""

from __future__ import annotations

import argparse

from .argtypes import POSITIVE_FLOAT, POSITIVE_INT, number, printable


def _shard(text: str) -> str:
    from .batches import parse_shard

    try:
        parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate
    from .generate_settings import settings_from_args
    from .submission import validate, write_zip

    model_spec, gen, rerank = settings_from_args(args)  # --candidates, --from-xp (generate_settings.py)
    summary = generate(model_spec, args.json, args.out, gen, shard_spec=args.shard, device=args.device,
                       rerank=rerank)
    zip_path = args.zip or args.zip_partial
    if zip_path:
        if args.shard:
            print("--zip ignored with --shard: zip once every shard is done")
            return 0
        refused = summary["refused"]
        failed = set(summary.get("failed", ()))
        if failed:  # a generation or write failure: a rerun may help (it resumes), a refusal cannot
            print(f"no ZIP written: {len(failed)} clips failed (listed in {summary['failures_file']}); rerun the "
                  "same command to retry them (finished clips are kept)")
            return 1
        if refused and not args.zip_partial:
            print(f"no ZIP written: {len(refused)} ids were refused (their input cannot be generated; a rerun "
                  "will not change that):")
            for k, why in sorted(refused.items())[:10]:
                print(f"  {k!r}: {why!r}")
            print(f"(all of them in {summary['failures_file']}) fix these ids in the JSON, or pass --zip-partial "
                  "PATH instead of --zip to write a ZIP without them (the submission then lacks those ids)")
            return 1
        path = write_zip(args.out, args.json, zip_path, skip=refused)
        report = validate(path, args.json, duration=args.duration, sample_rate=args.sample_rate)
        if refused:  # --zip-partial: the refused ids are absent on purpose
            for k in refused:
                report.problems.pop(k, None)
        print(f"submission {path}: {report.checked} files{f' ({len(refused)} refused ids left out)' if refused else ''}, "
              f"{'valid' if report.ok else f'{len(report.problems)} problems'}")
        return 0 if report.ok else 1
    return 0 if not summary["refused"] else 1


def _cmd_validate(args: argparse.Namespace) -> int:
    from .submission import validate

    report = validate(args.zip, args.json, duration=args.duration, sample_rate=args.sample_rate,
                      channels=args.channels or None)
    for name, problems in sorted(report.problems.items())[:50]:
        print(f"  {name!r}: {printable('; '.join(problems))}")  # entry names come from a hostile ZIP
    if len(report.problems) > 50:
        print(f"  ... and {len(report.problems) - 50} more entries with problems")
    print(f"validate-submission {args.zip}: {report.checked} files checked, "
          f"{'OK' if report.ok else f'FAILED ({len(report.problems)} entries with problems)'}")
    return 0 if report.ok else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `generate` and `validate-submission` to the `zalo-music` parser.

    Args:
        subparsers: what `ArgumentParser.add_subparsers()` returned.
    """
    from . import decoding
    from .helpfmt import HelpFormatter as fmt
    from .metrics.clap import AUDIO_DTYPES

    gn = subparsers.add_parser("generate", formatter_class=fmt,
                        help="one MP3 per test description (batched, resumable, sharded), optional ZIP")
    gn.add_argument("--model", default="facebook/musicgen-small",
                    help="hub name, exported folder, or //sig/<S> of an XP")
    gn.add_argument("--json", required=True, help='{"<id>.mp3": "<description>"} to generate')
    gn.add_argument("--out", required=True, help="output folder (one file per id, named by the id)")
    zips = gn.add_mutually_exclusive_group()
    zips.add_argument("--zip", default=None,
                      help="also write and validate this submission ZIP (not written if any id is refused) (default: no ZIP)")
    zips.add_argument("--zip-partial", default=None, metavar="ZIP",
                      help="like --zip, but leave refused ids out of the ZIP instead of writing none (default: no ZIP)")
    decoding.add_arguments(gn)  # --duration ... --decoder: one flag per GenerationConfig field
    gn.add_argument("--shard", type=_shard, default=None,
                    help="i/n: do only shard i of n (0-based), e.g. one per GPU or machine: batch k of the sorted "
                         "ids goes to shard k mod n, so the shards together give the unsharded run's bytes (default: all ids)")
    gn.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    gn.add_argument("--from-xp", default=None, metavar="SIG",
                    help="model, decoding, candidates and CLAP of this (eval) XP: generate as it was scored (default: the options "
                         "given here)")
    gn.add_argument("--clap-checkpoint", default=None,
                    help="CLAP of --candidates (keep the judge's: as `score --clap-checkpoint`) (default: as `score`)")
    gn.add_argument("--clap-model", default="HTSAT-base", help="audio tower of --clap-checkpoint")
    gn.add_argument("--clap-dtype", choices=("auto", *AUDIO_DTYPES), default="auto",
                    help="precision of the audio tower scoring the candidates: auto is bfloat16 on a GPU and "
                         "float32 (the judge's) on a CPU; bfloat16's embeddings are within ~1e-4 cosine of "
                         "float32's (docs/generation.md)")
    gn.add_argument("--fas-weight", type=number(float, 0), default=0.0,
                    help="best-of-N objective clap - w*|e - mu_ref|^2 (mu_ref: --rerank-reference's mean CLAP "
                         "embedding); 0: CLAP only")
    gn.add_argument("--rerank-reference", default=None, help="FAD reference for --fas-weight (manifest or folder) (default: none, only with --fas-weight 0)")
    gn.set_defaults(func=_cmd_generate)

    v = subparsers.add_parser("validate-submission", formatter_class=fmt,
                       help="check a submission ZIP: ids, decoding, duration, rate, silence, clipping")
    v.add_argument("zip", help="the submission ZIP")
    v.add_argument("--json", required=True, help="the test JSON the ZIP answers")
    v.add_argument("--duration", type=POSITIVE_FLOAT, default=10.0, help="expected seconds per clip (+-0.1)")
    v.add_argument("--sample-rate", type=POSITIVE_INT, default=None, help="expected sample rate (default: any)")
    v.add_argument("--channels", type=number(int, 0), default=1,
                   help="expected channels per clip (0: any)")
    v.set_defaults(func=_cmd_validate)
