"""zalo-music: fine-tune MusicGen with Audiocraft + Dora and score it the Zalo AI 2023 way (CLAS).

Importing the package has no side effects: entry points call `zalo_music.runtime.prepare()` (environment
variables for audiocraft, upstream patches) before audiocraft is imported.
"""

from .runtime import prepare  # cheap: runtime imports nothing until prepare() runs

__version__ = "0.1.0"
__all__ = ["prepare", "__version__"]
