"""Our CLAP audio preparation against laion-clap's own `get_audio_embedding_from_filelist`, case by case.

laion-clap decodes with librosa (libsndfile), averages the channels, resamples to 48 kHz with soxr HQ,
quantises to int16 and fills a short clip with `repeatpad` (whole repetitions, then zeros); a long clip is
cropped at a random offset, which these tests pin to offset 0 (our documented choice: the first 10 s).

Two levels:
- every case (16/32/44.1 kHz x MP3/WAV x mono/stereo x 3/7/10/15 s): the exact waveform laion-clap hands to
  its model (captured at `get_audio_features`) against ours, after the same int16 quantisation;
- a covering subset, each rate/format/channel count/duration at least once: embeddings through the same
  random HTSAT-tiny weights, cosine >= 0.9999 (the model is the slow part on a 2-core CPU).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import clap_fixture

RATES = (16_000, 32_000, 44_100)
FORMATS = ("mp3", "wav")
CHANNELS = (1, 2)
SECONDS = (3, 7, 10, 15)
CASES = list(itertools.product(RATES, FORMATS, CHANNELS, SECONDS))
#: Each value of each axis at least once, the 7-s (laion's zero tail) and 15-s (crop) cases in both formats.
EMBED_CASES = [(16_000, "mp3", 1, 7), (32_000, "wav", 2, 7), (44_100, "mp3", 2, 15), (16_000, "wav", 2, 3),
               (44_100, "wav", 1, 10), (32_000, "mp3", 1, 15)]


def _case_id(case) -> str:
    sr, fmt, ch, sec = case
    return f"{sr // 1000 if sr % 1000 == 0 else sr / 1000}k-{fmt}-{'mono' if ch == 1 else 'stereo'}-{sec}s"


def _signal(sr: int, channels: int, seconds: float, seed: int) -> np.ndarray:
    """A chirp + noise whose channels differ (so a wrong downmix shows) and whose start differs from its end."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    left = 0.4 * np.sin(2 * np.pi * (200 + 150 * t) * t) * np.exp(-0.05 * t)
    right = 0.3 * np.sin(2 * np.pi * 660 * t) * (t / max(seconds, 1e-9))
    x = np.stack([left, right], axis=1)[:, :channels] + 0.03 * rng.normal(size=(t.size, channels))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory) -> dict:
    import soundfile as sf

    folder = tmp_path_factory.mktemp("laion_cases")
    files = {}
    for i, case in enumerate(CASES):
        sr, fmt, ch, sec = case
        path = folder / f"{_case_id(case)}.{fmt}"
        sf.write(path, _signal(sr, ch, sec, seed=i), sr, format=fmt.upper())
        files[case] = path
    return files


@pytest.fixture(scope="module")
def embedder():
    from zalo_music.runtime import prepare

    prepare()  # before laion_clap: its import guard (conftest did it already; explicit when run alone)
    from zalo_music.metrics.clap import ClapSpec, get_embedder

    ckpt = clap_fixture.build_clap_checkpoint(clap_fixture.HF_ROOT / "ckpt" / "clap_tiny_random.pt")
    # The same spec as tests/test_metrics.py: one model per session (get_embedder caches it).
    return get_embedder(ClapSpec(checkpoint=str(ckpt), amodel="HTSAT-tiny", device="cpu", batch_size=2))


