"""Zalo AI 2023 evaluation: CLAP score, FAD, FAS = exp(-FAD / tau) and CLAS = (CLAP + FAS) / 2.

- `audio`: 48 kHz mono 10-s windows prepared as laion-clap prepares them (first 10 s of a long clip).
- `clap`: LAION-CLAP checkpoint resolution, safe loading, and batched text/audio embeddings.
- `fad`: Fréchet distance, FAS, FAD-infinity (subsets or fadtk's bootstrap), CLAS.
- `reference`: reference sets and their cached statistics.
- `evaluator`: all metrics from embeddings (shared by the solver and `score`).
- `score`: score a folder of MP3s against a Zalo JSON; `cli.register` adds the `score` sub-command.

Modules import torch/laion-clap lazily where they can: importing this package is cheap.
"""

from .errors import MetricUnavailableError
from .fad import GaussianStats, clas, fad_from_stats, fad_infinity, fas, frechet_distance

__all__ = ["GaussianStats", "MetricUnavailableError", "clas", "fad_from_stats", "fad_infinity", "fas",
           "frechet_distance"]
