"""Process environment that audiocraft reads at import time: set it before audiocraft is imported.

audiocraft resolves its Dora folder, team file and reference folder from environment variables
(`audiocraft/environment.py`). We point them at zalo-music's own team file and folders so that
`dora -P zalo_music`, `dora -P audiocraft` and `continue_from=//sig/<S>` all agree on where XPs live.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

#: Root of the source checkout (the package is installed editable: `config/` lives beside it).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Hydra config groups that zalo-music adds on top of audiocraft's.
CONFIG_DIR = Path(os.environ.get("ZALO_MUSIC_CONFIG_DIR", PROJECT_ROOT / "config"))
TEAM_FILE = CONFIG_DIR / "teams" / "zalo.yaml"


def dora_dir() -> Path:
    """Folder holding every XP (`<dir>/xps/<signature>`): `$ZALO_MUSIC_DORA_DIR`, else `<project>/outputs`."""
    return Path(os.environ.get("ZALO_MUSIC_DORA_DIR", PROJECT_ROOT / "outputs")).expanduser().resolve()


def reference_dir() -> Path:
    """Folder that `//reference/...` paths resolve to (CLAP checkpoints, FAD stats)."""
    default = PROJECT_ROOT / "reference"
    return Path(os.environ.get("ZALO_MUSIC_REFERENCE_DIR", default)).expanduser().resolve()


def data_dir() -> Path:
    """Root of prepared audio (`<dir>/<NAME>/audio`): `$ZALO_MUSIC_DATA_DIR`, else `<project>/data`."""
    return Path(os.environ.get("ZALO_MUSIC_DATA_DIR", PROJECT_ROOT / "data")).expanduser().resolve()


def manifest_dir() -> Path:
    """Folder of prepared manifests (`<dir>/<NAME>/{train,valid}/data.jsonl.gz`)."""
    default = PROJECT_ROOT / "manifests"
    return Path(os.environ.get("ZALO_MUSIC_MANIFEST_DIR", default)).expanduser().resolve()


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether huggingface.co resolves and accepts a TCP connection within `timeout` seconds."""
    import socket
    import threading

    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(("huggingface.co", 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def setup_environment() -> None:
    """Export the variables audiocraft reads; values the user already set win.

    - USER: audiocraft's `config.yaml` and team file interpolate `${oc.env:USER}`, which fails where USER is
      unset (CI, containers).
    - AUDIOCRAFT_CONFIG: our team file, which knows every cluster type audiocraft can detect (its default
      file lacks `aws`, so runs break on `*-aws` kernels).
    - AUDIOCRAFT_DORA_DIR / AUDIOCRAFT_REFERENCE_DIR: from ZALO_MUSIC_DORA_DIR / ZALO_MUSIC_REFERENCE_DIR.
    """
    if not os.environ.get("USER"):
        try:
            os.environ["USER"] = getpass.getuser()
        except (KeyError, OSError):
            os.environ["USER"] = "zalo"
    os.environ.setdefault("AUDIOCRAFT_CONFIG", str(TEAM_FILE))
    # Our variables win over audiocraft's when both are set; otherwise an AUDIOCRAFT_* value is kept.
    for ours, theirs, value in (("ZALO_MUSIC_DORA_DIR", "AUDIOCRAFT_DORA_DIR", dora_dir()),
                                ("ZALO_MUSIC_REFERENCE_DIR", "AUDIOCRAFT_REFERENCE_DIR", reference_dir())):
        if ours in os.environ:
            os.environ[theirs] = str(value)
        else:
            os.environ.setdefault(theirs, str(value))
    # Without a reachable hub, transformers retries every missing file for ~30 s (laion_clap alone asks for
    # three tokenizers at import): go offline at once instead. ZALO_MUSIC_HUB_PROBE=0 skips the probe.
    if "HF_HUB_OFFLINE" not in os.environ and os.environ.get("ZALO_MUSIC_HUB_PROBE", "1") != "0":
        if not hub_reachable():
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["ZALO_MUSIC_AUTO_OFFLINE"] = "1"  # tells `zalo-music doctor` who set it
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # Read by the dset/zalo/* configs through ${oc.env:ZALO_MUSIC_MANIFEST_DIR}.
    os.environ["ZALO_MUSIC_MANIFEST_DIR"] = str(manifest_dir())
