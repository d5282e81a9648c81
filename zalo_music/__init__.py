"""zalo-music: fine-tune MusicGen with Audiocraft + Dora and score it the Zalo AI 2023 way (CLAS)."""

from .env import setup_environment
from .patches import apply as _apply_patches

__version__ = "0.1.0"

# audiocraft reads its environment and imports laion_clap at import time: prepare both first.
setup_environment()
_apply_patches()
