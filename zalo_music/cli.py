"""`zalo-music` command line: one sub-command per job, heavy imports only inside each."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import typing as tp


def _number(kind: tp.Callable[[str], tp.Any], low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> tp.Callable[[str], tp.Any]:
    """An argparse `type` that parses `kind` and checks the range, with a message naming the bounds."""
    def parse(text: str) -> tp.Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        bad_low = low is not None and (value <= low if low_open else value < low)
        bad_high = high is not None and (value >= high if high_open else value > high)
        if bad_low or bad_high:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {' and '.join(x for x in (lo, hi) if x)}")
        return value
    parse.__name__ = kind.__name__
    return parse


_POSITIVE_INT = _number(int, 1)
_POSITIVE_FLOAT = _number(float, 0, low_open=True)


def _shard(text: str) -> str:
    from .generate import parse_shard

    try:
        parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import main

    return main(probe_hub=not args.no_hub)


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from .data.demo import build_demo

    build_demo(args.out, n=args.clips, seed=args.seed, force=args.force)
    return 0


def _printable(text: str) -> str:
    """`text` with control characters escaped as repr() escapes them (the rest, accents included, kept)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .data.prepare import prepare

    augment = [a.strip() for a in args.augment.split(",") if a.strip()]
    report = prepare(args.json, args.audio_dir, args.name, sample_rate=args.sample_rate,
                     clip_seconds=args.clip_seconds, hop_seconds=args.hop, tail=args.tail,
                     valid_fraction=args.valid_fraction, seed=args.seed,
                     augmentations=augment, workers=args.workers)
    for err in report["errors"][:10]:
        # repr: an id or reason from the JSON may carry ESC sequences or newlines that would forge terminal lines
        print(f"  skipped {err['id']!r}: {_printable(err['reason'])}")
    if len(report["errors"]) > 10:
        print(f"  ... {len(report['errors']) - 10} more in {report['manifests']}/report.json")
    return 0 if report["prepared"] else 1


def _cmd_prepare_test(args: argparse.Namespace) -> int:
    from .data.testset import prepare_test

    report = prepare_test(args.json, args.name, train_json=args.train_json)
    for err in report["refused"][:10]:
        print(f"  refused {err['id']!r}: {err['reason']}")
    return 0 if report["usable"] else 1


def _cmd_eda(args: argparse.Namespace) -> int:
    from .data.eda import write_report

    write_report(args.json, args.out, test_json=args.test_json, dataset=args.dataset,
                 audio_sample=args.audio_sample)
    return 0


def _cmd_grid_local(args: argparse.Namespace) -> int:
    from .gridlocal import run_local

    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    return 1 if run_local(args.grid, gpus=gpus, parallel=args.parallel, allow_dirty=args.allow_dirty,
                          dry_run=args.dry_run) else 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .gridlocal import compare, print_comparison

    rows = compare(args.grid)
    print_comparison(args.grid, rows)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from .quickstart import main

    return main(args.overrides, clips=args.clips)


