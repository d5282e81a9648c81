"""Processes die with their parent: kill -9 (or SIGTERM) of a command leaves none of its workers behind.

Each test starts a small parent process that starts workers busy on a long task, kills the parent, and
checks that every worker is gone within a few seconds (without the fix they sleep on, orphaned).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")


class SlowDataset:
    """A map-style dataset whose items take a minute: its DataLoader workers are busy when the parent dies."""

    def __len__(self) -> int:
        return 100

    def __getitem__(self, i: int) -> int:
        time.sleep(60)
        return i


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead, only not yet reaped
    except OSError:
        return False


def _run_parent(code: str, sig: int = signal.SIGKILL) -> list[int]:
    """Start `code` (which prints a JSON list of worker pids), kill it with `sig`; the workers' pids."""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        pids = json.loads(line)
        assert pids and all(_alive(p) for p in pids), line
        os.kill(proc.pid, sig)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return pids


def _assert_gone(pids: list[int], within: float = 10.0) -> None:
    deadline = time.time() + within
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    left = [p for p in pids if _alive(p)]
    for p in left:  # clean up before failing, so that a failure leaves nothing behind either
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} outlived their parent"


def test_prepare_pool_workers_die_with_a_killed_parent():
    code = """
import json, multiprocessing, time
from zalo_music.data.prepare import _pool_map
it = _pool_map(time.sleep, [60] * 8, 2, "x", quiet=True)
import threading
threading.Thread(target=lambda: next(it), daemon=True).start()
while len(multiprocessing.active_children()) < 2:
    time.sleep(0.05)
time.sleep(0.5)  # the workers are inside their 60-s jobs
print(json.dumps([p.pid for p in multiprocessing.active_children()]), flush=True)
time.sleep(60)
"""
    _assert_gone(_run_parent(code))


def test_grid_local_children_die_with_a_killed_runner():
    code = """
import json, signal, subprocess, threading, time
from zalo_music.procutil import preexec_die_with_parent
procs = []
def run():  # as grid-local does: subprocess.run in a worker thread that lives as long as the child
    p = subprocess.Popen(["sleep", "60"], preexec_fn=preexec_die_with_parent(signal.SIGTERM))
    procs.append(p)
    p.wait()
threading.Thread(target=run, daemon=True).start()
while not procs:
    time.sleep(0.05)
print(json.dumps([procs[0].pid]), flush=True)
time.sleep(60)
"""
    _assert_gone(_run_parent(code))


_DATALOADER = """
import json, multiprocessing, signal, threading, time
multiprocessing.set_start_method("forkserver")  # audiocraft's default mp_start_method
from zalo_music.patches import workers_die_with_parent
from zalo_music.procutil import exit_on_sigterm
signal.signal(signal.SIGTERM, exit_on_sigterm)  # what zalo_music.train.main installs
workers_die_with_parent()
from torch.utils.data import DataLoader
from tests.test_hostile_procs import SlowDataset
loader = DataLoader(SlowDataset(), batch_size=1, num_workers=2)
it = iter(loader)
while len(multiprocessing.active_children()) < 2:  # the two workers (children of the fork server)
    time.sleep(0.05)
time.sleep(1.0)  # the workers are inside __getitem__
print(json.dumps([p.pid for p in multiprocessing.active_children()]), flush=True)
next(it)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_dataloader_workers_die_with_the_training_process(sig):
    _assert_gone(_run_parent(_DATALOADER, sig), within=15.0)
