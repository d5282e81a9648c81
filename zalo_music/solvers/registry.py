"""Solver dispatch: our names first, then audiocraft's; device-dependent settings fixed for every solver.

audiocraft's `audiocraft.solvers.builders.get_solver` looks `cfg.solver` up in a dict literal, so an external
subclass cannot register itself. `zalo_music.patches` replaces the `audiocraft.solvers.get_solver` attribute
with `get_solver` below, so audiocraft's own tools (`audiocraft.train.get_solver_from_xp`, export,
notebooks) build our solvers too.

Because every XP's solver is built here, this is also where settings that only make sense on some devices are
adapted to the device the XP runs on (`adapt_to_device`), for our recipes and audiocraft's alike (the seed's
`solver=musicgen/musicgen_base_32khz` command included). Each change is logged.
"""

from __future__ import annotations

import importlib
import logging
import typing as tp

import omegaconf

logger = logging.getLogger(__name__)

#: cfg.solver name -> "module:Class", imported lazily (solver modules import torch and audiocraft).
SOLVERS: dict[str, str] = {
    "zalo_musicgen": "zalo_music.solvers.musicgen:ZaloMusicGenSolver",
}

_audiocraft_get_solver: tp.Callable | None = None


def get_solver(cfg: omegaconf.DictConfig):
    """Build the solver named by `cfg.solver`.

    Args:
        cfg: the composed XP config.
    Returns:
        A zalo-music solver when `cfg.solver` is one of `SOLVERS`, else audiocraft's.
    """
    from zalo_music import debug_codec

    adapt_to_device(cfg)
    debug_codec.ensure(str(cfg.get("compression_model_checkpoint") or ""))  # written once, then loaded
    target = SOLVERS.get(cfg.solver)
    if target is None:
        _warn_padding(cfg)
        if _audiocraft_get_solver is None:
            from audiocraft.solvers.builders import get_solver as fallback
        else:
            fallback = _audiocraft_get_solver
        return fallback(cfg)
    module_name, class_name = target.split(":")
    klass = getattr(importlib.import_module(module_name), class_name)
    return klass(cfg)


def adapt_to_device(cfg: omegaconf.DictConfig) -> list[str]:
    """Adapt device-dependent settings in place, logging each change; returns the changes made.

    - CPU + `autocast: true`: autocast off. torch (2.9) really autocasts to float16 on CPU (it is not
      ignored), and CPU fp16 matmuls are ~50x slower than fp32; bf16 gains nothing on most CPUs either.
    - CUDA + `autocast_dtype: bfloat16` on a GPU without bf16 (before Ampere: V100, T4): float16 instead, which
      audiocraft pairs with a GradScaler.
    - Adam/AdamW: `optim.adam.fused` from `zalo.speed.fused_adamw` (`auto`: the fused kernel on CUDA).
    - CPU + EMA with `optim.ema.device: cuda` (audiocraft's `musicgen_base_32khz`): the EMA copy is kept on
      the CPU (audiocraft's `ModuleDictEMA` would move every weight to CUDA and fail).

    Args:
        cfg: the composed XP config (modified in place).
    """
    from .speed import fused_adamw_setting

    changes: list[str] = []
    device = str(cfg.get("device", "cpu"))
    with omegaconf.open_dict(cfg):
        if device == "cpu" and cfg.get("autocast"):
            cfg.autocast = False
            changes.append(f"autocast off on CPU (was autocast_dtype={cfg.get('autocast_dtype')}: CPU "
                           "autocast is slower than float32)")
        if device.startswith("cuda") and cfg.get("autocast") and cfg.get("autocast_dtype") == "bfloat16":
            import torch

            if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
                cfg.autocast_dtype = "float16"
                changes.append("autocast_dtype bfloat16 -> float16: this GPU has no bfloat16 (pre-Ampere); "
                               "float16 trains with a GradScaler")
        fused = fused_adamw_setting(cfg)
        if fused:
            changes.append(fused)
        ema = cfg.get("optim", {}).get("ema", {})
        if device == "cpu" and ema.get("use") and str(ema.get("device") or "").startswith("cuda"):
            cfg.optim.ema.device = "cpu"
            changes.append("optim.ema.device cuda -> cpu: the XP runs on CPU")
    for change in changes:
        logger.info("device %s: %s", device, change)  # an expected adaptation to the hardware, not a fault
    return changes


def _warn_padding(cfg: omegaconf.DictConfig) -> None:
    # Our solvers refuse this (`check_segment_policy`); audiocraft's own recipes are run as written, but the
    # user should know what they train on. Only zalo dsets say how long their clips are.
    if "zalo" not in cfg or "clip_duration" not in cfg.zalo:
        return
    clip = cfg.zalo.clip_duration
    segment = cfg.get("dataset", {}).get("segment_duration")
    if clip and segment and float(segment) > float(clip) + 1e-6:
        logger.warning("dataset.segment_duration=%s but the clips of this dataset last %s s: audiocraft pads each "
                       "clip with %.0f s of silence (%.0f%% of every segment). zalo recipes train on %s-s segments.",
                       segment, clip, float(segment) - float(clip),
                       100 * (1 - float(clip) / float(segment)), clip)


def install() -> None:
    """Make `audiocraft.solvers.get_solver` (used by `audiocraft.train`) dispatch through us."""
    global _audiocraft_get_solver
    import audiocraft.solvers as ac_solvers

    from zalo_music.patches import cosine_schedule_without_decay_steps

    cosine_schedule_without_decay_steps()
    if ac_solvers.get_solver is get_solver:
        return
    _audiocraft_get_solver = ac_solvers.get_solver
    ac_solvers.get_solver = get_solver