def _cmd_export(args: argparse.Namespace) -> int:
    if args.format == "transformers":
        from .transformers_export import export_transformers, push_to_hub

        if args.keep_adapters:
            raise ValueError("--keep-adapters: only with --format audiocraft (transformers' format has no LoRA "
                             "adapters; the export holds the merged LM)")
        out = export_transformers(args.xp, args.out, force=args.force)
        print(f"exported {args.xp} -> {out} (transformers format: MusicgenForConditionalGeneration"
              f".from_pretrained('{out}'), AutoProcessor, pipeline('text-to-audio', model='{out}'))")
    else:
        from .export import export_xp

        if args.push_to_hub:
            raise ValueError("--push-to-hub: only with --format transformers (the format the Hub's tools load)")
        out = export_xp(args.xp, args.out, force=args.force, keep_adapters=args.keep_adapters)
        print(f"exported {args.xp} -> {out} (load with MusicGen.get_pretrained('{out}'))")
    if args.push_to_hub:
        url = push_to_hub(out, args.push_to_hub, private=not args.public)
        print(f"pushed {out} -> {url} ({'public' if args.public else 'private'})")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate, settings_from_args
    from .submission import validate, write_zip

    model_spec, gen, rerank = settings_from_args(args)  # --candidates, --from-xp (zalo_music/generate.py)
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
        print(f"  {name!r}: {_printable('; '.join(problems))}")  # entry names come from a hostile ZIP
    if len(report.problems) > 50:
        print(f"  ... and {len(report.problems) - 50} more entries with problems")
    print(f"validate-submission {args.zip}: {report.checked} files checked, "
          f"{'OK' if report.ok else f'FAILED ({len(report.problems)} entries with problems)'}")
    return 0 if report.ok else 1


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs): every sub-command registered in full.

    Each sub-command's module is light at import (torch, audiocraft & co. are imported inside the command), so
    building the whole parser keeps `zalo-music --help` fast (tests/test_cli_help.py).

    Args:
        command: accepted for callers written when some sub-commands were registered only when chosen; it no
            longer changes the parser.
    """
    del command  # every sub-command is registered the same way now
    from . import decoding
    from .helpfmt import HelpFormatter as fmt

    p = argparse.ArgumentParser(prog="zalo-music", formatter_class=fmt,
                                description="Fine-tune MusicGen with Audiocraft + Dora; score with CLAS.")
    p.add_argument("--debug", action="store_true",
                   help="show the full traceback of an error and every upstream warning (also: ZALO_MUSIC_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("doctor", formatter_class=fmt, help="check the installation and say how to fix it")
    d.add_argument("--no-hub", action="store_true", help="skip the 2-s Hugging Face hub reachability probe")
    d.set_defaults(func=_cmd_doctor)

    g = sub.add_parser("demo-data", formatter_class=fmt,
                       help="render the embedded demo dataset (10-s 16 kHz MP3 + Zalo JSON)")
    g.add_argument("--out", default=os.path.join("data", "demo_source"), help="output folder")
    g.add_argument("--clips", type=_POSITIVE_INT, default=64, help="number of clips")
    g.add_argument("--seed", type=int, default=0, help="master seed (same seed, same files)")
    g.add_argument("--force", action="store_true", help="re-render clips that already exist")
    g.set_defaults(func=_cmd_demo_data)

    r = sub.add_parser("prepare", formatter_class=fmt,
                       help="Zalo JSON + recordings -> resampled FLAC windows, sidecars and audiocraft manifests")
    r.add_argument("--json", required=True, help='the {"<id>.mp3": "<description>"} file')
    r.add_argument("--audio-dir", required=True, help="folder with the recordings named by the JSON keys (any length)")
    r.add_argument("--name", required=True, help="dataset name: dset=zalo/prepared zalo.dataset=NAME")
    r.add_argument("--sample-rate", type=_POSITIVE_INT, default=32000, help="output sample rate (the codec's)")
    r.add_argument("--clip-seconds", type=_POSITIVE_FLOAT, default=10.0,
                   help="window length: each recording becomes consecutive windows this long")
    r.add_argument("--hop", type=_POSITIVE_FLOAT, default=None,
                   help="seconds from one window's start to the next's, at most --clip-seconds (default: "
                        "--clip-seconds, back to back)")
    r.add_argument("--tail", choices=("overlap", "pad", "drop"), default="overlap",  # data.segment.TAILS
                   help="a recording's end that fills no whole window: overlap (a last window ending at the "
                        "recording's end), pad (zero-padded, when at least half a clip) or drop")
    r.add_argument("--valid-fraction", type=_number(float, 0, 1, high_open=True), default=0.1, help="share of descriptions held out")
    r.add_argument("--seed", type=int, default=0, help="split seed")
    r.add_argument("--augment", default="none",
                   help="comma list of: none (native 10-s clips), loop (each clip x3 -> NAME-loop30), "
                        "concat (3 clips with matching descriptions -> NAME-concat30)")
    r.add_argument("--workers", type=_POSITIVE_INT, default=None, help="parallel processes (default: all cores)")
    r.set_defaults(func=_cmd_prepare)

    t = sub.add_parser("prepare-test", formatter_class=fmt,
                       help="check and clean a test description JSON (no audio) for generation")
    t.add_argument("--json", required=True, help="the public_test.json-style file")
    t.add_argument("--name", required=True, help="output name: manifests/NAME/test.json")
    t.add_argument("--train-json", default=None, help="training JSON, to count descriptions seen in training (default: not counted)")
    t.set_defaults(func=_cmd_prepare_test)

    a = sub.add_parser("eda", formatter_class=fmt,
                       help="exploratory report (PNG plots + Markdown) on descriptions, and audio when present")
    a.add_argument("--json", required=True, help="training descriptions (Zalo JSON)")
    a.add_argument("--test-json", default=None, help="a test JSON, to measure its overlap with training (default: no overlap report)")
    a.add_argument("--dataset", default=None,
                   help="name of a prepared dataset (manifests/NAME) for duration and loudness plots (default: no plots)")
    a.add_argument("--audio-sample", type=_number(int, 0), default=2000, help="at most this many clips read for loudness")
    a.add_argument("--out", default="reports/eda", help="output folder")
    a.set_defaults(func=_cmd_eda)

    gl = sub.add_parser("grid-local", formatter_class=fmt,
                        help="run every XP of a Dora grid on this machine (no SLURM), resuming, then the table")
    gl.add_argument("grid", help="grid name under grids/ (e.g. zalo_tiny_lr_epochs)")
    gl.add_argument("--gpus", default=None, help="comma list of GPU ids, one XP per GPU (default: CPU)")
    gl.add_argument("--parallel", type=_POSITIVE_INT, default=None, help="XPs at a time (default: number of GPUs, or 1)")
    gl.add_argument("--allow-dirty", action="store_true",
                    help="run from a git tree with uncommitted changes (recorded in each XP's grid_local.json)")
    gl.add_argument("--dry-run", action="store_true", help="list the XPs and their state, run nothing")
    gl.set_defaults(func=_cmd_grid_local)

    c = sub.add_parser("compare", formatter_class=fmt,
                       help="rank a grid's XPs by evaluate CLAS (else valid ce) and mark the best")
    c.add_argument("grid", help="grid name under grids/")
    c.add_argument("--json", action="store_true", help="also print the rows as JSON")
    c.set_defaults(func=_cmd_compare)

    q = sub.add_parser("quickstart", formatter_class=fmt,
                       help="main job on the demo data: build, prepare, train solver=zalo/tiny, report")
    q.add_argument("--clips", type=_POSITIVE_INT, default=64, help="number of demo clips")
    q.add_argument("overrides", nargs="*", help="extra Hydra overrides for the tiny XP, e.g. optim.epochs=4")
    q.set_defaults(func=_cmd_quickstart)

    e = sub.add_parser("export", formatter_class=fmt,
                       help="XP -> folder loadable by MusicGen.get_pretrained or transformers (best state)")
    e.add_argument("xp", help="signature, //sig/<S> or XP folder")
    e.add_argument("out", help="output folder")
    e.add_argument("--format", choices=("audiocraft", "transformers"), default="audiocraft",
                   help="audiocraft: MusicGen.get_pretrained's folder; transformers: MusicgenForConditionalGeneration "
                        "+ processor + model card (docs/export.md)")
    e.add_argument("--push-to-hub", metavar="REPO", default=None,
                   help="--format transformers: also upload to this Hub repo (private unless --public; token from "
                        "HF_TOKEN or `huggingface-cli login`) (default: no upload)")
    e.add_argument("--public", action="store_true", help="--push-to-hub: make the repo public")
    e.add_argument("--force", action="store_true", help="replace an existing, different export")
    e.add_argument("--keep-adapters", action="store_true",
                   help="LoRA XP: also write its adapters alone (lora_adapters.pt) beside the merged LM")
    e.set_defaults(func=_cmd_export)

    gn = sub.add_parser("generate", formatter_class=fmt,
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
    gn.add_argument("--fas-weight", type=_number(float, 0), default=0.0,
                    help="best-of-N objective clap - w*|e - mu_ref|^2 (mu_ref: --rerank-reference's mean CLAP "
                         "embedding); 0: CLAP only")
    gn.add_argument("--rerank-reference", default=None, help="FAD reference for --fas-weight (manifest or folder) (default: none, only with --fas-weight 0)")
    gn.set_defaults(func=_cmd_generate)

    v = sub.add_parser("validate-submission", formatter_class=fmt,
                       help="check a submission ZIP: ids, decoding, duration, rate, silence, clipping")
    v.add_argument("zip", help="the submission ZIP")
    v.add_argument("--json", required=True, help="the test JSON the ZIP answers")
    v.add_argument("--duration", type=_POSITIVE_FLOAT, default=10.0, help="expected seconds per clip (+-0.1)")
    v.add_argument("--sample-rate", type=_POSITIVE_INT, default=None, help="expected sample rate (default: any)")
    v.add_argument("--channels", type=_number(int, 0), default=1,
                   help="expected channels per clip (0: any)")
    v.set_defaults(func=_cmd_validate)

    from .classic_train import register as register_train  # each is light at import: keeps --help fast
    from .conditioning import register as register_check_conditioning
    from .metrics.cli import register as register_score
    from .standins.cli import register as register_standins
    from .tokens.cli import register as register_tokenize
    from .webdemo import register as register_demo

    register_score(sub)
    register_standins(sub)
    register_tokenize(sub)
    register_train(sub)
    register_demo(sub)
    register_check_conditioning(sub)
    return p


def describe_error(exc: BaseException) -> str:
    """One line for an error a user can fix: the file involved, what is wrong and what to do.

    Args:
        exc: the exception that ended the command.
    """
    import json as _json
    import pickle
    import zipfile

    from .fileio import friendly_os_error

    if isinstance(exc, pickle.UnpicklingError):
        return (f"a checkpoint holds objects that the safe loader refuses ({str(exc).splitlines()[0][:200]}): "
                "only load model files you trust; zalo-music never unpickles arbitrary code")
    if isinstance(exc, _json.JSONDecodeError):
        return f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}: fix the file"
    if isinstance(exc, zipfile.BadZipFile):
        return f"not a readable ZIP or checkpoint file ({exc}): the file is corrupt or truncated; rebuild it"
    if isinstance(exc, OSError) and exc.errno is not None:
        return friendly_os_error(exc)
    if isinstance(exc, RecursionError):
        return "input nested too deeply to read (a hostile or broken file?)"
    if isinstance(exc, EOFError):
        return f"file ended early ({exc}): it is truncated; re-create or re-download it"
    if isinstance(exc, RuntimeError) and ("PytorchStreamReader" in str(exc) or "zip archive" in str(exc)):
        return f"model file is corrupt or truncated ({str(exc).splitlines()[0][:200]}): re-export or re-download it"
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, (ValueError, OSError, KeyError, UnicodeError)):
        return text or type(exc).__name__
    return f"unexpected {type(exc).__name__}: {text[:300]} (rerun with --debug for the traceback, and report it)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `zalo-music` command.

    One error boundary for every command: an error becomes one line on stderr naming the file and the fix,
    exit code 2; `--debug` (or ZALO_MUSIC_DEBUG=1) re-raises it with its traceback.

    Args:
        argv: the arguments after the program name (None: `sys.argv[1:]`).
    Returns:
        The exit status.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("ZALO_MUSIC_DEBUG") == "1"
    previous = os.environ.get("ZALO_MUSIC_DEBUG")
    if debug:  # also for the processes this one starts (dora, workers): tracebacks and every upstream warning
        os.environ["ZALO_MUSIC_DEBUG"] = "1"
    # After parsing, so `--help` and usage errors stay instant: the environment probe may take 2 s.
    from .runtime import prepare

    prepare()
    from .procutil import Terminated, interrupt_on_termination

    interrupt_on_termination()  # SIGTERM/SIGHUP (SLURM, timeout, a closed terminal) unwind like Ctrl-C
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        signame = exc.args[0] if isinstance(exc, Terminated) else "SIGINT"
        print(f"zalo-music {args.command}: interrupted by {signame} (a rerun resumes)", file=sys.stderr)
        return 128 + (exc.signum if isinstance(exc, Terminated) else 2)
    except Exception as exc:  # noqa: BLE001 - the one boundary: one clear line, the traceback with --debug
        if debug:
            raise
        print(f"zalo-music {args.command}: error: {describe_error(exc)}", file=sys.stderr)
        return 2
    finally:  # an in-process caller (a notebook, the tests) keeps its own environment
        if previous is None:
            os.environ.pop("ZALO_MUSIC_DEBUG", None)
        else:
            os.environ["ZALO_MUSIC_DEBUG"] = previous


if __name__ == "__main__":
    sys.exit(main())
