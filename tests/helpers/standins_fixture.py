"""Stand-ins of every hub artifact (`zalo-music standins`), built once per test session at reduced depth.

The build runs through the real CLI in a child process. Child processes of the rehearsal get `env()` so they
see THESE stand-ins: tests/helpers/clap_fixture.py points HF_HOME of the test process at its own tiny cache at import,
and every child would otherwise inherit that one.

`ZALO_MUSIC_STANDINS_DIR=/some/folder` reuses (and completes) a folder across sessions: the build is idempotent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

#: Transformer layers kept in the LM, T5 and RoBERTa stand-ins (the code path is the same at any depth).
DEPTH = 1
PROJECT = Path(__file__).resolve().parents[2]


def build(out: Path | None = None, depth: int = DEPTH, seed: int = 0) -> dict:
    """Build (or complete) the stand-ins with `zalo-music standins` and return its `standins.json` summary.

    Args:
        out: output folder (default: $ZALO_MUSIC_STANDINS_DIR, else a fresh temporary folder).
        depth, seed: as `zalo-music standins --depth/--seed`.
    """
    if out is None:
        env_dir = os.environ.get("ZALO_MUSIC_STANDINS_DIR")
        out = Path(env_dir) if env_dir else Path(tempfile.mkdtemp(prefix="zalo-music-standins-"))
    cmd = [sys.executable, "-m", "zalo_music.cli", "standins", "--out", str(out), "--depth", str(depth),
           "--seed", str(seed)]
    proc = subprocess.run(cmd, cwd=PROJECT, env=child_env({}), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"zalo-music standins failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    summary = json.loads((out / "standins.json").read_text())
    summary["out"] = str(out)
    summary["log"] = proc.stdout
    return summary


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The test process's environment for a child, with `extra` on top and no CLAP checkpoint override."""
    env = dict(os.environ)
    env.pop("ZALO_MUSIC_CLAP_CHECKPOINT", None)
    env.update(extra)
    return env
