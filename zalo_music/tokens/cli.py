"""`zalo-music tokenize`: the sub-command (registered by `zalo_music.cli`)."""

from __future__ import annotations

import argparse
import json


def _cmd_tokenize(args: argparse.Namespace) -> int:
    from .encode import tokenize

    summary = tokenize(args.overrides, dataset=args.dataset, out=args.out, batch_size=args.batch_size,
                       device=args.device, shard_size=args.shard_size, quiet=args.quiet)
    parts = ", ".join(f"{s}: {v['encoded']} encoded, {v['cached']} already cached" for s, v in
                      summary["splits"].items())
    print(f"tokenize: {parts} in {summary['seconds']} s -> {summary['cache']}")
    run = [*args.overrides, *([f"zalo.dataset={args.dataset}"] if args.dataset else [])]
    if not any(o.startswith("train_from=") for o in run):
        run.append("train_from=tokens")
    print("train from it with: dora -P zalo_music run " + " ".join(run))
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `tokenize` sub-command to the `zalo-music` parser.

    Args:
        subparsers: the object `ArgumentParser.add_subparsers` returned.
    Returns:
        The sub-command's parser.
    """
    from ..helpfmt import HelpFormatter

    p = subparsers.add_parser(
        "tokenize", formatter_class=HelpFormatter,
        help="encode a prepared dataset once with the XP's compression model (fast fine-tuning from tokens)",
        description="Encode the train and valid clips of a prepared dataset with the compression model of the "
                    "XP that OVERRIDES describe, into int16 memory-mapped shards. Resumable: finished shards "
                    "are skipped. Train from the cache with the same overrides plus train_from=tokens "
                    "(or train_from=tokens_loop30: the 30-s loop in token space).")
    p.add_argument("overrides", nargs="*",
                   help="the XP's Dora/Hydra overrides (solver and dset), e.g. solver=zalo/tiny dset=zalo/demo")
    p.add_argument("--dataset", default=None, help="prepared dataset NAME (adds zalo.dataset=NAME) (default: the XP's zalo.dataset)")
    p.add_argument("--out", "--cache-dir", dest="out", default=None,
                   help="cache root (default: zalo.tokens.dir, else $ZALO_MUSIC_DATA_DIR/tokens); the cache "
                        "goes to ROOT/DATASET/<codec>-<key hash>")
    p.add_argument("--batch-size", type=int, default=16, help="clips per encoder forward pass")
    p.add_argument("--shard-size", type=int, default=512, help="clips per shard (the unit of resumption)")
    p.add_argument("--device", default="cpu", help="torch device of the encoder (e.g. cuda)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")
    p.set_defaults(func=_cmd_tokenize)
    return p
