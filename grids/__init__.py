"""Dora grids of zalo-music (`dora -P zalo_music grid <name>`); `dora.grid_package` points here.

Each grid doubles as provenance: the file states exactly which XPs were launched with which overrides.
"""

# Grids import audiocraft: the environment and upstream patches must come first (idempotent; Dora's main, which
# imports this package, has already done it).
from zalo_music.runtime import prepare

prepare()
