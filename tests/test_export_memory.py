"""`zalo-music export` reads only the best state of an XP checkpoint, and writes audiocraft's `export_lm` package.

The XP is fake (`scripts/bench_export.py:build_xp`): the tiny recipe's config, a small LM, and a 512 MB AdamW
state that export must never read into RAM.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tests.helpers import PROJECT  # conftest prepares the environment and patches before audiocraft

LM_PARAMS = 2_000_000         # 8 MB per copy of the LM
OPTIMIZER_PARAMS = 64 * 2**20  # AdamW exp_avg + exp_avg_sq: 512 MiB
OPTIMIZER_MB = 2 * OPTIMIZER_PARAMS * 4 / 2**20


def _bench():
    spec = importlib.util.spec_from_file_location("bench_export", PROJECT / "scripts" / "bench_export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fake_xp(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fake_xp") / "cafe0001"
    _bench().build_xp(folder, LM_PARAMS, optimizer_params=OPTIMIZER_PARAMS)
    return folder


def test_export_leaves_optimizer_state_on_disk(fake_xp, tmp_path):
    """Peak RSS growth of an export (child process) stays far below the optimizer state's size."""
    result = _bench().measure("lazy", fake_xp, tmp_path / "export")
    # Measured: ~+130 MB (best state 8 MB, debug codec, torch.save buffers); loading the checkpoint whole: >+520 MB.
    assert result["growth_mb"] < OPTIMIZER_MB / 2, result
    assert (tmp_path / "export" / "state_dict.bin").is_file()


def test_export_package_equals_audiocraft_export_lm(fake_xp, tmp_path):
    from audiocraft.utils.export import export_lm

    from zalo_music.export import export_lm_state, open_checkpoint

    ckpt = fake_xp / "checkpoint.th"
    ours = export_lm_state(open_checkpoint(ckpt), tmp_path / "ours.bin", ckpt)
    theirs = export_lm(ckpt, tmp_path / "theirs.bin")
    a = torch.load(ours, map_location="cpu", weights_only=True)
    b = torch.load(theirs, map_location="cpu", weights_only=True)
    assert set(a) == set(b) == {"best_state", "xp.cfg", "version", "exported"}
    assert a["xp.cfg"] == b["xp.cfg"] and a["version"] == b["version"] and a["exported"] is b["exported"] is True
    assert a["best_state"].keys() == b["best_state"].keys()
    assert all(torch.equal(a["best_state"][k], b["best_state"][k]) for k in a["best_state"])


def test_checkpoint_without_best_state_is_refused(tmp_path):
    from zalo_music.export import export_lm_state

    with pytest.raises(ValueError, match="no best model state"):
        export_lm_state({"xp.cfg": {}, "best_state": {}}, tmp_path / "x.bin", "xps/abc/checkpoint.th")
    assert not (tmp_path / "x.bin").exists()


def test_export_is_reused_until_the_checkpoint_changes(fake_xp, tmp_path):
    """An export of the same checkpoint is reused as is; a new checkpoint of the same XP (a rerun) replaces it."""
    import json
    import os

    from zalo_music.export import export_xp

    out = tmp_path / "export"
    export_xp(fake_xp, out)
    first = json.loads((out / "zalo_export.json").read_text())
    stamp = (out / "state_dict.bin").stat().st_mtime_ns
    export_xp(fake_xp, out)
    assert (out / "state_dict.bin").stat().st_mtime_ns == stamp  # nothing rewritten
    ckpt = fake_xp / "checkpoint.th"
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))  # the XP's checkpoint rewritten
    export_xp(fake_xp, out)
    assert json.loads((out / "zalo_export.json").read_text())["checkpoint"] != first["checkpoint"]
