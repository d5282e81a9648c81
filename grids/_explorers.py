"""Grid table columns for zalo-music XPs, built on audiocraft's own LM explorer."""

from __future__ import annotations

import typing as tp

import treetable as tt
from audiocraft.grids.musicgen._explorers import LMExplorer

from zalo_music.gridlocal import rank
from zalo_music.metrics.registry import table_columns


class ZaloExplorer(LMExplorer):
    """Train/valid cross-entropy and perplexity (audiocraft's LM columns), the Zalo evaluate metrics and each XP's
    rank in the table (`zalo-music compare`'s rule: CLAS, else valid ce), so `dora grid` shows the best XP."""

    def __init__(self, *args: tp.Any, **kwargs: tp.Any) -> None:
        super().__init__(*args, **kwargs)
        self._table: list[tuple[str, dict, float | None, float | None]] = []

    def process_sheep(self, sheep: tp.Any, history: list[dict]) -> dict:
        """audiocraft's row of one XP plus `evaluate.rank` among the rows of the table being built.

        Dora's `monitor` (dora/grid.py) builds every row before it prints the table and keeps each row's stage
        dicts, so the ranks of the rows built earlier are updated in place as later rows come in. An XP seen
        again starts a new table (the next monitoring round).

        Args:
            sheep: the XP's Dora sheep.
            history: its (possibly trimmed) history.
        """
        parts = super().process_sheep(sheep, history)
        if any(sig == sheep.xp.sig for sig, *_ in self._table):
            self._table = []
        evaluate = parts.setdefault("evaluate", {})
        self._table.append((sheep.xp.sig, evaluate, evaluate.get("clas"), parts.get("valid", {}).get("ce")))
        ranks = rank([(clas, ce) for _, _, clas, ce in self._table])
        for (_, row, _, _), r in zip(self._table, ranks, strict=True):
            row["rank"] = "-" if r is None else (f"{r} *" if r == 1 else str(r))
        return parts

    def stages(self) -> list[str]:
        return ["train", "valid", "evaluate"]

    def get_grid_metrics(self):
        """audiocraft's train/valid groups, then evaluate ce/ppl and the registry's table metrics (CLAP, FAD, FAS,
        CLAS, ...)."""
        return [
            *super().get_grid_metrics(),
            tt.group("evaluate", [
                tt.leaf("ce", ".4f"),
                tt.leaf("ppl", ".3f"),
                *(tt.leaf(name, ".4f") for name in table_columns()),  # zalo_music/metrics/registry.py
                tt.leaf("rank"),
            ], align=">"),
        ]
