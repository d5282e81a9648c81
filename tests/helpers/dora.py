"""Real `dora -P zalo_music` commands in child processes, as the end-to-end tests run them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

#: The tiny XP used by the end-to-end tests: fewer updates than the recipe, same code path.
TINY_ARGV = ["solver=zalo/tiny", "dset=zalo/demo", "optim.updates_per_epoch=4"]


def run_dora(*args: str, env: dict | None = None, check: bool = True,
             timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """`procutil.run_dora` with stdout and stderr kept apart, and a failure shown with both tails.

    Args:
        args: dora sub-command and its arguments.
        env: variables added to this process's environment.
        check: raise AssertionError (with the output's tails) on a non-zero exit.
        timeout: seconds.
    """
    from zalo_music.procutil import run_dora as run

    proc = run(*args, env=env, check=False, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"dora {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def xp_of_run(output: str) -> Path:
    """The XP folder a `dora run` worked in, from the line zalo_music.train logs at start ("XP <sig>: <folder>").

    (Read from the run's own log: a `dora info` child process to ask the same costs ~10 s on a loaded CI core.)

    Args:
        output: the run's stdout + stderr.
    """
    m = re.search(r"\bXP ([0-9a-f]{8}): (\S+) \(XPs live in", output)
    assert m, f"no 'XP <sig>: <folder>' line in the run's log:\n{output[-3000:]}"
    folder = Path(m.group(2))
    assert folder.name == m.group(1) and folder.is_dir(), m.group(0)
    return folder
