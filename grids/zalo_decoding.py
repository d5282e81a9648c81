"""Decoding grid: eval-only XPs over CFG scale, top-k, top-p, temperature and best-of-N, ranked by CLAS.

    dora -P zalo_music grid zalo_decoding --dry_run --init          # list the XPs (pretrained musicgen-small)
    ZALO_DECODING_FROM=//sig/<S> zalo-music grid-local zalo_decoding --gpus 0   # score a trained XP's decodings
    zalo-music compare zalo_decoding                                # ranked by CLAS, best marked *
    zalo-music generate --from-xp <best SIG> --json public_test.json --out out/ --zip submission.zip

Every XP loads the same weights (`continue_from`) and runs only the evaluate stage with
`zalo.eval.candidates` set, so its evaluate split is generated exactly as `zalo-music generate` would generate it
(`zalo.generate.*` decoding, 10-s MP3s, best of N by CLAP) and scored as `zalo-music score` scores it
(`zalo_music.metrics.solver_eval.evaluate_clas_as_generate`). Each setting is its own XP, hence its own
signature; `generate --from-xp <SIG>` reads that XP's settings back, so the submission is generated as it
was scored.

The sweep varies one setting at a time around MusicGen's defaults (cfg_coef 3, top_k 250, top_p 0,
temperature 1), each at 1 and 4 candidates. Environment variables (read when the grid is built, so they are part
of what each XP's overrides say):

- `ZALO_DECODING_FROM`: the weights, `//sig/<training SIG>` or `//pretrained/<name>`; unset: the recipe's own
  `continue_from` (pretrained musicgen-small for the default recipe).
- `ZALO_DECODING_SOLVER` / `ZALO_DECODING_DSET`: recipe and data (default `zalo/musicgen_small_ft`,
  `zalo/prepared`; the tiny CPU rehearsal uses `zalo/tiny`, `zalo/demo`).
- `ZALO_DECODING_OVERRIDES`: extra `key=value` overrides for every XP, space-separated (e.g. the CLAP:
  `zalo.eval.clap_checkpoint=... zalo.eval.clap_model=HTSAT-tiny`).
- `ZALO_DECODING_SWEEP`: `full` (default, 16 XPs) or `quick` (3 XPs: defaults at N=1 and N=4, cfg_coef 1.5).
"""

from __future__ import annotations

import os

from audiocraft.environment import AudioCraftEnvironment

from ._explorers import ZaloExplorer

#: One setting changed at a time from MusicGen's defaults (the empty dict: the defaults themselves).
VARIATIONS: list[dict] = [
    {},
    {"zalo.generate.cfg_coef": 1.5},
    {"zalo.generate.cfg_coef": 5.0},
    {"zalo.generate.top_k": 50},
    {"zalo.generate.top_k": 500},
    {"zalo.generate.top_k": 0, "zalo.generate.top_p": 0.9},
    {"zalo.generate.temperature": 0.8},
    {"zalo.generate.temperature": 1.2},
]
CANDIDATES = (1, 4)


def base() -> dict:
    """Overrides shared by every XP: the recipe, eval-only with CLAS as `generate` produces it, the weights."""
    out = {"solver": os.environ.get("ZALO_DECODING_SOLVER", "zalo/musicgen_small_ft"),
           "dset": os.environ.get("ZALO_DECODING_DSET", "zalo/prepared"),
           # one evaluate pass is the whole XP: grid-local counts it done after one history entry
           "execute_only": "evaluate", "optim.epochs": 1, "zalo.eval.clas": True}
    if os.environ.get("ZALO_DECODING_FROM"):
        out["continue_from"] = os.environ["ZALO_DECODING_FROM"]
    for item in os.environ.get("ZALO_DECODING_OVERRIDES", "").split():
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"ZALO_DECODING_OVERRIDES: {item!r} is not key=value")
        out[key] = value
    return out


def sweep(kind: str | None = None) -> list[dict]:
    """The per-XP decoding overrides, in launch order.

    Args:
        kind: `full` or `quick` (default: `$ZALO_DECODING_SWEEP`, else `full`).
    """
    kind = kind or os.environ.get("ZALO_DECODING_SWEEP", "full")
    if kind == "quick":
        return [{"zalo.eval.candidates": 1}, {"zalo.eval.candidates": 4},
                {"zalo.eval.candidates": 1, "zalo.generate.cfg_coef": 1.5}]
    if kind != "full":
        raise ValueError(f"ZALO_DECODING_SWEEP={kind!r}: choose full or quick")
    return [{**v, "zalo.eval.candidates": n} for v in VARIATIONS for n in CANDIDATES]


@ZaloExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, partition=AudioCraftEnvironment.get_slurm_partitions(["team", "global"]))
    launcher.bind_(base())
    for overrides in sweep():
        launcher(overrides)
