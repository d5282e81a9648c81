"""Shared fixtures. Every test runs offline, with XPs, data and manifests in a temporary folder."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="zalo-music-tests-"))
# Set before zalo_music is imported anywhere: it exports them to audiocraft at import time.
os.environ.update({
    "ZALO_MUSIC_DORA_DIR": str(_ROOT / "outputs"),
    "AUDIOCRAFT_DORA_DIR": str(_ROOT / "outputs"),
    "ZALO_MUSIC_DATA_DIR": str(_ROOT / "data"),
    "ZALO_MUSIC_MANIFEST_DIR": str(_ROOT / "manifests"),
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
})
# Tests are an entry point: audiocraft's environment and zalo_music's upstream patches, once, before any test
# module imports audiocraft (importing zalo_music no longer does it).
from zalo_music.runtime import prepare  # noqa: E402

prepare()

from tests.helpers import PROJECT, SHARED  # noqa: E402,F401  (re-exported: the tests' paths)
from tests.helpers.data import DEMO_TOKEN_ARGV  # noqa: E402
from tests.helpers.dora import TINY_ARGV, run_dora, xp_of_run  # noqa: E402


def pytest_configure(config):
    """The upstream warnings `runtime.prepare()` silences, silenced in-process too: pytest resets Python's warning
    filters around each test, so `quiet.FILTERS` are also handed to its own `filterwarnings`."""
    from zalo_music import quiet

    if not quiet.debug_requested():
        for f in quiet.FILTERS:
            config.addinivalue_line("filterwarnings", f.pytest_line())


@pytest.fixture(scope="session")
def work_root() -> Path:
    return _ROOT


@pytest.fixture(scope="session")
def demo_source(work_root: Path) -> Path:
    """The embedded demo dataset rendered once per session: returns its JSON path."""
    from zalo_music.data.demo import build_demo

    return build_demo(work_root / "data" / "demo_source", n=64)


@pytest.fixture(scope="session")
def demo_manifests(demo_source: Path) -> dict:
    """The demo dataset prepared as `dset=zalo/demo` expects it."""
    from zalo_music.data.prepare import prepare

    return prepare(demo_source, demo_source.parent / "audio", "demo", workers=2, quiet=True)


@pytest.fixture(scope="session")
def demo_token_cache(demo_manifests: dict) -> dict:
    """The demo's token cache, encoded once per session: `tokenize`'s report of that first build."""
    from zalo_music.tokens.encode import tokenize

    return tokenize(DEMO_TOKEN_ARGV, quiet=True)


@pytest.fixture(scope="session")
def tiny_xp(demo_manifests: dict) -> dict:
    """A real `dora run` of the tiny solver: returns its signature, folder and the run's output."""
    proc = run_dora("run", *TINY_ARGV)
    out = proc.stdout + proc.stderr  # dora logs to stderr
    folder = xp_of_run(out)
    history = json.loads((folder / "history.json").read_text())
    return {"sig": folder.name, "folder": folder, "log": out, "history": history}


def pytest_sessionfinish(session, exitstatus):
    """Remove the session's temporary folders (XPs, data, the stand-in HF cache) unless asked to keep them."""
    if os.environ.get("ZALO_MUSIC_KEEP_TEST_DIRS") == "1":
        print(f"\nkept test folders: {_ROOT}")
        return
    shutil.rmtree(_ROOT, ignore_errors=True)
    clap_fixture = sys.modules.get("tests.helpers.clap_fixture")
    if clap_fixture is not None:
        shutil.rmtree(clap_fixture.HF_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def benchkit():
    """`scripts/benchkit.py`, the benchmarks' harness (its counters serve tests too)."""
    import importlib

    scripts = str(PROJECT / "scripts")
    sys.path.insert(0, scripts)
    try:
        yield importlib.import_module("benchkit")
    finally:
        sys.path.remove(scripts)


@pytest.fixture(scope="module")
def tiny_random_musicgen():
    """A `MusicGen` of the tiny recipe's LM with random weights on its persisted debug codec (no training).

    For generation mechanics (batching, seeds, sharding, best-of-N). The stand-in HF cache must exist first:
    audiocraft's solvers import laion_clap, which loads its tokenizers at import time.
    """
    import torch
    from audiocraft.models import MusicGen
    from audiocraft.models.builders import get_lm_model

    from tests.helpers import clap_fixture
    from zalo_music import debug_codec
    from zalo_music.patches import allow_short_segment_musicgen
    from zalo_music.train import main

    clap_fixture.build_clap_checkpoint(clap_fixture.HF_ROOT / "ckpt" / "clap_tiny_random.pt")
    allow_short_segment_musicgen()
    cfg = main.get_xp(["solver=zalo/tiny"]).cfg
    torch.manual_seed(0)
    lm = get_lm_model(cfg).eval()
    return MusicGen("tiny-random", debug_codec.load(), lm, max_duration=10.0)
