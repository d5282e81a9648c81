"""Solver dispatch: our names first, then audiocraft's.

audiocraft's `audiocraft.solvers.builders.get_solver` looks `cfg.solver` up in a dict literal, so an external
subclass cannot register itself. `zalo_music.patches` replaces the `audiocraft.solvers.get_solver` attribute
with `get_solver` below, so audiocraft's own tools (`audiocraft.train.get_solver_from_xp`, export,
notebooks) build our solvers too.
"""

from __future__ import annotations

import importlib
import typing as tp

import omegaconf

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
    target = SOLVERS.get(cfg.solver)
    if target is None:
        if _audiocraft_get_solver is None:
            from audiocraft.solvers.builders import get_solver as fallback
        else:
            fallback = _audiocraft_get_solver
        return fallback(cfg)
    module_name, class_name = target.split(":")
    klass = getattr(importlib.import_module(module_name), class_name)
    return klass(cfg)


def install() -> None:
    """Make `audiocraft.solvers.get_solver` (used by `audiocraft.train`) dispatch through us."""
    global _audiocraft_get_solver
    import audiocraft.solvers as ac_solvers

    if ac_solvers.get_solver is get_solver:
        return
    _audiocraft_get_solver = ac_solvers.get_solver
    ac_solvers.get_solver = get_solver
