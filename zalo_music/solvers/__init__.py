"""zalo-music solver classes, dispatched by `cfg.solver` before audiocraft's closed registry."""

from .registry import SOLVERS, get_solver

__all__ = ["SOLVERS", "get_solver"]
