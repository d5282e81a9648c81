"""`zalo-music export`: its parser and entry point (light at import: torch and transformers load inside)."""

from __future__ import annotations

import argparse


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


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `export` to the `zalo-music` parser.

    Args:
        subparsers: what `ArgumentParser.add_subparsers()` returned.
    """
    from .helpfmt import HelpFormatter as fmt

    e = subparsers.add_parser("export", formatter_class=fmt,
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
