"""Benchmark: long recordings as consecutive windows vs as full-length files with random crops, side by side.

    .venv/bin/python scripts/bench_long_recordings.py [--recordings 24] [--seconds 60] [--steps 100] [--seeds 0,1]

Inputs: `--recordings` demo recordings of `--seconds` each (the demo renderer at full length, 16 kHz MP3, the
description of each its own). Two ways to feed them to audiocraft, both through the real `prepare`:
- windows: `prepare --clip-seconds 10` (what zalo-music does): every recording cut into 10-s windows; the
  tiny recipe trains on whole windows (segment 10 s = clip).
- full: `prepare --clip-seconds SECONDS`: one full-length file per recording in the manifest; audiocraft's
  `MusicDataset` samples a random 10-s crop of a random file per item (`dataset.segment_duration=10`).
Measured: prepare time, files and bytes on disk; valid ce of `solver=zalo/tiny` after the same number of
optimizer steps on the same data, both scored on the same held-out windows (the windows' valid split: the
split is by description, so it holds the same recordings in both layouts), over `--seeds`; and the token
cache: the fraction of the debug codec's first-codebook codes of a 10-s crop that differ from the same frames
cut out of the full recording's codes (what a cache of full-length recordings would train on instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def render(out: Path, n: int, seconds: float) -> Path:
    """`n` demo recordings `seconds` long as 16 kHz MP3 + their Zalo JSON."""
    import soundfile as sf

    from zalo_music.data.demo import SAMPLE_RATE, make_specs
    from zalo_music.data.demo import render as render_clip

    audio = out / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    specs = make_specs(n, seed=3)
    for s in specs:
        sf.write(str(audio / s.key_id), render_clip(s, duration=seconds), SAMPLE_RATE, format="MP3")
    js = out / "long.json"
    js.write_text(json.dumps({s.key_id: s.description for s in specs}))
    return js


def disk(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*.flac")]
    return len(files), sum(p.stat().st_size for p in files)


def train(name: str, seconds: float, steps: int, seed: int, valid_manifest: Path, valid_n: int,
          full: bool) -> float:
    """Last valid ce of a tiny XP trained `steps` optimizer steps on dataset `name`."""
    from zalo_music.procutil import run_dora

    epochs = 4
    per_epoch = steps // epochs
    argv = ["solver=zalo/tiny", "dset=zalo/prepared", f"zalo.dataset={name}", f"seed={seed}",
            f"optim.epochs={epochs}", f"optim.updates_per_epoch={per_epoch}",
            f"dataset.train.num_samples={per_epoch * 8}", f"dataset.valid.num_samples={valid_n}",
            f"datasource.valid={valid_manifest}", "evaluate.every=1000", "generate.every=1000"]
    if full:
        argv += [f"zalo.clip_duration={seconds}", "dataset.segment_duration=10.0"]
    run_dora("run", *argv, capture=True)
    from zalo_music.quickstart import xp_signature

    _, folder, _ = xp_signature(argv)
    history = json.loads((folder / "history.json").read_text())
    return float(history[-1]["valid"]["ce"])


def crop_mismatch(full_files: list[str], seconds: float) -> float:
    """Share of first-codebook codes that differ between encoding a 10-s crop and cropping the codes of the
    full recording (the tiny recipe's debug codec), over crops at 10-s offsets."""
    import soundfile as sf
    import torch

    from zalo_music import debug_codec

    codec = debug_codec.load()
    frame_rate = int(codec.frame_rate)
    differ = total = 0
    with torch.no_grad():
        for path in full_files:
            wav, sr = sf.read(path, dtype="float32")
            full = codec.encode(torch.from_numpy(wav)[None, None])[0][0, 0]
            for start in range(0, int(seconds) - 10 + 1, 10):
                crop = codec.encode(torch.from_numpy(wav[start * sr:(start + 10) * sr])[None, None])[0][0, 0]
                ref = full[start * frame_rate:(start + 10) * frame_rate]
                differ += int((crop != ref).sum())
                total += ref.numel()
    return differ / total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recordings", type=int, default=24)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-train", action="store_true", help="measure prepare, disk and the token cache only")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-long-"))
    os.environ.update({"ZALO_MUSIC_DORA_DIR": str(work / "outputs"), "AUDIOCRAFT_DORA_DIR": str(work / "outputs"),
                       "ZALO_MUSIC_DATA_DIR": str(work / "data"), "ZALO_MUSIC_MANIFEST_DIR": str(work / "m"),
                       "HF_HUB_OFFLINE": "1"})
    from zalo_music.runtime import prepare as prepare_runtime

    prepare_runtime()
    from zalo_music.data.manifest import read_manifest, write_manifest
    from zalo_music.data.prepare import prepare

    js = render(work / "src", args.recordings, args.seconds)
    out: dict = {"recordings": args.recordings, "seconds": args.seconds, "steps": args.steps}
    for layout, clip in (("windows", 10.0), ("full", args.seconds)):
        t = time.perf_counter()
        r = prepare(js, work / "src" / "audio", f"lr-{layout}", clip_seconds=clip, workers=args.workers,
                    quiet=True)
        files, size = disk(work / "data" / f"lr-{layout}")
        out[layout] = {"prepare_s": round(time.perf_counter() - t, 2), "files": files, "mb": round(size / 2**20, 2),
                       "train_rows": r["splits"]["train"], "valid_rows": r["splits"]["valid"]}
    valid = work / "m" / "lr-windows" / "valid"
    valid_n = len(read_manifest(valid))
    # the same recordings held out in both: the minimum valid size counts rows (windows vs files), so the two
    # splits can differ; the full layout trains on every recording the windows' valid split does not hold
    win_valid = {Path(row["path"]).parent.name.removesuffix(".segments") for row in read_manifest(valid)}
    full_rows = read_manifest(work / "m" / "lr-full" / "train") + read_manifest(work / "m" / "lr-full" / "valid")
    write_manifest(work / "m" / "lr-full" / "train", [r for r in full_rows if Path(r["path"]).stem not in win_valid])
    out["held_out_recordings"] = len(win_valid)
    for layout in ("windows", "full") if not args.no_train else ():
        ces = [train(f"lr-{layout}", args.seconds, args.steps, int(s), valid, valid_n, layout == "full")
               for s in args.seeds.split(",")]
        out[layout]["valid_ce"] = [round(c, 4) for c in ces]
        out[layout]["valid_ce_mean"] = round(sum(ces) / len(ces), 4)
    full_files = [row["path"] for row in read_manifest(work / "m" / "lr-full" / "train")][:8]
    out["full"]["token_cache_crop_mismatch"] = round(crop_mismatch(full_files, args.seconds), 4)
    out["windows"]["token_cache_crop_mismatch"] = 0.0  # each window is encoded as it is trained on
    print(json.dumps(out, indent=1))
    w, f = out["windows"], out["full"]
    print(f"windows vs full-length, {args.recordings} x {args.seconds:g}s, {args.steps} steps: "
          f"prepare {w['prepare_s']}s vs {f['prepare_s']}s, disk {w['mb']} vs {f['mb']} MB, "
          f"valid ce {w.get('valid_ce_mean')} vs {f.get('valid_ce_mean')}, token-cache crop mismatch 0 vs "
          f"{f['token_cache_crop_mismatch']:.1%} (work folder {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
