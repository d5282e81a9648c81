"""The readers of an XP's `zalo.eval` block: its CLAP, FAD reference, statistics cache, CLAS settings and
best-of-N reranking options.

Config readers only (no model, no generation): the evaluate stage (`solver_eval`), `zalo-music generate
--from-xp` and the config tests all read the block here, and this module imports neither of them.
"""

from __future__ import annotations

import omegaconf

from .clap import ClapSpec
from .evaluator import ClasSettings
from .registry import enabled


def clap_spec_from_cfg(cfg: omegaconf.DictConfig, device: str | None) -> ClapSpec:
    """The CLAP model of an XP's evaluation (`zalo.eval.clap_*`, `batch_size`, `download`).

    Args:
        cfg: the composed XP config.
        device: where CLAP runs when `zalo.eval.device` is null (None: CLAP's own choice).
    """
    block = cfg.zalo.eval
    return ClapSpec(checkpoint=block.clap_checkpoint, amodel=str(block.clap_model), device=block.device or device,
                    batch_size=int(block.batch_size), download=bool(block.download))


def stats_cache_from_cfg(cfg: omegaconf.DictConfig) -> str | None:
    """The folder of cached FAD reference statistics (`zalo.eval.stats_cache`, created), or None.

    Args:
        cfg: the composed XP config.
    """
    from .clap import resolve_reference

    cache = cfg.zalo.eval.stats_cache
    return str(resolve_reference(cache, create=True)) if cache else None


def settings_from_cfg(cfg: omegaconf.DictConfig) -> ClasSettings | None:
    """`ClasSettings` from the XP's `zalo.eval` block, or None when CLAS evaluation is off.

    Args:
        cfg: the composed XP config.
    """
    block = cfg.zalo.eval
    if not block.clas:
        return None
    sizes = block.fad_inf_sizes
    return ClasSettings(
        clap=clap_spec_from_cfg(cfg, str(cfg.device)), fad_tau=float(block.fad_tau), fad_inf=bool(block.fad_inf),
        fad_inf_sizes=tuple(int(s) for s in sizes) if sizes else None,
        fad_inf_method=str(block.fad_inf_method), stats_cache=stats_cache_from_cfg(cfg),
        metrics=enabled(dict(block.metrics or {})))


def reference_path(cfg: omegaconf.DictConfig) -> str:
    """The FAD reference of an XP: `zalo.eval.reference`, else the evaluate split's manifest folder.

    Args:
        cfg: the composed XP config.
    """
    return str(cfg.zalo.eval.reference or cfg.datasource.evaluate)


def rerank_options_from_cfg(cfg, reference: str | None = None):
    """`rerank.RerankOptions` of an XP: its evaluate CLAP (`zalo.eval.clap_*`) and FAS weight.

    Args:
        cfg: a composed XP config.
        reference: the FAD reference whose mean the FAS-aware objective uses (the evaluate stage's).
    """
    from ..rerank import RerankOptions

    return RerankOptions(clap=clap_spec_from_cfg(cfg, None), fas_weight=float(cfg.zalo.eval.fas_weight),
                         dtype=str(cfg.zalo.eval.clap_dtype),
                         reference=reference, stats_cache=stats_cache_from_cfg(cfg))
