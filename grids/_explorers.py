"""Grid table columns for zalo-music XPs, built on audiocraft's own LM explorer."""

from __future__ import annotations

from audiocraft.grids.musicgen._explorers import LMExplorer


class ZaloExplorer(LMExplorer):
    """Train/valid cross-entropy and perplexity per XP (audiocraft's LM columns)."""
