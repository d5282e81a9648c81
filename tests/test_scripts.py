"""The benchmark scripts' shared harness (`scripts/benchkit.py`) and their entry points."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import PROJECT

SCRIPTS = PROJECT / "scripts"


def test_synthetic_clips_are_the_length_and_rate_asked(benchkit, tmp_path):
    import soundfile as sf

    texts = benchkit.synthetic_clips(tmp_path, 3, 1.5, seed=0, sample_rate=16_000, key=lambda i: f"c{i}.mp3")
    assert sorted(texts) == ["c0.mp3", "c1.mp3", "c2.mp3"] and all(texts.values())
    for name in texts:
        info = sf.info(tmp_path / name)
        assert (info.samplerate, info.channels, info.frames) == (16_000, 1, 24_000)
    again = benchkit.synthetic_clips(tmp_path / "again", 3, 1.5, seed=0, sample_rate=16_000,
                                     key=lambda i: f"c{i}.mp3")
    assert again == texts and (tmp_path / "again" / "c1.mp3").read_bytes() == (tmp_path / "c1.mp3").read_bytes()


def test_timed_steps_times_only_the_steps_after_warmup(benchkit):
    import time

    seen: list[int] = []

    def step(i: int) -> None:
        seen.append(i)
        time.sleep(0.02 if i >= 2 else 0.0)

    res = benchkit.timed_steps(step, n=3, warmup=2)
    assert seen == [0, 1, 2, 3, 4] and res["steps"] == 3 and len(res["each_s"]) == 3
    assert 0.015 < res["median_s"] < 0.5 and res["total_s"] >= 3 * 0.015


def test_result_header_names_the_command_and_machine(benchkit):
    head = benchkit.result_header(SCRIPTS / "bench_generate.py", ["--n", "4"])
    assert head["command"] == ".venv/bin/python scripts/bench_generate.py --n 4"
    assert head["machine"]["cores"] >= 1 and head["machine"]["torch"] and head["date_utc"].endswith("Z")


def test_host_reads_counts_reads_and_the_copies_that_wait(benchkit):
    """What a GPU would wait on: value reads, and copies to the config's device (a string) without non_blocking;
    a move to another tensor's device (a torch.device: a no-op on a GPU) and a non-blocking copy do not count."""
    import torch

    x = torch.ones(3)
    with benchkit.HostReads() as waits:
        x.sum().item()
        bool(x.any())
        x[x > 0]
        x.to("cpu")
        torch.tensor([1, 2], device="cpu")
        x.to(x.device)
        x.to("cpu", non_blocking=True)
        x.to(torch.device("cpu"))
        x + 1
    assert (waits.n, waits.copies) == (3, 2), dict(waits.sites)
    assert sum(k for site, k in waits.sites.items() if site.startswith("copy tests/test_scripts.py")) == 2


def test_device_kit_stubs_import_like_the_measured_paths_need(tmp_path):
    """scripts/device/kit.py's stubs: audiocraft's xformers imports resolve (torch's unbind, a mask marker), the
    xformers kernel raises when called, and an optional-dependency probe (`try: import av; av.logging`) sees an
    ImportError, while the import system's own probes see plain absence."""
    import os

    sys.path.insert(0, str(SCRIPTS / "device"))
    try:
        import kit
    finally:
        sys.path.remove(str(SCRIPTS / "device"))
    kit.stubs(tmp_path)
    code = """
import torch
from xformers.ops import LowerTriangularMask, memory_efficient_attention, unbind
x = torch.arange(6.0).view(1, 2, 3)
assert all(torch.equal(a, b) for a, b in zip(unbind(x, dim=1), torch.unbind(x, dim=1)))
assert LowerTriangularMask() is not None
for call in (lambda: memory_efficient_attention(x, x, x), lambda: __import__("av").logging):
    try:
        call()
    except ImportError as exc:
        assert "stub" in str(exc), exc
    else:
        raise AssertionError("a stub did not raise")
import av, spacy
assert not hasattr(av, "__version__") and not hasattr(spacy, "__version__")
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.mark.e2e
def test_every_bench_script_and_fullshape_section_loads():
    """`--help` of each script (parsers build, imports resolve) and each full-shape section module imports."""
    for script in sorted(SCRIPTS.glob("bench_*.py")):
        proc = subprocess.run([sys.executable, str(script), "--help"], cwd=PROJECT, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, f"{script.name} --help:\n{proc.stderr[-2000:]}"
    code = "import fullshape.train, fullshape.generate, fullshape.clap, fullshape.loop, fullshape.report"
    proc = subprocess.run([sys.executable, "-c", code], cwd=SCRIPTS, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
