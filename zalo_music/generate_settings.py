"""What a `generate` run decodes with and which model it loads: from an XP (`--from-xp`, as the XP was scored)
or from the command line. Reads settings only; `generate.py` runs them."""

from __future__ import annotations

import dataclasses
import typing as tp

from . import decoding
from .decoding import GenerationConfig
from .decoding import from_cfg as generation_config_from_cfg
from .metrics.eval_settings import rerank_options_from_cfg


def from_xp(sig: str) -> tuple[str, GenerationConfig, tp.Any, dict]:
    """What `generate --from-xp SIG` reuses: the model an XP scored, its decoding and its reranking CLAP.

    An eval-only XP (`execute_only=evaluate`) scores its `continue_from` (`//sig/<S>` of a training XP, or
    `//pretrained/<name>`); any other XP scores its own best state (`//sig/SIG`).

    Args:
        sig: the XP's Dora signature.
    Returns:
        `(model spec for load_model, GenerationConfig, RerankOptions, info)`; info holds the XP's last evaluate
        metrics (when it has some) and its folder.
    Raises:
        ValueError: unknown signature, or an XP whose `continue_from` is not a model `generate` can load.
    """
    import json as _json

    from .train import main

    try:
        xp = main.get_xp_from_sig(sig)
    except Exception as exc:  # noqa: BLE001 - dora raises a bare RuntimeError for unknown signatures
        raise ValueError(f"--from-xp {sig}: no such XP in {main.dora.dir}/xps ({exc})") from exc
    cfg = xp.cfg
    source = cfg.get("continue_from") if cfg.get("execute_only") == "evaluate" else None
    if source is None:
        spec = f"//sig/{sig}"
    elif str(source).startswith("//pretrained/"):
        spec = str(source)[len("//pretrained/"):]
    else:
        spec = str(source)
    from .metrics.eval_settings import reference_path

    reference = reference_path(cfg)
    info: dict = {"folder": str(xp.folder), "model": spec}
    history = xp.folder / "history.json"
    if history.is_file():
        evals = [h["evaluate"] for h in _json.loads(history.read_text()) if "evaluate" in h]
        if evals:
            info["evaluate"] = evals[-1]
    return spec, generation_config_from_cfg(cfg), rerank_options_from_cfg(cfg, reference), info



def settings_from_args(args: tp.Any) -> tuple[str, GenerationConfig, tp.Any]:
    """Model, decoding and reranking of a `zalo-music generate` command line, `--from-xp` applied.

    With `--from-xp SIG` the model, the `zalo.generate.*` decoding, `zalo.eval.candidates` and the evaluate CLAP
    come from that XP, so the submission is generated exactly as the XP was scored. An option left at its
    default takes the XP's value; an option given with another value than the XP's is refused (naming it).
    `args.duration` / `args.sample_rate` are updated to what will be generated (the ZIP validator reads them).

    Args:
        args: the parsed command line.
    Returns:
        `(model spec, GenerationConfig, RerankOptions)`.
    Raises:
        ValueError: an option contradicts `--from-xp`, or the XP is unknown.
    """
    from .metrics.clap import ClapSpec
    from .rerank import RerankOptions

    if getattr(args, "from_xp", None):
        spec, gen, rerank, info = from_xp(args.from_xp)
        wanted = {**vars(gen), "model": spec, "clap_checkpoint": rerank.clap.checkpoint,
                  "clap_model": rerank.clap.amodel, "fas_weight": rerank.fas_weight}
        defaults = {**decoding.XP_OPTIONS, "model": "facebook/musicgen-small", "clap_checkpoint": None,
                    "clap_model": "HTSAT-base", "fas_weight": 0.0}
        # the decoder is the user's choice, not the XP's: both draw the same codes (tests/test_fast_decoder.py)
        gen = dataclasses.replace(gen, decoder=getattr(args, "decoder", gen.decoder))
        for name, default in defaults.items():
            given = getattr(args, name, default)
            if given != default and given != wanted[name]:
                raise ValueError(f"--{name.replace('_', '-')} {given}: --from-xp {args.from_xp} was scored with "
                                 f"{wanted[name]!r}; drop the option (the submission is generated as the XP was "
                                 "scored) or generate without --from-xp")
        # the CLAP precision too is the user's (the machine's): auto follows the device, as in the XP's evaluate
        rerank = dataclasses.replace(rerank, dtype=getattr(args, "clap_dtype", rerank.dtype))
        if getattr(args, "rerank_reference", None):
            rerank = dataclasses.replace(rerank, reference=args.rerank_reference)
        scored = info.get("evaluate", {})
        print(f"--from-xp {args.from_xp}: model {spec}, {gen}, CLAP {rerank.clap.amodel} "
              f"{rerank.clap.checkpoint or '(default)'}"
              + (f"; the XP scored clas {scored['clas']:.4f} (clap {scored.get('clap', float('nan')):.4f})"
                 if "clas" in scored else ""))
        args.duration, args.sample_rate = gen.duration, gen.sample_rate
        return spec, gen, rerank
    from .metrics.clap import resolve_reference

    gen = decoding.from_args(args)
    # the reference statistics of the FAS-aware objective are cached where `score` caches them
    cache = str(resolve_reference("//reference/fad_stats", create=True)) if args.fas_weight > 0 else None
    rerank = RerankOptions(clap=ClapSpec(checkpoint=args.clap_checkpoint, amodel=args.clap_model,
                                         device=args.device),
                           fas_weight=args.fas_weight, reference=args.rerank_reference, stats_cache=cache,
                           dtype=args.clap_dtype)
    return args.model, gen, rerank
