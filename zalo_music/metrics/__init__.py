"""Zalo AI 2023 evaluation: CLAP score, FAD, FAS = exp(-FAD / tau) and CLAS = (CLAP + FAS) / 2.

- `audio`: 48 kHz mono 10-s windows prepared as laion-clap prepares them (first 10 s of a long clip).
- `clap`: LAION-CLAP checkpoint resolution, safe loading, and batched text/audio embeddings.
- `fad`: Fréchet distance, FAS, FAD-infinity (subsets or fadtk's bootstrap), CLAS.
- `reference`: reference sets and their cached statistics.
- `evaluator`: all metrics from embeddings (shared by the solver and `score`).
- `score`: score a folder of MP3s against a Zalo JSON; `cli.register` adds the `score` sub-command.

Modules import torch/laion-clap lazily where they can: importing this package is cheap.
"""

from __future__ import annotations

import typing as tp

from .errors import MetricUnavailableError

__all__ = ["GaussianStats", "MetricUnavailableError", "clas", "fad_from_stats", "fad_infinity", "fas",
           "frechet_distance"]

#: Names re-exported from `fad` on first access: `fad` imports scipy (~0.15 s), which `zalo-music score --help`
#: (metrics/cli.py lives in this package) must not pay (tests/test_cli_help.py).
_FAD_NAMES = frozenset(__all__) - {"MetricUnavailableError"}


def __getattr__(name: str) -> tp.Any:
    if name in _FAD_NAMES:
        from . import fad

        return getattr(fad, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
