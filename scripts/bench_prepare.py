"""Benchmark: `zalo-music prepare` vs a naive sequential baseline vs plain ffmpeg, side by side in one run.

    .venv/bin/python scripts/bench_prepare.py [--clips 500] [--workers 2]

Inputs: synthetic 10-s 16 kHz mono MP3 clips (the demo renderer; unique clips copied under distinct ids).
- prepare: the real command (decode, resample to 32 kHz, FLAC + sidecar, manifests), `--workers` processes.
- baseline: what the original seed scripts did, one file at a time with audiocraft's own I/O: `audio_read`
  (PyAV), `convert_audio` (julius resampling, mono), `audio_write` (WAV through the ffmpeg binary).
- librosa: the fastest naive sequential loop we know: librosa.load(sr=32000, soxr) + soundfile WAV write.
- ffmpeg: `ffmpeg -i clip.mp3 -ac 1 -ar 32000 clip.flac`, `--workers` processes at once: the practical limit.
Peak RSS of prepare is measured in a child process at half and full size, to show it does not grow with N.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PREPARE_CHILD = """
import json, resource, sys, time
from zalo_music.data.prepare import prepare
t = time.perf_counter()
r = prepare(sys.argv[1], sys.argv[2], sys.argv[3], workers=int(sys.argv[4]), data_dir=sys.argv[5],
            manifest_dir=sys.argv[6], quiet=True)
dt = time.perf_counter() - t
self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": dt, "prepared": r["prepared"], "rss_mb": max(self_kb, kids_kb) / 1024}))
"""


def make_clips(folder: Path, n: int, unique: int = 100) -> Path:
    import soundfile as sf

    from zalo_music.data.demo import SAMPLE_RATE, make_specs, render

    folder.mkdir(parents=True, exist_ok=True)
    specs = make_specs(unique, seed=42)
    descriptions = {}
    for i in range(n):
        spec = specs[i % unique]
        key = f"{1690000000 + i}.{i:07d}.mp3"
        src = folder / f"_u{i % unique}.mp3"
        if i < unique:
            sf.write(str(src), render(spec), SAMPLE_RATE, format="MP3")
        shutil.copy(src, folder / key)
        descriptions[key] = spec.description
    for i in range(unique):
        (folder / f"_u{i}.mp3").unlink()
    js = folder.parent / f"{folder.name}.json"
    js.write_text(json.dumps(descriptions))
    return js


def run_prepare(js: Path, audio: Path, work: Path, workers: int, tag: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PREPARE_CHILD, str(js), str(audio), tag, str(workers),
                          str(work / f"data-{tag}"), str(work / f"manifests-{tag}")],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline(files: list[Path], out: Path) -> float:
    from audiocraft.data.audio import audio_read, audio_write
    from audiocraft.data.audio_utils import convert_audio

    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for f in files:
        wav, sr = audio_read(f)
        wav = convert_audio(wav, sr, 32000, 1)
        audio_write(out / f.stem, wav, 32000, format="wav", strategy="clip")
    return time.perf_counter() - t


def librosa_loop(files: list[Path], out: Path) -> float:
    import librosa
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for f in files:
        y, sr = librosa.load(str(f), sr=32000, mono=True)
        sf.write(str(out / (f.stem + ".wav")), y, sr)
    return time.perf_counter() - t


def ffmpeg(files: list[Path], out: Path, workers: int) -> float:
    out.mkdir(parents=True, exist_ok=True)

    def one(f: Path) -> None:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(f), "-ac", "1", "-ar", "32000",
                        "-c:a", "flac", str(out / (f.stem + ".flac"))], check=True)

    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, files))
    return time.perf_counter() - t


def main() -> None:
    from zalo_music.runtime import prepare

    prepare()  # entry point: audiocraft's environment and zalo_music's patches before audiocraft is imported
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__)
    p.add_argument("--clips", type=int, default=500, help="number of input clips (>= 500 for the figures)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for prepare and ffmpeg")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        half = make_clips(work / "half", args.clips // 2)
        full = make_clips(work / "full", args.clips)
        files = sorted((work / "full").glob("*.mp3"))
        r_half = run_prepare(half, work / "half", work, args.workers, "half")
        r_full = run_prepare(full, work / "full", work, args.workers, "full")
        t_base = baseline(files, work / "baseline")
        t_lib = librosa_loop(files, work / "librosa")
        t_ff = ffmpeg(files, work / "ffmpeg", args.workers)
        n = len(files)
        res = {
            "clips": n, "workers": args.workers,
            "prepare_clips_s": round(n / r_full["seconds"], 1),
            "baseline_clips_s": round(n / t_base, 1), "librosa_clips_s": round(n / t_lib, 1),
            "ffmpeg_clips_s": round(n / t_ff, 1),
            "prepare_vs_baseline": round(t_base / r_full["seconds"], 2),
            "prepare_vs_librosa": round(t_lib / r_full["seconds"], 2),
            "ffmpeg_vs_prepare": round(r_full["seconds"] / t_ff, 2),
            "peak_rss_mb_half": round(r_half["rss_mb"], 1), "peak_rss_mb_full": round(r_full["rss_mb"], 1),
            "self_maxrss_mb_bench": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        print(json.dumps(res))
        print(f"prepare {res['prepare_clips_s']} clips/s = {res['prepare_vs_baseline']}x the sequential baseline "
              f"({res['baseline_clips_s']} clips/s), {res['prepare_vs_librosa']}x librosa "
              f"({res['librosa_clips_s']} clips/s); ffmpeg per file {res['ffmpeg_clips_s']} clips/s "
              f"({res['ffmpeg_vs_prepare']}x prepare); peak RSS {res['peak_rss_mb_half']} MB at {n // 2} clips, "
              f"{res['peak_rss_mb_full']} MB at {n}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
