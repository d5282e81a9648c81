"""Training-speed levers, each one option under `zalo.speed.*` (docs/training.md "Speed levers";
`scripts/bench_train_levers.py` measures each off and on, side by side).

- `text_cache`: the frozen T5's states computed once per description (`zalo_music/text_cache.py`).
- `fused_adamw`: torch's fused AdamW kernel (one kernel over all parameters instead of a loop of `foreach` ops);
  `auto` turns it on where it is measured faster (CPU, and CUDA where torch's own default would be `foreach`). Applied to the config before the optimizer is built
  (`fused_adamw_setting`), so audiocraft's optimizer builder and ours both see it.
- `compile`: `torch.compile` of the LM's transformer, in place (the weights' names, checkpoints and LoRA stay as
  they are). The first steps compile (minutes at full shape); off by default.
- `sync_free`: training steps that never wait for the device (`zalo_music/solvers/sync_free.py`); not with FSDP.
"""

from __future__ import annotations

import logging
import typing as tp

import omegaconf
import torch

logger = logging.getLogger(__name__)


def fused_adamw_setting(cfg: omegaconf.DictConfig) -> str | None:
    """Set `optim.adam.fused` from `zalo.speed.fused_adamw` (in place); returns the change made, or None.

    `auto`: fused for Adam/AdamW on CUDA and CPU (torch's fused kernel runs on both since torch 2.4; 1.20-1.47x faster
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
    """Mixed into `ZaloMusicGenSolver` before the classic options and LoRA (so `compile` sees the adapters)."""

    cfg: tp.Any
    model: torch.nn.Module
    is_training: bool
    text_cache: tp.Any = None
    divergence: tp.Any = None

    @property
    def sync_free(self) -> bool:
        """`zalo.speed.sync_free`, except with FSDP (its gradient clipping is the model's own: upstream's step)."""
        return bool(self.cfg.zalo.speed.sync_free) and not self.cfg.fsdp.use

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

    def tokenize_conditions(self, attributes: list) -> dict:
        """Upstream's tokenization of the batch's conditions, or, sync-free, built on the host and sent without
        a wait (`sync_free.tokenize_on_host`).

        Args:
            attributes: the batch's `ConditioningAttributes`.
        """
        if not self.sync_free:
            return super().tokenize_conditions(attributes)  # type: ignore[misc]
        from zalo_music.solvers.sync_free import tokenize_on_host

        return tokenize_on_host(self.model.condition_provider, attributes, self.device)  # type: ignore[attr-defined]

    def _compute_cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor,
                               mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.sync_free:
            from zalo_music.solvers.sync_free import masked_cross_entropy

            return masked_cross_entropy(logits, targets, mask)
        return super()._compute_cross_entropy(logits, targets, mask)  # type: ignore[misc]

    def check_loss(self, ce: torch.Tensor) -> None:
        """Upstream's divergence check after each step, or, sync-free, its device-side flag.

        Args:
            ce: the step's cross-entropy.
        """
        if not self.sync_free:
            if not torch.isfinite(ce):
                raise RuntimeError("Model probably diverged (non-finite cross-entropy).")
            return
        from zalo_music.solvers.sync_free import DivergenceFlag

        if self.divergence is None:
            self.divergence = DivergenceFlag()
        self.divergence.update(ce)

    def log_progress(self, stage_name: str, iterable: tp.Iterable, total: int | None = None,
                     updates: int = 5) -> tp.Any:
        bar = super().log_progress(stage_name, iterable, total=total, updates=updates)  # type: ignore[misc]
        if self.sync_free:
            from flashy.logging import LogProgressBar

            from zalo_music.solvers.sync_free import LazyLogProgressBar

            if type(bar) is LogProgressBar:
                bar.__class__ = LazyLogProgressBar  # same object and state; formats only the lines it logs
        return bar

    def common_train_valid(self, dataset_split: str, **kwargs: tp.Any) -> dict:
        if not self.sync_free:
            return super().common_train_valid(dataset_split, **kwargs)  # type: ignore[misc]
        from zalo_music.solvers.sync_free import averaging_on_device, to_floats

        with averaging_on_device():
            metrics = super().common_train_valid(dataset_split, **kwargs)  # type: ignore[misc]
        if self.divergence is not None:
            self.divergence.check()  # the stage's last steps
        return to_floats(metrics)
