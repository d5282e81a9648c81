"""Benchmark `zalo-music score`: batched vs one-clip-at-a-time CLAP embedding, cached vs recomputed FAD stats,
the content hashing of a reference set, and the memory of scoring a very long clip.

    .venv/bin/python scripts/bench_score.py --n 1000 --n-single 100 --n-ref 200 --standin
    .venv/bin/python scripts/bench_score.py --hash-only --hash-files 10000 --hash-kb 160
    .venv/bin/python scripts/bench_score.py --long-only --long-hours 3
    .venv/bin/python scripts/bench_score.py --rate-only --standin --clap-model HTSAT-base --n 16

Synthetic clips (short decaying tones + noise, 16 kHz MP3) named like Zalo ids; every clip becomes one
deterministic 10-s 48 kHz CLAP window whatever its length, so the per-clip CLAP cost does not depend on it.
`--standin` uses a random HTSAT-tiny CLAP and the tiny stand-in Hugging Face cache of the tests (offline
machines); otherwise `--clap-checkpoint` / `--clap-model` pick a real one. One-at-a-time throughput is measured
on the first `--n-single` clips (the rate, not the total, is compared).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _write_clips(folder: Path, n: int, seconds: float, seed: int) -> dict[str, str]:
    """16 kHz clips with Zalo-style ids (`benchkit.synthetic_clips`)."""
    import benchkit

    return benchkit.synthetic_clips(folder, n, seconds, seed, sample_rate=16_000,
                                    key=lambda i: f"{1_700_000_000 + i}.0000000.mp3")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one JSON line of figures.

    Args:
        argv: command-line arguments (default: sys.argv).
    """
    from zalo_music.runtime import prepare

    prepare()  # entry point: audiocraft's environment and zalo_music's patches before audiocraft is imported
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="clips scored batched")
    p.add_argument("--n-single", type=int, default=100, help="clips scored one at a time (rate measured)")
    p.add_argument("--n-ref", type=int, default=200, help="reference clips (FAD statistics)")
    p.add_argument("--seconds", type=float, default=1.0, help="length of each synthetic clip")
    p.add_argument("--batch", type=int, default=4,
                   help="CLAP batch size of the batched run (4 is best on a 2-core CPU; larger on a GPU)")
    p.add_argument("--standin", action="store_true", help="random HTSAT-tiny CLAP + stand-in HF cache (offline)")
    p.add_argument("--clap-checkpoint", default=None, help="real laion-clap checkpoint (without --standin)")
    p.add_argument("--clap-model", default="HTSAT-base", help="audio tower of --clap-checkpoint")
    p.add_argument("--hash-only", action="store_true", help="only measure reference content hashing")
    p.add_argument("--hash-files", type=int, default=10_000, help="files hashed by --hash-only")
    p.add_argument("--hash-kb", type=int, default=160, help="size of each hashed file (a 10-s 128 kbps MP3)")
    p.add_argument("--long-only", action="store_true", help="only measure peak RSS of one very long clip")
    p.add_argument("--long-hours", type=float, default=3.0, help="length of the long clip (16 kHz mono MP3)")
    p.add_argument("--rate-only", action="store_true",
                   help="only measure CLAP audio embedding throughput on --n 10-s clips (with --standin: a random "
                        "checkpoint of --clap-model, HTSAT-base being the music checkpoint's tower)")
    args = p.parse_args(argv)
    if args.hash_only:
        print(json.dumps(bench_hashing(args.hash_files, args.hash_kb)))
        return 0
    if args.long_only:
        print(json.dumps(bench_long_clip(args.long_hours)))
        return 0

    ckpt, model = args.clap_checkpoint, args.clap_model
    if args.standin:
        from tests.helpers import clap_fixture  # sets HF_HOME before transformers is imported

        model = args.clap_model if args.rate_only else "HTSAT-tiny"
        ckpt = str(clap_fixture.build_clap_checkpoint(clap_fixture.HF_ROOT / f"clap_{model}_random.pt",
                                                      amodel=model))
    if args.rate_only:
        print(json.dumps(bench_rate(ckpt, model, args.n, args.batch)))
        return 0
    import numpy as np

    from zalo_music.metrics.clap import ClapSpec, get_embedder
    from zalo_music.metrics.evaluator import ClasSettings, embed_files
    from zalo_music.metrics.reference import reference_stats
    from zalo_music.metrics.score import score_folder

    root = Path(tempfile.mkdtemp(prefix="zalo-bench-score-"))
    zalo = _write_clips(root / "clips", args.n, args.seconds, seed=0)
    _write_clips(root / "ref", args.n_ref, args.seconds, seed=1)
    (root / "all.json").write_text(json.dumps(zalo))
    (root / "single.json").write_text(json.dumps(dict(list(sorted(zalo.items()))[: args.n_single])))

    def settings(batch: int) -> ClasSettings:
        return ClasSettings(clap=ClapSpec(checkpoint=ckpt, amodel=model, batch_size=batch, download=False),
                            stats_cache=str(root / "cache"))

    embedder = get_embedder(settings(args.batch).clap)  # load CLAP once, outside the timings
    embed_files(embedder, sorted((root / "ref").iterdir())[:4])  # warm-up forward pass
    t = time.perf_counter()
    batched = score_folder(root / "clips", root / "all.json", reference=root / "ref",
                           settings=settings(args.batch))  # fills the reference cache
    batched_total = time.perf_counter() - t
    single = score_folder(root / "clips", root / "single.json", settings=settings(1))

    def ref(cache: str | None):
        t0 = time.perf_counter()
        def embed(files):
            emb, _, failed = embed_files(embedder, files)
            return emb, failed

        stats, hit, _ = reference_stats(root / "ref", embed, embedder.identity, cache)
        return stats, hit, time.perf_counter() - t0

    fresh, _, recomputed_s = ref(None)
    cached, hit, cached_s = ref(str(root / "cache"))
    batched_rate = batched["timing"]["clips_per_s"]
    single_rate = single["timing"]["clips_per_s"]
    figures = {
        "n": args.n, "n_single": args.n_single, "n_ref": args.n_ref, "batch": args.batch,
        "batched_clips_per_s": round(batched_rate, 2),
        "one_at_a_time_clips_per_s": round(single_rate, 2),
        "batched_speedup": round(batched_rate / single_rate, 2),
        "ref_stats_recomputed_s": round(recomputed_s, 2),
        "ref_stats_cached_s": round(cached_s, 4),
        "ref_cache_speedup": round(recomputed_s / max(cached_s, 1e-6), 1),
        "cache_hit": hit,
        "cached_equals_recomputed": bool(np.allclose(fresh.mu, cached.mu) and np.allclose(fresh.sigma, cached.sigma)),
        "score_total_s": round(batched_total, 1),
        "metrics": {k: round(v, 4) for k, v in batched["metrics"].items()},
    }
    print(json.dumps(figures))
    return 0


