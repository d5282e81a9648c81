"""What every benchmark script shares: the machine it ran on, synthetic clips, a timed step loop, peak memory,
and one JSON result with the command that reproduces it.

Scripts import it as `benchkit` (Python puts a script's own folder first on `sys.path`). Package code is called,
never copied: a benchmark measures the functions users run.
"""

from __future__ import annotations

import collections
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent

try:  # torch is imported by every benchmark, not by `--help`
    from torch.overrides import TorchFunctionMode as _TorchFunctionMode
except ImportError:  # pragma: no cover - a machine without torch runs no benchmark
    _TorchFunctionMode = object  # type: ignore[assignment,misc]


def machine() -> dict:
    """The CPU, cores, memory, GPUs and the versions of the stack a figure was measured with."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                  "platform": platform.platform()}
    try:
        info["mem_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError):
        pass
    from importlib import metadata

    for pkg in ("torch", "audiocraft", "numpy", "transformers", "laion-clap"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = None
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        if gpu.returncode == 0 and gpu.stdout.strip():
            info["gpu"] = gpu.stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def command(script: str | Path, argv: list[str]) -> str:
    """The command line that reproduces a run, relative to the project root when the script is inside it.

    Args:
        script: the script's `__file__`.
        argv: its arguments.
    """
    path = Path(script).resolve()
    shown = str(path.relative_to(PROJECT)) if path.is_relative_to(PROJECT) else str(script)
    return shlex.join([".venv/bin/python", shown, *argv])


def result_header(script: str | Path, argv: list[str]) -> dict:
    """The fields every result starts with: command, date (UTC), machine, load average."""
    return {"command": command(script, argv), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(), "load_average_start": os.getloadavg()}


def write_result(result: dict, path: str | Path | None) -> None:
    """Print `result` as JSON and, when `path` is given, write it there too.

    Args:
        result: the figures (a `result_header` first).
        path: the `--json` file, or None.
    """
    text = json.dumps(result, indent=1, default=str)
    if path:
        Path(path).write_text(text)
    print(text)


def synthetic_clips(folder: Path, n: int, seconds: float, seed: int, sample_rate: int = 32_000,
                    key: tp.Callable[[int], str] = lambda i: f"{1_700_000_000 + i}.mp3") -> dict[str, str]:
    """`n` mono MP3s of decaying tones in noise (what `generate` writes), and a description for each.

    Args:
        folder: where the files go (created).
        n: clips.
        seconds: length of each clip.
        seed: numpy seed (pitch, decay, noise).
        sample_rate: their rate.
        key: file name of clip `i`.
    Returns:
        `{file name: description}`, a Zalo JSON's content.
    """
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    out = {}
    for i in range(n):
        hz = 110 * 2 ** (rng.integers(0, 36) / 12)
        wav = 0.4 * np.sin(2 * np.pi * hz * t) * np.exp(-t * rng.uniform(0.5, 4)) + 0.02 * rng.normal(size=t.size)
        name = key(i)
        sf.write(folder / name, wav.astype("float32"), sample_rate, format="MP3")
        out[name] = f"a {'calm' if hz < 300 else 'bright'} piano melody with soft drums, number {i}"
    return out


def sync(device: str) -> None:
    """Wait for the GPU's queued work, so a wall-clock reading covers it."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed_steps(step: tp.Callable[[int], tp.Any], n: int, warmup: int = 1, device: str = "cpu") -> dict:
    """Run `step(i)` `warmup` times untimed, then `n` times timed, each reading synchronised with the device.

    Args:
        step: one unit of work; gets its index.
        n: timed steps (>= 1).
        warmup: untimed steps first (first-call allocations, kernel choice).
        device: where the work runs.
    Returns:
        `steps`, `each_s` (per step), `median_s`, `mean_s`, `total_s`.
    """
    for i in range(warmup):
        step(i)
    sync(device)
    each = []
    for i in range(n):
        t0 = time.perf_counter()
        step(warmup + i)
        sync(device)
        each.append(time.perf_counter() - t0)
    return {"steps": n, "each_s": [round(x, 4) for x in each], "median_s": round(statistics.median(each), 4),
            "mean_s": round(statistics.fmean(each), 4), "total_s": round(sum(each), 3)}


