"""Every score, declared once: its name, how it is computed from the CLAP embeddings, its switch and how tables
show it.

`scores_from_embeddings` (the evaluate stage and `score`), `score`'s report table, `zalo-music compare` and the
Dora grid tables iterate `METRICS`; the recipe's `zalo.eval.metrics.<name>` switches an optional one on or off. A
new metric is one entry here (its function beside it or in its own module) plus its switch in the recipe YAML
(tests/test_metrics.py fails when a switch is missing, and checks every entry computes on real embeddings).
"""

from __future__ import annotations

import dataclasses
import typing as tp

import numpy as np

from .fad import GaussianStats, clas, fad_from_stats, fad_infinity, fas

#: Below this many clips, FAD is biased (the CLAP embedding dimension).
FAD_MIN_RELIABLE_N = 512


@dataclasses.dataclass
class Inputs:
    """What a metric is computed from: matching text/audio embeddings, their per-item cosines, the reference
    statistics (None: no reference), the settings, the metrics computed so far (in `METRICS` order) and a list
    that caveats are appended to."""

    text_emb: np.ndarray
    audio_emb: np.ndarray
    cos: np.ndarray
    ref: GaussianStats | None
    settings: tp.Any
    done: dict
    warnings: list[str]


@dataclasses.dataclass(frozen=True)
class Metric:
    """One score.

    Args:
        name: its key in metric dicts, `history.json` and `dora info` (and the `zalo.eval.metrics` switch).
        compute: `Inputs` -> this metric's value (float), or None when it does not apply.
        doc: one line for docs and `--help`.
        needs_reference: computed only with reference statistics (FAD and what derives from it).
        optional: has a `zalo.eval.metrics.<name>` switch (default `default_on`); required ones always run.
        default_on: the switch's default.
        table: a column of `compare` and the grid tables.
        higher_is_better: its direction (for ranking and for readers).
    """

    name: str
    compute: tp.Callable[[Inputs], float | None]
    doc: str
    needs_reference: bool = False
    optional: bool = False
    default_on: bool = True
    table: bool = False
    higher_is_better: bool = True


def _clap(x: Inputs) -> float:
    return float(x.cos.mean()) if x.cos.size else float("nan")


def _fad(x: Inputs) -> float:
    n = x.audio_emb.shape[0]
    if n < FAD_MIN_RELIABLE_N:
        x.warnings.append(
            f"FAD from N={n} generated clips (< {FAD_MIN_RELIABLE_N}, the CLAP embedding dimension) is strongly "
            "biased upwards and depends on N: compare FAD/FAS/CLAS only between runs with the same N, or use the "
            "N-independent estimate (--fad-inf, zalo.eval.fad_inf=true)")
    if x.ref.n < FAD_MIN_RELIABLE_N:
        x.warnings.append(f"FAD reference has only {x.ref.n} clips (< {FAD_MIN_RELIABLE_N}): its covariance is "
                          "rank-deficient; FAD values are only comparable against this same reference")
    return fad_from_stats(GaussianStats.from_embeddings(x.audio_emb), x.ref)


def _fad_inf(x: Inputs) -> float | None:
    if not x.settings.fad_inf:
        return None
    inf = fad_infinity(x.audio_emb, x.ref, x.settings.fad_inf_sizes, method=x.settings.fad_inf_method)
    x.warnings.extend(inf["warnings"])
    return inf["fad_inf"]


def _fas_inf(x: Inputs) -> float | None:
    if "fad_inf" not in x.done:
        return None
    return fas(max(x.done["fad_inf"], 0.0), x.settings.fad_tau)  # the extrapolation can dip below 0 by noise


def _clap_p10(x: Inputs) -> float:
    return float(np.percentile(x.cos, 10)) if x.cos.size else float("nan")


#: Every metric, in the order they are computed and shown (a metric may read the ones before it: `Inputs.done`).
METRICS: tuple[Metric, ...] = (
    Metric("clap", _clap, "mean cosine between each clip's CLAP audio embedding and its description's", table=True),
    Metric("clap_p10", _clap_p10, "10th percentile of the per-clip CLAP: how well the worst tenth of the clips "
           "follow their text (a mean can hide them)", optional=True, table=True),
    Metric("fad", _fad, "Frechet distance between the clips' and the reference's CLAP embedding Gaussians",
           needs_reference=True, table=True, higher_is_better=False),
    Metric("fas", lambda x: fas(x.done["fad"], x.settings.fad_tau), "FAS = exp(-FAD / tau)", needs_reference=True,
           table=True),
    Metric("clas", lambda x: clas(x.done["clap"], x.done["fas"]), "CLAS = (CLAP + FAS) / 2: the Zalo 2023 score",
           needs_reference=True, table=True),
    Metric("fad_inf", _fad_inf, "FAD extrapolated to N -> infinity (with zalo.eval.fad_inf / --fad-inf)",
           needs_reference=True, higher_is_better=False),
    Metric("fas_inf", _fas_inf, "FAS from FAD-infinity", needs_reference=True),
    Metric("clas_inf", lambda x: clas(x.done["clap"], x.done["fas_inf"]) if "fas_inf" in x.done else None,
           "CLAS from FAD-infinity", needs_reference=True),
)
BY_NAME = {m.name: m for m in METRICS}


def enabled(switches: tp.Mapping[str, bool] | None = None) -> tuple[str, ...]:
    """The metrics that run: the required ones and the optional ones switched on.

    Args:
        switches: `zalo.eval.metrics` (name -> on); None: each optional metric's default.
    Raises:
        ValueError: a switch names no metric.
    """
    switches = dict(switches or {})
    unknown = sorted(set(switches) - {m.name for m in METRICS if m.optional})
    if unknown:
        raise ValueError(f"zalo.eval.metrics.{unknown[0]}: no such optional metric (known: "
                         f"{', '.join(m.name for m in METRICS if m.optional)})")
    return tuple(m.name for m in METRICS if not m.optional or bool(switches.get(m.name, m.default_on)))


def compute_all(inputs: Inputs, names: tp.Iterable[str]) -> dict:
    """The metrics `names` (in `METRICS` order) into `inputs.done`, which is returned.

    Args:
        inputs: the embeddings and settings.
        names: the metrics to compute (e.g. `enabled(...)`); those that need a reference are skipped without one.
    """
    wanted = set(names)
    for m in METRICS:
        if m.name not in wanted or (m.needs_reference and inputs.ref is None):
            continue
        value = m.compute(inputs)
        if value is not None:
            inputs.done[m.name] = float(value)
    return inputs.done


def table_columns() -> list[str]:
    """The metrics shown as columns of `compare` and the grid tables."""
    return [m.name for m in METRICS if m.table]
