"""Dora grids of zalo-music (`dora -P zalo_music grid <name>`); `dora.grid_package` points here.

Each grid doubles as provenance: the file states exactly which XPs were launched with which overrides.
"""

# Grids import audiocraft: zalo_music must come first (environment + upstream patches).
import zalo_music  # noqa: F401,E402
