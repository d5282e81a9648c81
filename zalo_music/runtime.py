"""The one place that prepares a process for audiocraft: environment variables and upstream patches.

Nothing here runs at import: `import zalo_music` (or any of its modules) changes no environment variable,
installs no import hook and probes no network. Entry points call `prepare()` first thing (the Dora main
`zalo_music.train`, the `zalo-music` CLI after parsing its arguments, the web demo's launcher, scripts, tests);
library functions that reach audiocraft, laion_clap or checkpoint loading from a notebook call it themselves
when they are used. It is idempotent, so calling it again costs nothing.
"""

from __future__ import annotations

_PREPARED = False


def prepare() -> None:
    """Export audiocraft's environment (`env.setup_environment`), apply every upstream patch (`patches.apply`)
    and silence the upstream warnings listed in `quiet.FILTERS` (unless ZALO_MUSIC_DEBUG=1).

    Must run before audiocraft is imported: audiocraft reads its environment variables at import time, and
    audiocraft's `import laion_clap` needs the import guard offline. The torch patches (checkpoint allow-list,
    safe loading) are applied when torch is imported, or at once if it already is. Runs once per process; the
    environment probe may take up to 2 s when `HF_HUB_OFFLINE` is unset (`env.setup_environment`).
    """
    global _PREPARED
    if _PREPARED:
        return
    from .env import setup_environment
    from .patches import apply
    from .quiet import install

    install()  # first: importing what the patches touch may warn already
    setup_environment()
    apply()
    _PREPARED = True


def is_prepared() -> bool:
    """Whether `prepare()` has run in this process."""
    return _PREPARED
