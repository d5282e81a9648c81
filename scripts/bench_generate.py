"""Benchmark: batched vs one-at-a-time generation, side by side in one run.

    .venv/bin/python scripts/bench_generate.py [--n 64] [--batch 16] [--device cpu] [--model tiny|small]

`tiny` is the solver=zalo/tiny LM (xsmall, random weights) on audiocraft's debug codec; `small` is a
musicgen-small-shaped LM (random weights, offline conditioner) for GPU measurements. Both phases generate the
same descriptions for the same duration; the ratio is throughput(batched) / throughput(one at a time).

Two measurements, each one-at-a-time then batched in the same process:
- `model`: `zalo_music.generate.generate_batch` only (LM tokens + codec decode), waveforms kept in memory;
- `end_to_end`: `zalo_music.generate.generate`, i.e. what `zalo-music generate` does, MP3s written to a
  temporary folder (post-processing and MP3 encoding included).
Plus `decode`: the codec alone on `--batch` clips of random tokens, as one batched call, one clip after
the other, and one clip per core (what `generate_batch` does on CPU); and `write`: `clips.write_clip` (post-process,
LAME, read-back check) of `--batch` noise clips, ms per clip on one core and clips/s one per core (the CPU work
that `generate` overlaps with the next LM pass on a GPU).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def build_model(kind: str, device: str):
    from audiocraft.models import MusicGen
    from audiocraft.models.builders import get_lm_model

    from zalo_music import debug_codec
    from zalo_music.patches import allow_short_segment_musicgen
    from zalo_music.train import main

    allow_short_segment_musicgen()
    argv = ["solver=zalo/tiny"] if kind == "tiny" else [
        "solver=zalo/tiny", "model/lm/model_scale=small", "transformer_lm.card=400"]
    cfg = main.get_xp(argv).cfg
    cfg.device = device
    lm = get_lm_model(cfg).to(device).eval()
    codec = debug_codec.load(device=device)
    return MusicGen(f"bench-{kind}", codec, lm, max_duration=10.0)


def run_model(model, texts: list[str], batch: int, duration: float) -> float:
    from zalo_music.generate import generate_batch

    model.set_generation_params(duration=duration, top_k=250)
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        torch.manual_seed(i)
        with torch.inference_mode():
            generate_batch(model, texts[i:i + batch])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run_end_to_end(model, texts: list[str], batch: int, duration: float, device: str) -> float:
    from zalo_music.generate import GenerationConfig, generate

    with tempfile.TemporaryDirectory() as tmp:
        js = Path(tmp) / "texts.json"
        js.write_text(json.dumps({f"{i:04d}.mp3": t for i, t in enumerate(texts)}))
        start = time.perf_counter()
        summary = generate("bench", js, Path(tmp) / "out", GenerationConfig(duration=duration, batch_size=batch),
                           device=device, model=model, quiet=True)
        seconds = time.perf_counter() - start
        assert summary["written"] == len(texts), summary
    return seconds


def time_decode(model, batch: int, duration: float) -> dict:
    from zalo_music.generate import _cpu_pool, _decode_one

    codec = model.compression_model
    frames = int(duration * codec.frame_rate)
    tokens = torch.randint(0, codec.cardinality, (batch, codec.num_codebooks, frames), device=model.device)
    pool = _cpu_pool(torch.get_num_threads())
    ways = {"one_call_s": lambda: model.generate_audio(tokens),
            "one_by_one_s": lambda: [model.generate_audio(t) for t in tokens.split(1)],
            "one_per_core_s": lambda: list(pool.map(_decode_one, [model] * batch, tokens.split(1)))}
    result = {}
    for name, fn in ways.items():
        fn()  # warm-up
        start = time.perf_counter()
        fn()
        result[name] = round(time.perf_counter() - start, 3)
    return result


def time_write(model, batch: int, duration: float) -> dict:
    from zalo_music import clips
    from zalo_music.decoding import GenerationConfig
    from zalo_music.generate import _cpu_pool

    gen = GenerationConfig(duration=duration, sample_rate=model.sample_rate)
    wavs = 0.1 * torch.randn(batch, 1, int(duration * model.sample_rate), generator=torch.Generator().manual_seed(0))
    folder = Path(tempfile.mkdtemp(prefix="zalo-bench-write-"))
    pool = _cpu_pool(torch.get_num_threads())

    def write(tag: str, i: int) -> bool:
        return clips.write_clip(folder / f"{tag}{i}.mp3", wavs[i], model.sample_rate, gen)

    write("warm", 0)
    start = time.perf_counter()
    with torch.inference_mode():
        torch.set_num_threads(1)  # one core, as each of `generate`'s writers runs
        try:
            for i in range(batch):
                write("serial", i)
        finally:
            torch.set_num_threads(pool._max_workers)
        one = time.perf_counter() - start
        start = time.perf_counter()
        list(pool.map(lambda i: write("pool", i), range(batch)))
        per_core = time.perf_counter() - start
    return {"ms_per_clip_one_core": round(1000 * one / batch, 1),
            "clips_per_s_one_per_core": round(batch / per_core, 2), "cores": pool._max_workers}


def main() -> None:
    from zalo_music.runtime import prepare

    prepare()  # entry point: audiocraft's environment and zalo_music's patches before audiocraft is imported
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__)
    p.add_argument("--n", type=int, default=64, help="descriptions")
    p.add_argument("--batch", type=int, default=16, help="batch size of the batched phase")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per clip")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--model", choices=["tiny", "small"], default="tiny", help="LM shape")
    args = p.parse_args()

    from zalo_music.data.demo import make_specs

    texts = [s.description for s in make_specs(args.n, seed=11)]
    model = build_model(args.model, args.device)
    run_model(model, texts[:2], 2, 1.0)  # warm-up
    audio = args.n * args.duration
    result = {"model": args.model, "device": args.device, "n": args.n, "batch": args.batch,
              "duration": args.duration, "threads": torch.get_num_threads()}
    for name, fn in (("model", lambda b: run_model(model, texts, b, args.duration)),
                     ("end_to_end", lambda b: run_end_to_end(model, texts, b, args.duration, args.device))):
        t_one, t_batch = fn(1), fn(args.batch)
        result[name] = {"one_at_a_time_s": round(t_one, 2), "batched_s": round(t_batch, 2),
                        "speedup": round(t_one / t_batch, 2),
                        "rtf_batch1": round(t_one / audio, 4), "rtf_batched": round(t_batch / audio, 4)}
    result["decode"] = time_decode(model, args.batch, args.duration)
    result["write"] = time_write(model, args.batch, args.duration)
    print(json.dumps(result))
    print(f"decode of {args.batch} clips: {result['decode']}")
    print(f"MP3 writes of {args.batch} {args.duration:g}-s clips: {result['write']}")
    for name in ("model", "end_to_end"):
        r = result[name]
        print(f"{name}: batched x{args.batch} is {r['speedup']}x one-at-a-time "
              f"(RTF {r['rtf_batch1']} -> {r['rtf_batched']}) on {args.device}")


if __name__ == "__main__":
    main()