def _laion_at_offset_zero(module, files: list[Path], capture_only: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """Run laion-clap's `get_audio_embedding_from_filelist` with its random crop pinned to offset 0.

    Returns the waveforms laion hands to the model and (unless `capture_only`, which skips the model) the
    embeddings.
    """
    import laion_clap.hook as hook
    import torch

    waveforms: list[np.ndarray] = []
    original_features = hook.get_audio_features
    original_randint = np.random.randint
    original_embed = module.model.get_audio_embedding

    def features(sample, audio, *args, **kwargs):
        out = original_features(sample, audio, *args, **kwargs)
        waveforms.append(out["waveform"].detach().cpu().numpy().copy())
        return out

    hook.get_audio_features = features
    np.random.randint = lambda low, high=None, *a, **k: 0  # laion's crop offset: np.random.randint(0, overflow+1)
    if capture_only:
        module.model.get_audio_embedding = lambda data: torch.zeros(len(data), 512)
    try:
        emb = module.get_audio_embedding_from_filelist([str(f) for f in files])
    finally:
        hook.get_audio_features = original_features
        np.random.randint = original_randint
        module.model.get_audio_embedding = original_embed
    return waveforms, emb


def _quantised(w: np.ndarray) -> np.ndarray:
    from laion_clap.training.data import float32_to_int16, int16_to_float32

    return int16_to_float32(float32_to_int16(w))


@pytest.fixture(scope="module")
def laion_waveforms(clip_files, embedder) -> dict:
    waveforms, _ = _laion_at_offset_zero(embedder.module, [clip_files[c] for c in CASES], capture_only=True)
    return dict(zip(CASES, waveforms, strict=True))


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_window_equals_laion_waveform(case, clip_files, laion_waveforms):
    from zalo_music.metrics.audio import WINDOW, load_clip_window

    ours, info = load_clip_window(clip_files[case])
    theirs = laion_waveforms[case]
    assert theirs.shape == ours.shape == (WINDOW,)
    diff = np.abs(_quantised(ours) - theirs)
    # Same decoder, resampler, downmix, fill and crop: identical int16 samples (one step of 1/32767 allowed on
    # a handful of samples where float round-off straddles a quantisation boundary).
    assert diff.max() <= 1.5 / 32767 and (diff > 0).mean() < 1e-4, (diff.max(), (diff > 0).mean())
    sec = case[-1]
    assert info.padded == (sec < 10) and info.cropped == (sec > 10)


def test_repeatpad_is_whole_repetitions_then_zeros():
    from zalo_music.metrics.audio import CLAP_SAMPLE_RATE, WINDOW, clap_window

    x = np.random.default_rng(0).uniform(-0.5, 0.5, 7 * CLAP_SAMPLE_RATE).astype(np.float32)
    w, info = clap_window(x, CLAP_SAMPLE_RATE)
    assert info.padded
    np.testing.assert_array_equal(w[: x.size], x)  # one whole repetition fits in 10 s ...
    assert not w[x.size:].any() and w.size == WINDOW  # ... and the remaining 3 s are zeros (laion's repeatpad)
    y = x[: 3 * CLAP_SAMPLE_RATE]
    w, _ = clap_window(y, CLAP_SAMPLE_RATE)
    np.testing.assert_array_equal(w[: 3 * y.size], np.tile(y, 3))
    assert not w[3 * y.size:].any()


@pytest.mark.parametrize("case", EMBED_CASES, ids=[_case_id(c) for c in EMBED_CASES])
def test_embedding_matches_laion_filelist(case, clip_files, embedder, laion_embeddings):
    from zalo_music.metrics.evaluator import embed_files

    ours, _, failed = embed_files(embedder, [clip_files[case]])
    assert not failed
    theirs = laion_embeddings[case]
    cos = float(ours[0] @ theirs / np.linalg.norm(ours[0]) / np.linalg.norm(theirs))
    assert cos >= 0.9999, cos


@pytest.fixture(scope="module")
def laion_embeddings(clip_files, embedder) -> dict:
    _, emb = _laion_at_offset_zero(embedder.module, [clip_files[c] for c in EMBED_CASES], capture_only=False)
    return dict(zip(EMBED_CASES, emb, strict=True))


def test_long_clip_reads_only_the_window(tmp_path):
    """A 20-min WAV costs the memory of ~11 s: only the window (+ resampling margin) is decoded."""
    import tracemalloc

    import soundfile as sf

    from zalo_music.metrics.audio import WINDOW, load_clip_window

    sr, minutes = 16_000, 20
    path = tmp_path / "long.wav"
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        block = (0.2 * np.sin(np.arange(sr * 60) * 2 * np.pi * 440 / sr)).astype(np.float32)
        for _ in range(minutes):
            f.write(block)
    whole_file_float32 = sr * 60 * minutes * 4  # what decoding it whole would cost before resampling
    tracemalloc.start()
    try:
        w, info = load_clip_window(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert w.shape == (WINDOW,) and info.cropped and info.duration == pytest.approx(60 * minutes)
    assert peak < 16 * 2**20 and peak < whole_file_float32 / 4, peak


def test_undecodable_and_unknown_files_are_named_errors(tmp_path):
    from zalo_music.metrics.audio import ClipReadError, load_clip_window

    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ClipReadError, match="bad.mp3"):
        load_clip_window(bad)
    with pytest.raises(ClipReadError, match="not a readable file"):
        load_clip_window(tmp_path / "absent.mp3")