def bench_rate(ckpt: str, model: str, n: int, batch: int) -> dict:
    """CLAP audio embedding throughput (decode + window + forward) on `n` synthetic 10-s clips."""
    from zalo_music.metrics.clap import ClapSpec, get_embedder
    from zalo_music.metrics.evaluator import embed_files

    root = Path(tempfile.mkdtemp(prefix="zalo-bench-rate-"))
    try:
        _write_clips(root, n, 10.0, seed=2)
        files = sorted(root.iterdir())
        embedder = get_embedder(ClapSpec(checkpoint=ckpt, amodel=model, batch_size=batch, download=False))
        embed_files(embedder, files[:batch])  # warm-up
        t = time.perf_counter()
        embed_files(embedder, files)
        dt = time.perf_counter() - t
    finally:
        shutil.rmtree(root)
    return {"model": model, "n": n, "batch": batch, "s_per_clip": round(dt / n, 3),
            "hours_for_10000": round(dt / n * 10_000 / 3600, 2)}


def bench_hashing(n: int, kb: int) -> dict:
    """Time the reference cache key (sha256 of every file's bytes) on `n` files of `kb` KiB.

    Files are random bytes (hashing cost does not depend on content). "warm": just written, in the page cache,
    the usual case for a reference read every evaluation; cold-cache reads add the disk's read time.
    """
    import os

    from zalo_music.metrics.reference import reference_files

    root = Path(tempfile.mkdtemp(prefix="zalo-bench-hash-"))
    folder = root / "ref"
    folder.mkdir()
    rng = os.urandom
    for i in range(n):
        (folder / f"{i:06d}.mp3").write_bytes(rng(kb * 1024))
    try:
        t = time.perf_counter()
        files, _ = reference_files(folder)
        warm = time.perf_counter() - t
    finally:
        shutil.rmtree(root)
    return {"files": len(files), "kb_each": kb, "total_mb": round(n * kb / 1024, 1), "hash_s_warm": round(warm, 2),
            "mb_per_s": round(n * kb / 1024 / warm, 1)}


def bench_long_clip(hours: float) -> dict:
    """Peak RSS of taking the CLAP window of one `hours`-long 16 kHz mono MP3, vs a 10-s clip, in fresh processes."""
    import subprocess

    import numpy as np
    import soundfile as sf

    root = Path(tempfile.mkdtemp(prefix="zalo-bench-long-"))
    sr = 16_000
    minute = (0.3 * np.sin(2 * np.pi * 440 * np.arange(60 * sr) / sr)).astype(np.float32)
    long_path, short_path = root / "long.mp3", root / "short.mp3"
    t = time.perf_counter()
    with sf.SoundFile(long_path, "w", samplerate=sr, channels=1, format="MP3") as f:
        for _ in range(int(round(hours * 60))):
            f.write(minute)
    write_s = time.perf_counter() - t
    sf.write(short_path, minute[: 10 * sr], sr, format="MP3")
    code = ("import resource, sys, time; from zalo_music.metrics.audio import load_clip_window; t = time.perf_counter(); "
            "w, info = load_clip_window(sys.argv[1]); dt = time.perf_counter() - t; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, round(dt, 3), round(info.duration))")

    def run(path: Path) -> list[str]:
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent.parent)
        return out.stdout.split()

    try:
        long_rss, long_s, long_dur = run(long_path)
        short_rss, short_s, _ = run(short_path)
        size_mb = round(long_path.stat().st_size / 2**20, 1)
    finally:
        shutil.rmtree(root)
    return {"hours": hours, "file_mb": size_mb, "write_s": round(write_s, 1),
            "duration_s": int(long_dur), "peak_rss_mb_long": int(long_rss), "peak_rss_mb_10s": int(short_rss),
            "window_s_long": float(long_s), "window_s_10s": float(short_s)}


if __name__ == "__main__":
    sys.exit(main())
