"""Grids on SLURM (fake sbatch/squeue/sacct recording submissions) and on this machine (grid-local)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import PROJECT
from tests.helpers.dora import run_dora

pytestmark = pytest.mark.e2e

FAKE_SBATCH = """#!/usr/bin/env bash
n=$(ls "$FAKE_SLURM_LOG" | grep -c '^sbatch_'); id=$((5000 + n))
{ echo "ARGS: $*"; cat "${@: -1}"; } > "$FAKE_SLURM_LOG/sbatch_$id.txt"
echo "Submitted batch job $id"
"""
FAKE_OTHER = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$FAKE_SLURM_LOG/calls.txt"
"""


@pytest.fixture
def fake_slurm(tmp_path) -> dict:
    bin_dir, log = tmp_path / "bin", tmp_path / "slurm-log"
    bin_dir.mkdir()
    log.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    for name in ("squeue", "sacct", "scancel", "srun", "scontrol"):
        (bin_dir / name).write_text(FAKE_OTHER)
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_SLURM_LOG": str(log), "ZALO_MUSIC_GIT_SAVE": "0",
            "_log": log}


def test_fake_slurm_one_submission_per_xp(fake_slurm, tmp_path):
    from grids.zalo_tiny_lr_epochs import EPOCHS, LRS

    env = {k: v for k, v in fake_slurm.items() if not k.startswith("_")}
    env["ZALO_MUSIC_DORA_DIR"] = str(tmp_path / "xps-root")
    out = run_dora("grid", "zalo_tiny_lr_epochs", "--no_monitoring", env=env)
    text = out.stdout + out.stderr
    scripts = sorted(fake_slurm["_log"].glob("sbatch_*.txt"))
    assert len(scripts) == len(LRS) * len(EPOCHS) == 6
    sigs = set()
    for s in scripts:
        body = s.read_text()
        assert "#SBATCH --gres=gpu:1" in body
        assert "#SBATCH --partition=cpu" in body
        assert re.search(r"#SBATCH --time=\d+", body)
        assert re.search(r"#SBATCH --mem=\d+GB", body)
        assert "#SBATCH --signal=USR2@" in body  # submitit's preemption/timeout requeue hook
        m = re.search(r"#SBATCH --job-name=zalo_music_([0-9a-f]{8})", body)
        sigs.add(m.group(1))
        assert f"-m submitit.core._submit {tmp_path / 'xps-root' / 'xps' / m.group(1) / 'submitit'}" in body
    assert len(sigs) == 6
    assert text.count("Scheduled job") == 6
    # the same grid again submits nothing new: every XP already has a (pending) job
    run_dora("grid", "zalo_tiny_lr_epochs", "--no_monitoring", env=env)
    assert len(list(fake_slurm["_log"].glob("sbatch_*.txt"))) == 6


def _histories(root: Path) -> dict[str, int]:
    out = {}
    for h in (root / "xps").glob("*/history.json"):
        out[h.parent.name] = len(json.loads(h.read_text()))
    return out


def test_grid_local_runs_all_and_resumes_after_kill(demo_manifests, tmp_path):
    env = dict(os.environ, ZALO_MUSIC_DORA_DIR=str(tmp_path / "local"))
    cmd = [sys.executable, "-m", "zalo_music.cli", "grid-local", "zalo_tiny_lr_epochs", "--allow-dirty",
           "--parallel", "2"]
    proc = subprocess.Popen(cmd, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    done_lines = []
    deadline = time.time() + 300
    assert proc.stdout is not None
    for line in proc.stdout:
        if re.match(r"\[\d+/6\] [0-9a-f]{8} done", line):
            done_lines.append(line)
            if len(done_lines) == 2:
                break
        assert time.time() < deadline, "grid-local made no progress"
    os.killpg(proc.pid, signal.SIGKILL)  # kill the runner and the XP it was running
    proc.wait()
    first = _histories(tmp_path / "local")
    finished_before = {s for s, n in first.items() if n > 0}
    assert len(finished_before) >= 2
    second = subprocess.run(cmd, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    m = re.search(r"6 XPs, (\d+) done, (\d+) to run", second.stdout)
    assert m and int(m.group(1)) >= 2 and int(m.group(1)) + int(m.group(2)) == 6
    for sig in finished_before:  # finished XPs were not run again
        assert f"start {sig}" not in second.stdout or first[sig] < 1
    final = _histories(tmp_path / "local")
    assert len(final) == 6 and all(n >= 1 for n in final.values())
    table = second.stdout
    for sig in final:
        assert sig in table
    assert "grid-local zalo_tiny_lr_epochs:" in table
    assert "ranked by valid ce" in table and re.search(r"^  \* [0-9a-f]{8}", table, re.M)


def test_grid_local_refuses_dirty_tree_without_consent(monkeypatch):
    from zalo_music import gridlocal

    monkeypatch.setattr(gridlocal, "git_state", lambda root: {"commit": "abc", "dirty": True,
                                                              "changed_files": [" M x.py"]})
    with pytest.raises(ValueError, match="--allow-dirty"):
        gridlocal.run_local("zalo_tiny_lr_epochs")


def test_compare_ranks_by_clas_and_marks_the_best(tmp_path, monkeypatch):
    from zalo_music import gridlocal

    xps = [gridlocal.LocalXP(f"{i:08x}", tmp_path / f"{i:08x}", 1, [f"optim.lr={i}"]) for i in range(3)]
    for x, (ce, clas) in zip(xps, [(3.0, 0.40), (2.5, 0.55), (2.0, None)], strict=True):
        x.folder.mkdir()
        entry = {"train": {"ce": ce}, "valid": {"ce": ce}}
        if clas is not None:
            entry["evaluate"] = {"clap": clas, "fas": clas, "clas": clas}
        (x.folder / "history.json").write_text(json.dumps([entry]))
    rows = gridlocal.compare("unused", xps)
    assert [r["sig"] for r in rows] == ["00000001", "00000000", "00000002"]
    assert rows[0]["best"] and not any(r["best"] for r in rows[1:])
    # without any CLAS, valid ce decides
    for x in xps:
        (x.folder / "history.json").write_text(json.dumps([{"valid": {"ce": float(int(x.sig, 16))}}]))
    assert gridlocal.compare("unused", xps)[0]["sig"] == "00000000"
