"""Grid table columns for zalo-music XPs, built on audiocraft's own LM explorer."""

from __future__ import annotations

import treetable as tt
from audiocraft.grids.musicgen._explorers import LMExplorer


class ZaloExplorer(LMExplorer):
    """Train/valid cross-entropy and perplexity (audiocraft's LM columns) plus the Zalo evaluate metrics."""

    def stages(self) -> list[str]:
        return ["train", "valid", "evaluate"]

    def get_grid_metrics(self):
        """audiocraft's train/valid groups, then evaluate ce/ppl and CLAP, FAD, FAS, CLAS."""
        return [
            *super().get_grid_metrics(),
            tt.group("evaluate", [
                tt.leaf("ce", ".4f"),
                tt.leaf("ppl", ".3f"),
                tt.leaf("clap", ".4f"),
                tt.leaf("fad", ".4f"),
                tt.leaf("fas", ".4f"),
                tt.leaf("clas", ".4f"),
            ], align=">"),
        ]
