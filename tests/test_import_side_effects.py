"""Importing zalo_music (any of its modules but the Dora entry point) has no side effects.

No environment variable is set or changed, no import hook is installed, the Hugging Face hub is not probed and
(for the light modules) torch is not imported: `zalo_music.runtime.prepare()` does all of that, called by the
entry points only (tests/conftest.py, `zalo-music`, `dora -P zalo_music`, the web demo, scripts/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import PROJECT

#: Modules that must import without torch: the package, the CLI and everything `zalo-music --help` needs.
LIGHT = ["zalo_music", "zalo_music.runtime", "zalo_music.env", "zalo_music.patches", "zalo_music.cli",
         "zalo_music.doctor", "zalo_music.classic_train", "zalo_music.data.eda", "zalo_music.metrics.clap",
         "zalo_music.metrics.cli", "zalo_music.webdemo", "zalo_music.submission"]

#: Imports `argv[1]` (a JSON list of module names, or "ALL" for every zalo_music module except the Dora entry
#: point `zalo_music.train`, which prepares the process by design) and reports what changed. With "ALL",
#: `import laion_clap` is made to fail as "not installed" first: audiocraft (imported at module level by the
#: solvers and tokens.dataset) would otherwise die offline on laion_clap's hub tokenizers, which is what
#: `prepare()`'s import guard is for; this stub is not an import hook, so the finder count stays meaningful.
#: torch is imported before the snapshot there.
PROBE = r"""
import importlib, json, os, pkgutil, socket, sys
connects = []
_connect = socket.socket.connect
def _record(self, address, *args):
    connects.append(repr(address))
    return _connect(self, address, *args)
socket.socket.connect = _record
names = json.loads(sys.argv[1])
if names == "ALL":
    sys.modules["laion_clap"] = None
    import torch  # noqa: F401  (allowed here; imported before the snapshot)
before_env = dict(os.environ)
before_finders = [type(f).__name__ for f in sys.meta_path]
if names == "ALL":
    import zalo_music
    names = ["zalo_music"] + sorted(m.name for m in pkgutil.walk_packages(zalo_music.__path__, "zalo_music.")
                                    if m.name != "zalo_music.train")
for name in names:
    importlib.import_module(name)
after = dict(os.environ)
# scikit-learn (imported through the metrics) sets these OpenMP variables itself at import: not ours.
third_party = {"KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK"}
changed = sorted(k for k in (set(before_env) | set(after)) - third_party if before_env.get(k) != after.get(k))
print("RESULT=" + json.dumps({
    "modules": names, "env_changed": changed, "connects": connects,
    "new_finders": [type(f).__name__ for f in sys.meta_path][:len(sys.meta_path) - len(before_finders)],
    "finders_added": len(sys.meta_path) - len(before_finders),
    "torch": "torch" in sys.modules, "prepared": sys.modules["zalo_music.runtime"].is_prepared()}))
"""


def _clean_env() -> dict[str, str]:
    """The parent's environment without anything zalo_music, audiocraft or the hub setup would set."""
    drop = ("ZALO_MUSIC_", "AUDIOCRAFT_", "HF_", "TRANSFORMERS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = str(PROJECT)
    return env


def _probe(names: list[str] | str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(names)], cwd=PROJECT, env=_clean_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT="))
    return json.loads(line[len("RESULT="):])


def test_light_modules_import_without_side_effects_or_torch():
    result = _probe(LIGHT)
    assert result["env_changed"] == [], f"importing {LIGHT} changed os.environ: {result['env_changed']}"
    assert result["finders_added"] == 0, f"import hooks installed at import: {result['new_finders']}"
    assert result["connects"] == [], f"network probed at import: {result['connects']}"
    assert not result["torch"], "importing the light modules imported torch"
    assert not result["prepared"]


def test_every_module_imports_without_side_effects():
    """Every zalo_music module (torch allowed here: generate, solvers, ... need it at module level)."""
    result = _probe("ALL")
    assert "zalo_music.generate" in result["modules"] and "zalo_music.data.eda" in result["modules"]
    assert result["env_changed"] == [], f"importing zalo_music modules changed os.environ: {result['env_changed']}"
    assert result["finders_added"] == 0, f"import hooks installed at import: {result['new_finders']}"
    assert result["connects"] == [], f"network probed at import: {result['connects']}"
    assert not result["prepared"]
