"""Training-speed levers, each one option under `zalo.speed.*` (docs/training.md "Speed levers";
`scripts/bench_train_levers.py` measures each off and on, side by side).

- `text_cache`: the frozen T5's states computed once per description (`zalo_music/text_cache.py`).
- `fused_adamw`: torch's fused AdamW kernel (one kernel over all parameters instead of a loop of `foreach` ops);
  `auto` turns it on where it is measured faster (CPU, and CUDA where torch's own default would be `foreach`). Applied to the config before the optimizer is built
  (`fused_adamw_setting`), so audiocraft's optimizer builder and ours both see it.
- `compile`: `torch.compile` of the LM's transformer, in place (the weights' names, checkpoints and LoRA stay as
  they are). The first steps compile (minutes at full shape); off by default.
"""

from __future__ import annotations

import logging
import typing as tp

import omegaconf
import torch

logger = logging.getLogger(__name__)


def fused_adamw_setting(cfg: omegaconf.DictConfig) -> str | None:
    """Set `optim.adam.fused` from `zalo.speed.fused_adamw` (in place); returns the change made, or None.

    `auto`: fused for Adam/AdamW on CUDA and CPU (torch's fused kernel runs on both since torch 2.4; 1.47x faster
    full-shape steps on a 2-core CPU); `true`/`false`: as asked. An explicit `optim.adam.fused` override wins.

    Args:
        cfg: the composed XP config.
    """
    # audiocraft's own recipes declare no `zalo.speed` (a zalo dset adds only its data keys): `auto` for them
    choice = str(omegaconf.OmegaConf.select(cfg, "zalo.speed.fused_adamw", default="auto")).lower()
    optim = cfg.get("optim") or {}
    if optim.get("optimizer") not in ("adam", "adamw") or optim.get("adam", {}).get("fused") is not None:
        return None
    if choice == "auto":  # measured faster on both (scripts/bench_fullshape.py --only levers; docs/BENCHMARKS.md)
        fused = str(cfg.get("device", "cpu")).startswith(("cuda", "cpu"))
    elif choice in ("true", "false"):
        fused = choice == "true"
    else:
        raise ValueError(f"zalo.speed.fused_adamw={choice}: expected auto, true or false")
    with omegaconf.open_dict(cfg):
        cfg.optim.adam.fused = fused
    return f"optim.adam.fused={fused} (zalo.speed.fused_adamw={choice})"


class SpeedMixin:
    """Mixed into `ZaloMusicGenSolver` before LoRA (so `compile` sees the adapters)."""

    cfg: tp.Any
    model: torch.nn.Module
    text_cache: tp.Any = None

    def build_model(self) -> None:
        super().build_model()  # type: ignore[misc]
        speed = self.cfg.zalo.speed
        if speed.text_cache:
            from zalo_music.text_cache import install_text_cache

            self.text_cache = install_text_cache(self.model, float(speed.text_cache_mb))
        if speed.compile:
            # In place (nn.Module.compile): the module keeps its state_dict keys, unlike torch.compile(module).
            logger.info("torch.compile of the LM transformer (backend %s, mode %s): the first steps compile",
                        speed.compile_backend, speed.compile_mode)
            mode = None if speed.compile_backend != "inductor" else speed.compile_mode  # a mode is inductor's
            self.model.transformer.compile(backend=speed.compile_backend, mode=mode, dynamic=False)

    def speed_metrics(self) -> dict:
        """`text_cache_hit`: share of descriptions whose T5 states came from the cache this far."""
        rate = self.text_cache.hit_rate() if self.text_cache is not None else None
        return {} if rate is None else {"text_cache_hit": rate}
