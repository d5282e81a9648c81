"""Hydra SearchPathPlugin: puts audiocraft's own config tree behind zalo-music's `config/`.

A plugin (rather than `hydra.searchpath` in a YAML) is what makes audiocraft's groups and ours visible to
Dora's signature logic, which lists config groups before composing any YAML.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


def audiocraft_config_dir() -> Path | None:
    """`<audiocraft>/../config` of the installed audiocraft release, without importing audiocraft."""
    spec = importlib.util.find_spec("audiocraft")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve().parent.parent / "config"


def _zalo_config_dir() -> Path:
    # Importing zalo_music.env is cheap: it touches only os/pathlib.
    from zalo_music.env import CONFIG_DIR

    return CONFIG_DIR.resolve()


class ZaloMusicSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        ours = _zalo_config_dir()
        mine = False
        for element in search_path.get_path():
            path = element.path or ""
            if path.startswith("file://"):
                path = path[len("file://"):]
            try:
                if Path(path).resolve() == ours:
                    mine = True
            except (OSError, ValueError):
                continue
        if not mine:  # only the zalo_music app; leave other Hydra apps (audiocraft's own) untouched
            return
        ac = audiocraft_config_dir()
        if ac is not None and ac.is_dir():
            search_path.append(provider="audiocraft", path=f"file://{ac}")