def _vm(field: str) -> int | None:
    """`VmHWM`/`VmRSS` of this process in kB (None where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class Peak:
    """Peak memory of one measured mode: VmHWM reset at start (Linux clear_refs 5), CUDA peak stats reset.

    Args:
        device: `cpu` or `cuda`.
    """

    def __init__(self, device: str):
        self.device = device

    def __enter__(self) -> Peak:
        self.reset_ok = False
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset_ok = True
        except OSError:
            pass
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = _vm("VmHWM")
        self.rss_mb = round(hwm / 1024) if hwm else None
        if not self.reset_ok:
            import resource

            self.rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        self.cuda_mb = None
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            self.cuda_mb = round(torch.cuda.max_memory_allocated() / 2 ** 20)

    def figures(self) -> dict:
        """`peak_rss_mb` (and its scope: this mode or the whole process), `cuda_max_allocated_mb` on CUDA."""
        out = {"peak_rss_mb": self.rss_mb, "peak_rss_scope": "mode" if self.reset_ok else "process"}
        if self.cuda_mb is not None:
            out["cuda_max_allocated_mb"] = self.cuda_mb
        return out


def merge_peak(acc: dict, peak: Peak) -> None:
    """Keep in `acc` the largest peak of a mode measured over several rounds."""
    for k, v in peak.figures().items():
        if isinstance(v, int | float):
            acc[k] = max(acc.get(k) or 0, v)
        else:
            acc[k] = v


def process_peak() -> dict:
    """The whole process's peak RSS so far."""
    import resource

    return {"process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


class SolverSteps:
    """Timed training steps of an audiocraft solver on batches of one loader, resumed between rounds.

    Each `run` is one fresh (uncommitted) train stage of `n` steps (`solver.run_step`, audiocraft's forward,
    backward and optimizer step), each step's time synchronised with the device and split into the wait for the
    loader and the step itself; the peak memory of the timed runs is kept.

    Args:
        solver: a built solver.
        loader: the loader its batches come from.
        device: where it trains.
    """

    def __init__(self, solver, loader, device: str):
        from audiocraft.utils.utils import get_dataset_from_loader

        self.solver, self.loader, self.device = solver, loader, device
        try:
            get_dataset_from_loader(loader).current_epoch = 1
        except AttributeError:
            pass
        self.it = iter(loader)
        self.wait = self.step = 0.0
        self.steps = 0
        self.each: list[float] = []
        self.peak: dict = {}

    def _next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def run(self, n: int, timed: bool = True) -> None:
        def loop():
            self.solver.model.train()
            for idx in range(n):
                t0 = time.perf_counter()
                batch = self._next()
                t1 = time.perf_counter()
                self.solver.run_step(idx, batch, {})
                sync(self.device)
                t2 = time.perf_counter()
                if timed:
                    self.wait += t1 - t0
                    self.step += t2 - t1
                    self.steps += 1
                    self.each.append(round(t2 - t0, 3))
            return {}

        with Peak(self.device) as peak:
            self.solver._start_epoch()  # flashy logs each stage once per epoch: a fresh (uncommitted) one
            self.solver.run_stage("train", loop)
        if timed:
            merge_peak(self.peak, peak)

    def result(self) -> dict:
        """Seconds per step (all, the step alone, the loader's wait), steps/s, the wait's share, each step."""
        total = self.wait + self.step
        return {"steps": self.steps, "s_per_step": round(total / self.steps, 3),
                "step_s": round(self.step / self.steps, 3), "steps_per_s": round(self.steps / total, 3),
                "data_wait_s_per_step": round(self.wait / self.steps, 4),
                "data_wait_share": round(self.wait / total, 4), "each_step_s": self.each, **self.peak}


def _site(frame) -> str:
    """`package/module.py:line` of a stack frame (the path below site-packages, the sources or the checkout)."""
    path = frame.filename
    for root in ("site-packages/", "/src/audiocraft-1.3.0/", f"{PROJECT}/"):
        path = path.split(root)[-1]
    return f"{path}:{frame.lineno}"


class HostReads(_TorchFunctionMode):
    """Counts what makes the host wait for the device in a solver's step and metrics.

    - `n`: tensor reads (`.item()`, `float()`, `bool()`, string formatting, boolean-mask indexing), outside the data
      pipeline.
    - `copies`: blocking copies to the configured device (`.to("cuda")` / `.cuda()` without `non_blocking=True`,
      a tensor built with `device="cuda"`), outside the loader: on CUDA each one synchronises the stream (torch
      waits for the copy, and so for everything queued before it). The target is told by its type: code places
      host data with the config's device string (`cfg.device`, a conditioner's `device`), while `.to(t.device)`
      (a `torch.device`) moves between tensors of one device, a no-op on a GPU, and is not counted; nor is
      host placement written as `torch.device("cpu")` (`zalo_music.solvers.sync_free.tokenize_on_host`).
    `sites` counts both by call site (file:line), for the report.

    On a CPU nothing waits, but each read or copy counted is one a GPU run would wait on.
    """

    NAMES = {"item", "__bool__", "__float__", "__int__", "tolist", "__format__", "nonzero"}
    DATA = ("torch/utils/data", "audiocraft/data/", "zalo_music/tokens/dataset", "conditioners.py")
    LOADER = ("torch/utils/data",)

    def __init__(self) -> None:
        super().__init__()
        self.n = 0
        self.copies = 0
        self.sites: collections.Counter = collections.Counter()

    @staticmethod
    def _blocking_copy(name: str, args: tuple, kwargs: dict) -> bool:
        if kwargs.get("non_blocking") or (name == "to" and any(a is True for a in args[2:])):
            return False
        if name == "cuda":
            return True
        if name in ("to", "tensor", "as_tensor"):
            targets = (*args[1:2], kwargs.get("device")) if name == "to" else (kwargs.get("device"),)
            return any(isinstance(t, str) for t in targets)
        return False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        import torch

        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        index = args[1] if name == "__getitem__" and len(args) > 1 else None
        boolean = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                      for i in (index if isinstance(index, tuple) else (index,)))
        read = name in self.NAMES or boolean
        copy = self._blocking_copy(name, args, kwargs)
        if read or copy:
            import traceback

            stack = traceback.extract_stack()[:-1]
            files = [f.filename for f in stack]
            if read and not any(d in f for f in files for d in self.DATA):
                self.n += 1
                self.sites[f"read {_site(stack[-1])}"] += 1
            if copy and not any(d in f for f in files for d in self.LOADER):
                self.copies += 1
                self.sites[f"copy {_site(stack[-1])}"] += 1
        return func(*args, **kwargs)


