"""Dora grids of zalo-music (`dora -P zalo_music grid <name>`); `dora.grid_package` points here.

Each grid doubles as provenance: the file states exactly which XPs were launched with which overrides.
"""
