"""CLAP at the GPU's pace, proven equal to the serial float32 path it speeds up.

- `metrics.windows.window_batches`: the windows and failures of the serial loop, in input order, with the next
  batch's reads submitted before this batch is handed over (so they run while CLAP embeds it).
- `ClapEmbedder.embed_windows(dtype=...)`: float32 is laion-clap's own `get_audio_embedding_from_data`;
  bfloat16 runs the tower under autocast with its STFT/log-mel front end kept in float32, within a small
  cosine of float32.
- best-of-N's `--clap-dtype`: resolved per device, recorded in the report's settings.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import clap_fixture


def _write_clips(folder: Path, n: int, sr: int = 32_000, seconds: float = 2.0) -> list[Path]:
    import soundfile as sf

    rng = np.random.default_rng(3)
    t = np.arange(int(sr * seconds)) / sr
    files = []
    for i in range(n):
        path = folder / f"{i:03d}.wav"
        sf.write(path, (0.3 * np.sin(2 * np.pi * 110 * (i + 1) * t) + 0.02 * rng.normal(size=t.size))
                 .astype(np.float32), sr)
        files.append(path)
    return files


def test_window_batches_give_the_serial_loop_s_windows_and_failures_in_order(tmp_path):
    from zalo_music.metrics.audio import ClipReadError, load_clip_window
    from zalo_music.metrics.windows import window_batches

    files = _write_clips(tmp_path, 7)
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio")
    files.insert(3, bad)
    got = [(start, reads) for start, reads in window_batches(files, batch_size=3, workers=3)]
    assert [start for start, _ in got] == [0, 3, 6]
    reads = [r for _, rs in got for r in rs]
    assert len(reads) == len(files)
    for path, (window, info, reason) in zip(files, reads, strict=True):
        if path == bad:
            with pytest.raises(ClipReadError) as exc:
                load_clip_window(path)
            assert window is None and info is None and reason == str(exc.value)
            continue
        expected, expected_info = load_clip_window(path)
        np.testing.assert_array_equal(window, expected)
        assert info == expected_info and reason is None
    with pytest.raises(ValueError, match="batch_size"):
        next(window_batches(files, batch_size=0))


def test_window_batches_read_the_next_batch_while_the_caller_holds_this_one(tmp_path, monkeypatch):
    """Batch k+1's reads start before batch k is handed over: a caller that waits (as CLAP's forward does)
    finds them under way; a loop that reads each batch only when asked would leave them unstarted."""
    from zalo_music.metrics import windows

    files = _write_clips(tmp_path, 6)
    started: list[str] = []
    lock = threading.Lock()
    real = windows.load_clip_window

    def spy(path):
        with lock:
            started.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(windows, "load_clip_window", spy)
    batches = windows.window_batches(files, batch_size=2, workers=2)
    _, first = next(batches)
    assert len(first) == 2
    deadline = threading.Event()
    for _ in range(200):  # the pool's threads pick them up within milliseconds
        with lock:
            if {"002.wav", "003.wav"} <= set(started):
                break
        deadline.wait(0.01)
    with lock:
        assert {"002.wav", "003.wav"} <= set(started), started
        assert "004.wav" not in started  # one batch ahead, not the whole list (bounded memory)
    assert sum(len(r) for _, r in batches) == 4


@pytest.fixture(scope="module")
def embedder():
    from zalo_music.runtime import prepare

    prepare()
    from zalo_music.metrics.clap import ClapSpec, get_embedder

    ckpt = clap_fixture.build_clap_checkpoint(clap_fixture.HF_ROOT / "ckpt" / "clap_tiny_random.pt")
    return get_embedder(ClapSpec(checkpoint=str(ckpt), amodel="HTSAT-tiny", device="cpu", batch_size=2))


def _windows(n: int) -> np.ndarray:
    from zalo_music.metrics.audio import CLAP_SAMPLE_RATE, clap_window

    rng = np.random.default_rng(11)
    t = np.arange(10 * CLAP_SAMPLE_RATE) / CLAP_SAMPLE_RATE
    # loud low tones over quiet noise: the quiet bins are what a bfloat16 STFT would lose
    return np.stack([clap_window((0.5 * np.sin(2 * np.pi * 80 * (i + 1) * t)
                                  + 1e-3 * rng.normal(size=t.size)).astype(np.float32), CLAP_SAMPLE_RATE)[0]
                     for i in range(n)])


def test_float32_windows_are_laion_s_own_numpy_path(embedder):
    """The tensor path with laion's int16 round trip done first gives `get_audio_embedding_from_data`'s
    numpy-input embeddings (which quantise inside)."""
    windows = _windows(3)
    ours = embedder.embed_windows(windows)
    theirs = embedder.module.get_audio_embedding_from_data(windows)
    theirs = theirs / np.linalg.norm(theirs, axis=-1, keepdims=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_bfloat16_runs_the_tower_in_bfloat16_the_front_end_in_float32_and_stays_close(embedder):
    import torch

    branch = embedder.module.model.audio_branch
    seen: dict[str, torch.dtype] = {}
    linear = next(m for m in branch.modules() if isinstance(m, torch.nn.Linear))
    hooks = [branch.logmel_extractor.register_forward_hook(lambda m, i, o: seen.__setitem__("logmel", o.dtype)),
             linear.register_forward_hook(lambda m, i, o: seen.__setitem__("linear", o.dtype))]
    try:
        windows = _windows(4)
        full = embedder.embed_windows(windows)
        assert seen == {"logmel": torch.float32, "linear": torch.float32}
        half = embedder.embed_windows(windows, dtype="bfloat16")
        assert seen == {"logmel": torch.float32, "linear": torch.bfloat16}
    finally:
        for h in hooks:
            h.remove()
    assert half.dtype == np.float64 and np.allclose(np.linalg.norm(half, axis=-1), 1.0)
    cos = (full * half).sum(-1)
    assert cos.min() > 0.999, cos
    with pytest.raises(ValueError, match="float16"):
        embedder.embed_windows(windows, dtype="float16")


def test_clap_dtype_resolves_per_device_and_is_part_of_best_of_n_settings(monkeypatch):
    import torch

    from zalo_music.cli import build_parser
    from zalo_music.generate_settings import settings_from_args
    from zalo_music.metrics.clap import ClapSpec
    from zalo_music.rerank import RerankOptions

    spec = ClapSpec(checkpoint="/x/clap.pt", amodel="HTSAT-tiny", device="cpu")
    assert RerankOptions(clap=spec).resolved_dtype() == "float32"  # auto on a CPU: the judge's precision
    assert RerankOptions(clap=ClapSpec(device="cuda:0")).resolved_dtype() == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert RerankOptions(clap=ClapSpec()).resolved_dtype() == "bfloat16"  # no device given: cuda when there
    assert RerankOptions(clap=spec, dtype="bfloat16").settings()["clap_dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="--clap-dtype"):
        RerankOptions(clap=spec, dtype="half").resolved_dtype()
    args = build_parser("generate").parse_args(["generate", "--json", "j.json", "--out", "o", "--candidates", "2",
                                                "--clap-dtype", "bfloat16"])
    assert settings_from_args(args)[2].dtype == "bfloat16"


def test_xp_config_s_clap_dtype_reaches_the_reranker():
    from zalo_music.metrics.eval_settings import rerank_options_from_cfg
    from zalo_music.train import main

    for value in ("auto", "float32"):
        cfg = main.get_xp(["solver=zalo/musicgen_small_ft", f"zalo.eval.clap_dtype={value}"]).cfg
        assert rerank_options_from_cfg(cfg).dtype == value