def profile_summary(run: tp.Callable[[], tp.Any], steps: int, device: str, top: int = 12) -> dict:
    """What bounds `steps` steps of `run()`: torch.profiler's per-op totals and, on CUDA, how busy the GPU was.

    - `wall_ms_per_step`: the steps' wall time (the device synchronised at the end);
    - on CUDA, `kernels_per_step` (launches), `gpu_busy_ms_per_step` (the kernels' summed time; overlapping
      kernels count twice, a bound) and `gpu_idle_share` = 1 - busy / wall: near 1, the host (launches, Python,
      waits) bounds the step; near 0, the GPU's work does;
    - `ops`: the `top` ops by self time on the device (self CPU time on a CPU), with calls per step.

    Args:
        run: one step.
        steps: how many to profile (after one untimed call).
        device: where they run.
        top: ops listed.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = str(device).startswith("cuda")
    run()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            run()
        sync(device)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = sorted(events, key=lambda e: getattr(e, key, 0), reverse=True)[:top]
    out: dict = {"steps": steps, "wall_ms_per_step": round(1000 * wall / steps, 3), "ops": [
        {"op": e.key, "calls_per_step": round(e.count / steps, 2),
         "self_ms_per_step": round(getattr(e, key, 0) / 1000 / steps, 3)} for e in rows]}
    if cuda:  # every kernel is attributed to the op that launched it
        kernels = sum(len(getattr(e, "kernels", [])) for e in prof.events())
        busy = sum(e.self_device_time_total for e in events) / 1000  # us -> ms
        out.update(kernels_per_step=round(kernels / steps, 1), gpu_busy_ms_per_step=round(busy / steps, 3),
                   gpu_idle_share=round(max(0.0, 1 - busy / (1000 * wall)), 3))
    return out


def ensure_project_on_path() -> None:
    """Make `zalo_music` importable from a checkout that is not installed (a bare device machine)."""
    if str(PROJECT) not in sys.path:
        sys.path.insert(0, str(PROJECT))
