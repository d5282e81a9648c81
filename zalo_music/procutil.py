"""Child processes that die with their parent, so that no worker outlives the command that started it.

Linux's `prctl(PR_SET_PDEATHSIG, sig)` makes the kernel send `sig` to a process when the thread that created it
exits, however it exits (kill -9 included). Python's multiprocessing pools, `subprocess` children and torch's
DataLoader workers do not ask for it, so without it a killed command leaves its workers behind (a process-pool
worker blocked on its pipe forever, a DataLoader worker holding a copy of the dataset). On other systems these
helpers do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import typing as tp

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (a SLURM job's or a container's share), not the
    machine's count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def die_with_parent(sig: int = signal.SIGKILL, parent_pid: int | None = None) -> bool:
    """Ask the kernel to send `sig` to this process when its parent exits.

    Args:
        sig: the signal (SIGKILL for workers that hold nothing to flush, SIGTERM for children that clean up).
        parent_pid: the pid the caller expects as parent. If the parent already died before this call (the
            race between fork and prctl), the process exits at once.
    Returns:
        True when the request was registered (Linux), False elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent is already gone: nobody will ever read our results
    return True


def preexec_die_with_parent(sig: int = signal.SIGTERM) -> tp.Callable[[], None]:
    """A `preexec_fn` for `subprocess`: the child gets `sig` when the launching thread's process exits.

    Note: PR_SET_PDEATHSIG fires when the *thread* that forked exits, so launch from a thread that lives as
    long as the child (`subprocess.run` in that thread does).

    Args:
        sig: signal sent to the child (SIGTERM lets a Python child run its cleanup).
    """
    parent = os.getpid()

    def _preexec() -> None:
        die_with_parent(sig, parent)

    return _preexec


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwinds the stack as Ctrl-C does, so `finally` blocks remove temporary files.

    Args:
        signum: the signal.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


#: What SLURM, `timeout`, `kill` and a closing terminal send: handled like SIGINT by the commands.
TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def interrupt_on_termination() -> None:
    """In the main thread: SIGTERM and SIGHUP raise `Terminated` (a KeyboardInterrupt), as SIGINT raises
    KeyboardInterrupt, instead of ending the process without running any `finally` block."""
    for sig in TERMINATION_SIGNALS:
        signal.signal(sig, _raise_terminated)


def pool_initializer(parent_pid: int, inner: tp.Callable[..., tp.Any] | None = None, *args: tp.Any) -> None:
    """`initializer` for `ProcessPoolExecutor` / `multiprocessing.Pool`: workers die with the parent, and leave
    SIGTERM/SIGHUP to it: the parent cancels what is queued and waits for the items being written (each one
    commits atomically), so a termination never leaves a half-written file behind.

    Args:
        parent_pid: `os.getpid()` of the process creating the pool.
        inner: another initializer to run afterwards.
        *args: its arguments.
    """
    for sig in TERMINATION_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL, parent_pid)
    if inner is not None:
        inner(*args)


def dataloader_worker_init(inner: tp.Callable[[int], tp.Any] | None, owner_pid: int, worker_id: int) -> None:
    """`worker_init_fn` wrapper for torch DataLoaders: the worker ends when the training process does.

    A DataLoader worker's parent is the training process (start method fork/spawn) or multiprocessing's fork
    server (audiocraft's default `mp_start_method: forkserver`), which can outlive a killed training process.
    So the worker gets a parent-death signal *and* a watcher thread that exits the worker once `owner_pid`
    (the process that built the DataLoader) is gone, including when it died while this worker was still
    starting (importing torch takes seconds).

    Args:
        inner: the DataLoader's own `worker_init_fn`, if any.
        owner_pid: pid of the process that created the DataLoader.
        worker_id: passed by torch.
    """
    import threading
    import time

    die_with_parent(signal.SIGKILL)

    def watch() -> None:
        while True:
            if not _pid_alive(owner_pid):
                os._exit(1)  # nobody will read this worker's batches any more
            time.sleep(1.0)

    if not _pid_alive(owner_pid):
        os._exit(1)
    threading.Thread(target=watch, name="owner-watch", daemon=True).start()
    if inner is not None:
        inner(worker_id)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (dead, not yet reaped by its own parent) counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM handler that unwinds the stack instead of ending the process on the spot.

    Python's default SIGTERM action kills the process without running `finally` blocks or destructors, so
    torch DataLoader iterators never stop their workers. Raising SystemExit lets them shut down, then the
    process exits with the conventional status 128 + 15. Install with `signal.signal(SIGTERM, exit_on_sigterm)`.

    Args:
        signum: the signal number.
        frame: unused.
    """
    import logging

    logging.getLogger(__name__).warning("SIGTERM received: stopping cleanly")
    sys.exit(128 + signum)


def dora_command(*args: str) -> list[str]:
    """The command line of `dora -P zalo_music ARGS` run by this interpreter (the one place that spells it).

    Each XP runs in its own process: audiocraft sets the multiprocessing start method once per process, so a
    second training in one process fails.

    Args:
        args: dora sub-command and its arguments (`run`, `-f`, `<sig>`...).
    """
    return [sys.executable, "-m", "dora", "-P", "zalo_music", *args]


def run_dora(*args: str, env: tp.Mapping[str, str] | None = None, check: bool = True, capture: bool = False,
             **kwargs: tp.Any) -> subprocess.CompletedProcess[str]:
    """Run `dora -P zalo_music ARGS` in a child process from the project root, with this process's environment.

    Args:
        args: dora sub-command and its arguments.
        env: variables added to (or replacing those of) this process's environment.
        check: raise `subprocess.CalledProcessError` on a non-zero exit.
        capture: return stdout and stderr merged (as the terminal shows them) in `.stdout` instead of letting
            them through; pass `capture_output=True` instead to keep them apart.
        **kwargs: passed to `subprocess.run` (`timeout`, `stdout`, `preexec_fn`...).
    """
    from . import env as project_env

    full_env = {**os.environ, **(env or {})}
    if capture:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return subprocess.run(dora_command(*args), cwd=project_env.PROJECT_ROOT, env=full_env, check=check,
                          text=True, **kwargs)
