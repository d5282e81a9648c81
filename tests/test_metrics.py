"""Evaluation: FAD/FAS/CLAS maths, CLAP through laion-clap's code path, caching, the solver stage, grid, score.

CLAP runs on a random HTSAT-tiny checkpoint and a tiny stand-in Hugging Face cache (`tests/helpers/clap_fixture.py`):
the numbers are meaningless, the code path is the real one.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import clap_fixture  # noqa: F401  (points HF_HOME / //reference at temp folders: import first)
from tests.helpers.data import copy_demo_clips
from tests.helpers.dora import TINY_ARGV, run_dora
from zalo_music.metrics import GaussianStats, clas, fad_from_stats, fad_infinity, fas, frechet_distance
from zalo_music.metrics.audio import CLAP_SAMPLE_RATE, WINDOW, clap_window
from zalo_music.metrics.errors import MetricUnavailableError
from zalo_music.metrics.evaluator import ClasSettings, scores_from_embeddings


# --------------------------------------------------------------------------------------------- FAD maths
def _closed_form_diag(mu1, var1, mu2, var2) -> float:
    # For diagonal covariances the matrix square root is elementwise: an independent check of sqrtm.
    return float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum())


def test_frechet_distance_matches_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    var1, var2 = rng.uniform(0.2, 2.0, d), rng.uniform(0.2, 2.0, d)
    expected = _closed_form_diag(mu1, var1, mu2, var2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-9)
    # Rotating both Gaussians by the same orthogonal matrix leaves the distance unchanged (full covariances).
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    rotated = frechet_distance(q @ mu1, q @ np.diag(var1) @ q.T, q @ mu2, q @ np.diag(var2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-6)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _closed_form_full(mu1, s1, mu2, s2) -> float:
    # Tr((S1 S2)^(1/2)) = Tr((S1^(1/2) S2 S1^(1/2))^(1/2)): a symmetric PSD matrix, so eigh only (no sqrtm). An
    # independent route to the same number for ANY covariances, commuting or not.
    r = _psd_sqrt(s1)
    a = r @ s2 @ r
    eig = np.linalg.eigvalsh((a + a.T) / 2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(eig, 0, None)).sum())


@pytest.mark.parametrize("n,d", [(400, 16), (12, 32)])  # N > dim (full rank) and N < dim (rank-deficient)
def test_frechet_distance_non_commuting_covariances(n, d):
    rng = np.random.default_rng(n + d)

    def rotation():
        q, r = np.linalg.qr(rng.normal(size=(d, d)))
        return q * np.sign(np.diag(r))

    # Two sets with different random principal axes: their covariances do not commute, so a square root
    # taken factor by factor (sqrtm(S1) @ sqrtm(S2)) is wrong here (by ~4% at N > dim, ~23% at N < dim).
    x = rng.normal(size=(n, d)) * rng.uniform(0.3, 2.0, d) @ rotation().T
    y = rng.normal(size=(n, d)) * rng.uniform(0.3, 2.0, d) @ rotation().T + 0.3
    gx, gy = GaussianStats.from_embeddings(x), GaussianStats.from_embeddings(y)
    assert np.abs(gx.sigma @ gy.sigma - gy.sigma @ gx.sigma).max() > 0.5  # really non-commuting
    expected = _closed_form_full(gx.mu, gx.sigma, gy.mu, gy.sigma)
    assert fad_from_stats(gx, gy) == pytest.approx(expected, rel=1e-6)
    assert fad_from_stats(gy, gx) == pytest.approx(expected, rel=1e-6)  # symmetric


def test_fad_from_samples_converges_to_closed_form():
    rng = np.random.default_rng(1)
    d, n = 4, 40_000
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    var1, var2 = np.array([1.0, 0.5, 2.0, 1.0]), np.array([0.5, 0.5, 1.0, 3.0])
    x = mu1 + rng.normal(size=(n, d)) * np.sqrt(var1)
    y = mu2 + rng.normal(size=(n, d)) * np.sqrt(var2)
    got = fad_from_stats(GaussianStats.from_embeddings(x), GaussianStats.from_embeddings(y))
    assert got == pytest.approx(_closed_form_diag(mu1, var1, mu2, var2), rel=0.03)


@pytest.mark.parametrize("n,d", [(200, 8), (10, 64)])  # full-rank and rank-deficient (N < D) sets
def test_identical_sets_give_fad_zero_fas_one(n, d):
    x = np.random.default_rng(2).normal(size=(n, d))
    stats = GaussianStats.from_embeddings(x)
    value = fad_from_stats(stats, GaussianStats.from_embeddings(x.copy()))
    assert value == pytest.approx(0.0, abs=1e-6)
    assert fas(value) == pytest.approx(1.0, abs=1e-6)


def test_fas_and_clas_definitions():
    assert fas(0.0) == 1.0
    assert fas(2.0, tau=2.0) == pytest.approx(np.exp(-1.0))
    assert fas(3.0) == pytest.approx(np.exp(-3.0))
    assert clas(0.4, 0.8) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        fas(1.0, tau=0)


def test_scores_independent_of_item_order():
    rng = np.random.default_rng(3)
    t, a = rng.normal(size=(12, 16)), rng.normal(size=(12, 16))
    ref = GaussianStats.from_embeddings(rng.normal(size=(30, 16)))
    perm = rng.permutation(12)
    m1, cos1 = scores_from_embeddings(t, a, ref, ClasSettings())
    m2, cos2 = scores_from_embeddings(t[perm], a[perm], ref, ClasSettings())
    for key in ("clap", "fad", "fas", "clas"):
        assert m1[key] == pytest.approx(m2[key], rel=1e-6, abs=1e-9)  # round-off only
    np.testing.assert_allclose(cos1[perm], cos2)


def test_every_metric_of_the_registry_computes_and_optional_ones_switch():
    """Each `registry.METRICS` entry computes a finite value on real-shaped embeddings (FAD-infinity switched
    on); `clap_p10` is the 10th percentile of the per-clip CLAP; a switch off removes its metric; the real
    recipe declares a switch for every optional metric."""
    import dataclasses

    from zalo_music.metrics.eval_settings import settings_from_cfg
    from zalo_music.metrics.registry import METRICS, enabled
    from zalo_music.train import main

    rng = np.random.default_rng(4)
    t, a = rng.normal(size=(40, 16)), rng.normal(size=(40, 16)) + 0.3 * rng.normal(size=(1, 16))
    ref = GaussianStats.from_embeddings(rng.normal(size=(60, 16)))
    settings = ClasSettings(fad_inf=True, fad_inf_sizes=(20, 30, 40))
    m, cos = scores_from_embeddings(t, a, ref, settings)
    assert set(m) == {metric.name for metric in METRICS} | {"n_items"}
    assert all(np.isfinite(m[metric.name]) for metric in METRICS)
    assert m["clap_p10"] == pytest.approx(np.percentile(cos, 10)) and m["clap_p10"] < m["clap"]
    off = dataclasses.replace(settings, metrics=enabled({"clap_p10": False}))
    assert "clap_p10" not in scores_from_embeddings(t, a, ref, off)[0]
    with pytest.raises(ValueError, match="zalo.eval.metrics.nope: no such optional metric"):
        enabled({"nope": True})
    cfg = main.get_xp(["solver=zalo/musicgen_small_ft", "zalo.eval.clas=true"]).cfg
    assert set(cfg.zalo.eval.metrics) == {metric.name for metric in METRICS if metric.optional}
    assert "clap_p10" in settings_from_cfg(cfg).metrics
    cfg = main.get_xp(["solver=zalo/musicgen_small_ft", "zalo.eval.clas=true", "zalo.eval.metrics.clap_p10=false"]).cfg
    assert "clap_p10" not in settings_from_cfg(cfg).metrics


def test_fad_infinity_removes_small_sample_bias():
    rng = np.random.default_rng(4)
    d = 4
    shift = np.array([1.0, 0.0, 0.0, 0.0])
    ref = GaussianStats(mu=np.zeros(d), sigma=np.eye(d), n=10**9)  # exact reference Gaussian
    gen = rng.normal(size=(400, d)) + shift  # true FAD = ||shift||^2 = 1
    small = fad_from_stats(GaussianStats.from_embeddings(gen[:20]), ref)
    result = fad_infinity(gen, ref, sizes=[20, 40, 80, 160, 400], draws=8, seed=0)
    assert result["fad_inf"] == pytest.approx(1.0, abs=0.15)
    assert result["slope"] > 0  # small sets overestimate
    assert abs(small - 1.0) > abs(result["fad_inf"] - 1.0)
    again = fad_infinity(gen, ref, sizes=[20, 40, 80, 160, 400], draws=8, seed=0)
    assert again["fad_inf"] == result["fad_inf"]  # deterministic


def test_fad_infinity_bootstrap_is_fadtk_shaped_and_warns_below_dim():
    from zalo_music.metrics.fad import fad_inf_sizes

    assert fad_inf_sizes(1000, "bootstrap") == [int(s) for s in np.linspace(500, 1000, 25)]  # fadtk's sizes
    assert fad_inf_sizes(100, "subsets")[0] == 20 and fad_inf_sizes(100, "subsets")[-1] == 100
    rng = np.random.default_rng(6)
    d = 4
    ref = GaussianStats(mu=np.zeros(d), sigma=np.eye(d), n=10**9)
    gen = rng.normal(size=(600, d)) + np.array([1.0, 0, 0, 0])  # true FAD = 1
    boot = fad_infinity(gen, ref, method="bootstrap", seed=0)
    assert boot["method"] == "bootstrap" and boot["sizes"][0] == 500
    assert boot["fad_inf"] == pytest.approx(1.0, abs=0.2)
    assert not boot["warnings"]  # smallest subset 500 >= dim 4
    small = fad_infinity(rng.normal(size=(40, 64)), GaussianStats(np.zeros(64), np.eye(64), 10**9))
    assert small["warnings"] and "below the embedding dimension (64)" in small["warnings"][0]
    with pytest.raises(ValueError, match="method"):
        fad_infinity(gen, ref, method="jackknife")


# --------------------------------------------------------------------------------------------- windows
def test_clap_window_edge_cases():
    sr = 32_000
    long = np.sin(np.linspace(0, 3000, 15 * sr)).astype(np.float32) * 0.5
    w, info = clap_window(long, sr)
    assert w.shape == (WINDOW,) and info.cropped and not info.padded
    np.testing.assert_array_equal(w, clap_window(long, sr)[0])  # deterministic, no random crop
    short = long[: sr // 2]
    w, info = clap_window(short, sr)
    assert w.shape == (WINDOW,) and info.padded
    np.testing.assert_allclose(w[: CLAP_SAMPLE_RATE // 2], w[CLAP_SAMPLE_RATE // 2: CLAP_SAMPLE_RATE], atol=1e-6)
    w, info = clap_window(np.zeros(10 * sr, np.float32), sr)
    assert info.silent and not w.any()
    w, info = clap_window(np.zeros(0, np.float32), sr)
    assert info.silent and w.shape == (WINDOW,)
    nan = long[: 10 * sr].copy()  # (only the first 10 s + resampling margin of a clip are read)
    nan[::100] = np.nan
    w, info = clap_window(nan, sr)
    assert np.isfinite(w).all() and info.nonfinite == len(nan[::100])
    stereo = np.stack([long, -long])[:, : 10 * sr]
    w, info = clap_window(stereo, sr)
    assert np.abs(w).max() < 1e-4  # downmixed to mono (the channels cancel)
    w, info = clap_window(np.ones(10 * CLAP_SAMPLE_RATE, np.float32) * 0.1, CLAP_SAMPLE_RATE)
    assert not info.issues() and w.shape == (WINDOW,)


# --------------------------------------------------------------------------------------------- cache
def _manifest(folder: Path, paths: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.jsonl").write_text("".join(json.dumps({"path": p, "duration": 10.0}) + "\n" for p in paths))
    return folder


def test_reference_stats_cache_hit_and_miss(tmp_path):
    from zalo_music.metrics.reference import reference_stats

    calls = []

    def embed(files):
        calls.append(list(files))
        return np.arange(len(files) * 3, dtype=np.float64).reshape(len(files), 3) ** 1.5

    ref = _manifest(tmp_path / "ref", ["a.wav", "b.wav", "c.wav"])
    cache = tmp_path / "cache"
    s1, hit1, _ = reference_stats(ref, embed, "model-A", cache)
    s2, hit2, _ = reference_stats(ref, embed, "model-A", cache)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    np.testing.assert_array_equal(s1.mu, s2.mu)
    np.testing.assert_array_equal(s1.sigma, s2.sigma)
    assert s2.n == 3
    assert not [p for p in cache.iterdir() if p.suffix != ".npz"]  # atomic write leaves no temp file
    _, hit, _ = reference_stats(ref, embed, "model-B", cache)  # other embedding model / checkpoint
    assert not hit
    _manifest(ref, ["a.wav", "b.wav", "d.wav"])  # manifest content changed
    _, hit, _ = reference_stats(ref, embed, "model-A", cache)
    assert not hit and len(calls) == 3
    for f in cache.iterdir():  # a corrupt cache file is recomputed, not trusted
        f.write_bytes(b"garbage")
    _, hit, _ = reference_stats(ref, embed, "model-A", cache)
    assert not hit and len(calls) == 4


def test_reference_cache_misses_after_in_place_rewrite_with_same_size_and_mtime(tmp_path):
    """`cp -p` / `rsync -t` keep size and mtime: only the bytes say the clip changed."""
    import os

    from zalo_music.metrics.reference import reference_stats

    folder = tmp_path / "ref"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.wav").write_bytes(bytes([i]) * 1000)

    def embed(files):  # embeddings that depend on the bytes, as real ones do
        return np.stack([np.frombuffer(f.read_bytes()[:8], np.uint8).astype(float) for f in files])

    cache = tmp_path / "cache"
    before, hit, _ = reference_stats(folder, embed, "m", cache)
    assert not hit
    victim = folder / "1.wav"
    st = victim.stat()
    victim.write_bytes(bytes([9]) * 1000)  # same size ...
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and same mtime
    assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    after, hit, _ = reference_stats(folder, embed, "m", cache)
    assert not hit  # content-keyed: stale statistics are never served
    assert not np.allclose(after.mu, before.mu)
    again, hit, _ = reference_stats(folder, embed, "m", cache)
    assert hit and np.allclose(again.mu, after.mu)


# --------------------------------------------------------------------------------------------- CLAP
def test_missing_checkpoint_error_names_the_file(tmp_path, monkeypatch):
    from zalo_music.metrics.clap import ClapSpec, resolve_checkpoint

    missing = tmp_path / "nope" / "clap.pt"
    with pytest.raises(MetricUnavailableError, match=re.escape(str(missing))):
        resolve_checkpoint(ClapSpec(checkpoint=str(missing)))
    monkeypatch.setenv("ZALO_MUSIC_CLAP_CHECKPOINT", str(missing))
    with pytest.raises(MetricUnavailableError, match="ZALO_MUSIC_CLAP_CHECKPOINT"):
        resolve_checkpoint(ClapSpec())
    monkeypatch.delenv("ZALO_MUSIC_CLAP_CHECKPOINT")
    # Default: the music checkpoint under //reference/clap (offline: no download attempted).
    with pytest.raises(MetricUnavailableError, match=r"reference/clap/music_audioset_epoch_15_esc_90\.14\.pt"):
        resolve_checkpoint(ClapSpec())


@pytest.fixture(scope="session")
def clap_checkpoint() -> Path:
    """A random HTSAT-tiny laion-clap checkpoint (and the stand-in HF cache it needs)."""
    return clap_fixture.build_clap_checkpoint(clap_fixture.HF_ROOT / "ckpt" / "clap_tiny_random.pt")


@pytest.fixture(scope="session")
def embedder(clap_checkpoint):
    from zalo_music.metrics.clap import ClapSpec, get_embedder

    return get_embedder(ClapSpec(checkpoint=str(clap_checkpoint), amodel="HTSAT-tiny", device="cpu",
                                 batch_size=2))


def _clips(n: int, seconds: float = 10.0, sr: int = CLAP_SAMPLE_RATE) -> np.ndarray:
    rng = np.random.default_rng(5)
    t = np.arange(int(seconds * sr)) / sr
    return np.stack([0.3 * np.sin(2 * np.pi * (110 * (i + 1)) * t) + 0.05 * rng.normal(size=t.size)
                     for i in range(n)]).astype(np.float32)


def test_clap_score_equals_laion_clap_api(embedder, clap_checkpoint):
    import laion_clap

    texts = ["a calm piano melody", "fast rock with drums and guitar", "a sad violin"]
    clips = _clips(3)
    reference = laion_clap.CLAP_Module(enable_fusion=False, amodel="HTSAT-tiny", device="cpu")
    reference.load_ckpt(str(clap_checkpoint), verbose=False)  # laion-clap's own loader on the same file
    t_ref = reference.get_text_embedding(texts)
    a_ref = reference.get_audio_embedding_from_data(clips)
    expected = (t_ref * a_ref).sum(-1) / np.linalg.norm(t_ref, axis=-1) / np.linalg.norm(a_ref, axis=-1)

    from zalo_music.metrics.clap import clap_cosines

    windows = np.stack([clap_window(c, CLAP_SAMPLE_RATE)[0] for c in clips])
    cos = clap_cosines(embedder.embed_text(texts), embedder.embed_windows(windows))
    np.testing.assert_allclose(cos, expected, atol=1e-5)
    m, _ = scores_from_embeddings(embedder.embed_text(texts), embedder.embed_windows(windows), None,
                                  ClasSettings())
    assert m["clap"] == pytest.approx(float(expected.mean()), abs=1e-5)


def test_clap_handles_odd_audio_and_is_deterministic(embedder):
    sr = 32_000
    base = _clips(1, seconds=15, sr=sr)[0]
    nan = base[: 10 * sr].copy()
    nan[::50] = np.nan
    odd = [base, base[: sr // 4], np.zeros(10 * sr, np.float32), nan]
    windows = np.stack([clap_window(x, sr)[0] for x in odd])
    emb = embedder.embed_windows(windows)
    assert emb.shape == (4, 512) and np.isfinite(emb).all()
    again = embedder.embed_windows(np.stack([clap_window(x, sr)[0] for x in odd]))
    np.testing.assert_allclose(emb, again, atol=1e-6)  # long clip: no random crop
    batched = embedder.embed_windows(windows, batch_size=4)
    np.testing.assert_allclose(emb, batched, atol=1e-5)  # batch size does not change embeddings


def _score_parser() -> argparse.ArgumentParser:
    from zalo_music.metrics.cli import register

    parser = argparse.ArgumentParser(prog="zalo-music")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.mark.slow  # the whole command on real clips (decode, CLAP, FAD + FAD-inf on 512-d embeddings): ~30 s
def test_score_command_writes_report(demo_source, clap_checkpoint, tmp_path, capsys):
    import soundfile as sf

    descriptions = json.loads(demo_source.read_text())
    keys = sorted(descriptions)
    clips = copy_demo_clips(demo_source, tmp_path / "clips", keys[:3])
    ref = copy_demo_clips(demo_source, tmp_path / "ref", keys[3:6])
    (ref / "broken.mp3").write_bytes(b"ID3 not really audio")  # a bad reference clip: left out, listed
    sf.write(clips / "short.mp3", _clips(1, seconds=0.5, sr=16000)[0], 16000, format="MP3")
    sf.write(clips / "silent.mp3", np.zeros(16000 * 10, np.float32), 16000, format="MP3")
    (clips / "corrupt.mp3").write_bytes(b"\xff\xfb" + b"\x00" * 50)  # named by the JSON, undecodable
    copy_demo_clips(demo_source, clips, keys[6:7])  # a clip no id names: an extra file
    zalo = {k: descriptions[k] for k in keys[:3]}
    zalo.update({"short.mp3": "a short clip", "silent.mp3": "nothing at all", "missing.mp3": "not there",
                 "empty.mp3": "  ", "corrupt.mp3": "a corrupt file"})
    (tmp_path / "test.json").write_text(json.dumps(zalo))
    argv = ["score", "--audio-dir", str(clips), "--json", str(tmp_path / "test.json"), "--reference", str(ref),
            "--clap-checkpoint", str(clap_checkpoint), "--clap-model", "HTSAT-tiny", "--device", "cpu",
            "--stats-cache", str(tmp_path / "cache"), "--worst", "2"]
    args = _score_parser().parse_args(argv + ["--fad-inf"])
    assert args.func(args) == 1  # one missing and one undecodable clip: not a complete submission
    captured = capsys.readouterr()
    assert "incomplete submission" in captured.err and "--allow-missing" in captured.err
    report = json.loads((clips / "score.json").read_text())  # the report is written all the same
    assert set(report["items"]) == {*keys[:3], "short.mp3", "silent.mp3"}
    assert report["missing"] == ["missing.mp3"] and report["empty_descriptions"] == ["empty.mp3"]
    assert list(report["failed"]) == ["corrupt.mp3"] and "corrupt.mp3" in report["failed"]["corrupt.mp3"]
    assert report["extra_files"] == [keys[6]]
    assert list(report["reference_skipped"]) == [str(ref / "broken.mp3")]
    assert report["settings"]["reference_n"] == 3  # the broken reference clip is not in the statistics
    c = report["completeness"]
    assert (c["n_expected"], c["n_scored"], c["n_missing"], c["n_failed"], c["complete"]) == (7, 5, 1, 1, False)
    m = report["metrics"]
    assert {"clap", "fad", "fas", "clas", "fad_inf"} <= set(m) and m["n_items"] == 5
    assert m["clap"] == pytest.approx(np.mean([v["clap"] for v in report["items"].values()]))
    assert c["clap_missing_as_zero"] == pytest.approx(m["clap"] * 5 / 7)  # two clips counted as CLAP 0
    assert c["clas_missing_as_zero"] == pytest.approx((c["clap_missing_as_zero"] + m["fas"]) / 2)
    assert m["fas"] == pytest.approx(np.exp(-m["fad"])) and m["clas"] == pytest.approx((m["clap"] + m["fas"]) / 2)
    assert [w["clap"] for w in report["worst"]] == sorted(v["clap"] for v in report["items"].values())[:2]
    assert any("short" in i for i in report["items"]["short.mp3"]["issues"])
    assert "silent" in report["items"]["silent.mp3"]["issues"]
    assert report["settings"]["stats_cache_hit"] is False
    assert any("N=5" in w and "--fad-inf" in w for w in report["warnings"])  # N < 512 named, with the option
    assert "clas" in captured.out and "worst 2 by CLAP" in captured.out and "INCOMPLETE" in captured.out
    assert report["summary"].startswith("score: 5 of 7 clips scored, 1 missing, 1 undecodable")
    assert report["summary"] in captured.out
    args = _score_parser().parse_args(argv + ["--out", str(tmp_path / "again.json"), "--allow-missing"])
    assert args.func(args) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["settings"]["stats_cache_hit"] is True
    assert again["metrics"]["fad"] == pytest.approx(m["fad"])  # same numbers from cached statistics
    assert again["reference_skipped"] == report["reference_skipped"]  # still reported on a cache hit
    missing = _score_parser().parse_args(argv + ["--clap-checkpoint", str(tmp_path / "no.pt")])  # last wins
    assert missing.func(missing) == 2
    assert str(tmp_path / "no.pt") in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- e2e
def _metrics_line(sig: str) -> dict:
    proc = run_dora("info", "-f", sig, "-m")
    m = re.search(r"Metrics\[(\d+)\]: (\{.*\})", proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    return json.loads(m.group(2))


def _folder(argv: list[str]) -> Path:
    from zalo_music.train import main

    return Path(main.dora.dir) / "xps" / main.get_xp(argv).sig


@pytest.mark.e2e
def test_tiny_xp_with_eval_then_eval_only_xp(demo_manifests, clap_checkpoint, tmp_path):
    # A stats cache of its own: other tests score the same reference with the same CLAP (a hit here would
    # depend on the test order).
    clap = [f"zalo.eval.clap_checkpoint={clap_checkpoint}", "zalo.eval.clap_model=HTSAT-tiny",
            f"zalo.eval.stats_cache={tmp_path / 'fad_stats'}"]
    # best_metric=clas: the evaluate stage scores the current weights and picks the best state by CLAS
    argv = ["solver=zalo/tiny", "zalo.eval.clas=true", *TINY_ARGV[1:], "optim.epochs=1", "optim.updates_per_epoch=2", *clap,
            "zalo.eval.best_metric=clas"]
    proc = run_dora("run", *argv)
    assert "New best state with clas=" in proc.stdout + proc.stderr
    folder = _folder(argv)
    history = json.loads((folder / "history.json").read_text())
    ev = history[-1]["evaluate"]
    assert {"clap", "fad", "fas", "clas"} <= set(ev)
    assert -1 <= ev["clap"] <= 1 and ev["fad"] >= 0 and 0 < ev["fas"] <= 1
    assert ev["clas"] == pytest.approx((ev["clap"] + ev["fas"]) / 2)
    assert "stats cache miss" in proc.stdout + proc.stderr

    # Eval-only XP on that training signature: same weights, same seed, same scores; reference stats cached.
    eval_argv = ["solver=zalo/tiny", "zalo.eval.clas=true", *TINY_ARGV[1:], *clap, f"continue_from=//sig/{folder.name}",
                 "execute_only=evaluate"]
    proc = run_dora("run", *eval_argv)
    assert "stats cache hit" in proc.stdout + proc.stderr
    eval_folder = _folder(eval_argv)
    assert eval_folder != folder
    ev2 = json.loads((eval_folder / "history.json").read_text())[-1]["evaluate"]
    # `dora info -m` prints that history (it reads a training XP's the same way: one child process checks it)
    shown = _metrics_line(eval_folder.name)["evaluate"]
    for key in ("clap", "fad", "fas", "clas"):
        assert ev2[key] == pytest.approx(ev[key], rel=1e-5, abs=1e-6)
        assert shown[key] == pytest.approx(ev2[key], rel=1e-6)


@pytest.mark.e2e
def test_missing_clap_checkpoint_fails_evaluate_but_keeps_training_state(demo_manifests, tmp_path):
    missing = tmp_path / "no_such_clap.pt"
    argv = ["solver=zalo/tiny", "zalo.eval.clas=true", *TINY_ARGV[1:], "optim.epochs=1", "optim.updates_per_epoch=1",
            f"zalo.eval.clap_checkpoint={missing}", "zalo.eval.clap_model=HTSAT-tiny"]
    proc = run_dora("run", *argv, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "MetricUnavailableError" in out and str(missing) in out
    folder = _folder(argv)
    assert (folder / "checkpoint.th").is_file()  # the epoch was committed before the error surfaced
    history = json.loads((folder / "history.json").read_text())
    assert len(history) == 1 and "train" in history[0] and "evaluate" not in history[0]


@pytest.mark.e2e
def test_eval_grid_lists_one_eval_xp_per_training_xp_plus_baseline():
    from grids.zalo_eval_lr_epochs import EVAL, training_signature
    from grids.zalo_ft_lr_epochs import BASE, sweep
    from zalo_music.train import main

    def argv(overrides: dict) -> list[str]:
        return [f"{k}={v}" for k, v in overrides.items()]

    expected = {main.get_xp(argv({**BASE, **EVAL, **o, "continue_from": f"//sig/{training_signature(o)}"})).sig
                for o in sweep()}
    baseline = main.get_xp(argv({**BASE, **EVAL})).sig
    assert len(expected) == len(sweep()) >= 6 and baseline not in expected
    proc = run_dora("grid", "zalo_eval_lr_epochs", "--dry_run", "--init")
    out = proc.stdout + proc.stderr
    listed = set(re.findall(r"\b([0-9a-f]{8})\b", out))
    assert expected | {baseline} <= listed, out
    for o in sweep():  # each eval XP names the training XP it scores
        assert f"//sig/{training_signature(o)}" in out
    assert "clas" in out  # explorer column
