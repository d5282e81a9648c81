"""`zalo-music standins`: build the offline stand-ins of every hub artifact the real recipe uses."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Build random-weight stand-ins, with the real architectures, configs and file formats, of
facebook/musicgen-small, facebook/encodec_32khz, t5-base, roberta-base (+ the bert-base-uncased and
facebook/bart-base tokenizers laion-clap loads at import) and the LAION-CLAP music checkpoint, offline.

  zalo-music standins --out standins/
  export HF_HOME=standins/hf HF_HUB_OFFLINE=1 ZALO_MUSIC_REFERENCE_DIR=standins/reference

They prove that the pipeline runs end to end (shapes, formats, loaders), not that it sounds good: every
weight is random and every score computed with them is meaningless.
"""


def _cmd(args: argparse.Namespace) -> int:
    import shlex

    from .build import build_standins

    summary = build_standins(args.out, depth=args.depth, seed=args.seed,
                             log=lambda m: print(m, flush=True))
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in summary["environment"].items()
                   if k in ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "ZALO_MUSIC_REFERENCE_DIR"))
    built = sum(1 for v in summary["artifacts"].values() if isinstance(v, dict))
    print(f"standins: {built} built, {len(summary['artifacts']) - built} already there, in "
          f"{summary['seconds']:.0f}s -> {args.out} (depth {args.depth or 'full'}, seed {args.seed})")
    print(f"  use them with: export {env}")
    if summary["overrides"]:
        print(f"  and add to musicgen-small recipes: {' '.join(summary['overrides'])}")
    return 0


def register(sub) -> None:
    """Add the `standins` sub-command to `sub` (the `zalo-music` sub-parsers)."""
    from ..helpfmt import RawDescriptionHelpFormatter

    p = sub.add_parser("standins", formatter_class=RawDescriptionHelpFormatter,
                       help="build offline random-weight stand-ins of every hub artifact (plumbing tests)",
                       description=DESCRIPTION)
    p.add_argument("--out", required=True, help="output folder: <out>/hf (HF_HOME) and <out>/reference")
    p.add_argument("--depth", type=int, default=None,
                   help="cut the MusicGen LM, T5 and RoBERTa to N transformer layers (default: full depth); "
                        "recipes then need transformer_lm.num_layers=N")
    p.add_argument("--seed", type=int, default=0, help="weight seed: the same seed gives the same tensors")
    p.set_defaults(func=_cmd)
