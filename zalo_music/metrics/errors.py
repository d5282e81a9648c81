"""Errors of the metrics package."""

from __future__ import annotations


class MetricUnavailableError(RuntimeError):
    """A metric cannot run here (missing CLAP checkpoint, laion_clap unusable offline, ...).

    The message names what is missing and how to fix it. The solver lets the epoch commit (checkpoint saved)
    before re-raising it, so a failed evaluation never costs training state.
    """
