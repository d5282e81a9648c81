"""Decoding speed, side by side in one run: the fast decoder (and its CUDA-graph step) vs audiocraft's loop.

One `MusicGen` (musicgen-small loaded by name: the full-shape stand-ins of `zalo-music standins`, or the real
model where the hub is reachable), the same descriptions of a Zalo JSON, the same seed and sampling (top-k 250,
CFG 3). Per batch size, each decoder in turn (`--decoders`):

- `audiocraft`: audiocraft's `LMModel.generate` under the model's autocast, then the EnCodec decode.
- `fast`: `fast_decoder.generate_tokens` on the same attributes, then the same `generate_audio` decode.
- `graph`: the same with `graphs=True` (`graph_decoder`: static-shape step, one CUDA graph per window on a GPU).
- `transformers`: transformers' `MusicgenForConditionalGeneration.generate` (its T5, LM loop and EnCodec) on the
  same weights, exported with `zalo-music export --format transformers`'s code (bfloat16 on a GPU, float32 on a
  CPU). Its steps are clocked by a streamer, whose per-step copy of the new tokens to the host is in its figure;
  its sampler draws other codes from the same seed, so `same codes` does not apply.

Every column times the same three stages (T5 + LM loop + codec decode). `loop ms/step` is the decoding loop
alone, from the first step's end to the last step's end (each loop's progress callback), less the graphs'
capture (`capture s`, reported apart), so neither T5 nor the setup is in it; `same codes` compares a path's codes
with audiocraft's for the same seed. Batch 1 takes the description of median T5 length; a larger batch takes
consecutive descriptions in T5-length order around the median, as `generate --batch-order length` batches them
(`--order id`: the first ids, as earlier releases batched).

    .venv/bin/python scripts/bench_decoder.py --standins /tmp/standins --json /tmp/decoder.json
    .venv/bin/python scripts/bench_decoder.py --batches 1:4.0,16:0.6   # batch:seconds of audio
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = PROJECT.parent / "shared" / "data" / "zalo2023" / "public_test.json"


def _texts(path: Path) -> list[str]:
    if path.is_file():
        items = json.loads(path.read_text())
        return [items[k] for k in sorted(items)]
    from zalo_music.data.demo import make_specs  # no competition data here: the demo's descriptions

    return [s.description for s in make_specs(64, seed=11)]


def _x(figures: dict, key: str) -> str:
    """A speedup cell: `2.5x`, or empty where there is no audiocraft column to divide by (or for audiocraft)."""
    return f"{figures[key]}x" if key in figures else ""


def _clock(marks: list[float]):
    def callback(done: int, total: int) -> None:
        marks.append(time.perf_counter())

    return callback


def transformers_model(device: str):
    """musicgen-small as transformers' `MusicgenForConditionalGeneration` (exported from the same audiocraft
    folder by `zalo_music.transformers_export`) and its processor.

    Args:
        device: torch device (bfloat16 weights on CUDA, float32 elsewhere).
    """
    import tempfile

    import torch
    from huggingface_hub import snapshot_download
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    from zalo_music.transformers_export import export_transformers

    source = Path(snapshot_download("facebook/musicgen-small", allow_patterns=["*.bin", "*.json"]))
    out = Path(tempfile.mkdtemp(prefix="zalo-bench-decoder-")) / "musicgen-small-transformers"
    export_transformers(source, out)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    hf = MusicgenForConditionalGeneration.from_pretrained(out, dtype=dtype).to(device).eval()
    return hf, AutoProcessor.from_pretrained(out)


def measure_transformers(hf, texts: list[str], duration: float, seed: int, frames_per_s: float) -> dict:
    """transformers' `generate` on one batch (top-k 250, CFG 3), its steps clocked by a streamer."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    model, processor = hf
    marks: list[float] = []

    class Clock(BaseStreamer):
        def put(self, value) -> None:  # the prompt once, then each step's new tokens
            marks.append(time.perf_counter())

        def end(self) -> None:
            pass

    n_q = model.decoder.config.num_codebooks
    frames = int(duration * frames_per_s)
    t0 = time.perf_counter()
    inputs = processor(text=texts, padding=True, return_tensors="pt").to(model.device)
    torch.manual_seed(seed)
    with torch.inference_mode():
        model.generate(**inputs, do_sample=True, top_k=250, guidance_scale=3.0, max_length=1 + frames + n_q - 1,
                       streamer=Clock())
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    steps = len(marks) - 1
    return {"total_s": round(total, 2), "steps": steps, "first_step_s": round(marks[1] - t0, 2),
            "loop_ms_per_step": round(1000 * (marks[-1] - marks[1]) / max(1, steps - 1), 2), "capture_s": 0.0,
            "rtf": round(total / (duration * len(texts)), 3)}


def measure(model, texts: list[str], duration: float, seed: int, decoders: tuple[str, ...], hf=None) -> dict:
    """The decoders on one batch: seconds per stage, codes compared with audiocraft's.

    Args:
        model: the audiocraft `MusicGen`.
        texts: the batch's descriptions.
        duration: seconds of audio per description.
        seed: sampling seed.
        decoders: which paths, in order.
        hf: `(model, processor)` of `transformers_model`, for the `transformers` path.
    """
    import torch

    from zalo_music import fast_decoder, graph_decoder

    model.set_generation_params(use_sampling=True, top_k=250, top_p=0.0, temperature=1.0, duration=duration,
                                cfg_coef=3.0)
    res: dict = {}
    codes = {}
    for name in decoders:
        if name == "transformers":
            res[name] = measure_transformers(hf, texts, duration, seed, model.frame_rate)
            continue
        stats: dict = {}
        with torch.inference_mode():
            t0 = time.perf_counter()
            attributes, _ = model._prepare_tokens_and_attributes(texts, None)
            torch.manual_seed(seed)
            marks: list[float] = []
            if name != "audiocraft":
                decoder = graph_decoder if name == "graph" else fast_decoder
                tokens = decoder.generate_tokens(model, attributes, callback=_clock(marks), stats=stats)
            else:
                with model.autocast:  # what `_generate_tokens` does, with a per-step clock
                    tokens = model.lm.generate(None, attributes, callback=_clock(marks),
                                               max_gen_len=int(model.duration * model.frame_rate),
                                               **model.generation_params)
            t1 = time.perf_counter()
            model.generate_audio(tokens)
            t2 = time.perf_counter()
        steps = tokens.shape[-1] + model.lm.num_codebooks - 1  # the delay pattern's decoding steps
        codes[name] = tokens
        capture = stats.get("capture_s", 0.0)  # graphs of later windows are captured inside the loop: taken out
        res[name] = {"tokens_s": round(t1 - t0, 2), "decode_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2),
                     "loop_ms_per_step": round(1000 * (marks[-1] - marks[0] - capture) / (len(marks) - 1), 2),
                     "capture_s": round(capture, 3), "first_step_s": round(marks[0] - t0, 2), "steps": steps,
                     "rtf": round((t2 - t0) / (duration * len(texts)), 3)}
    for name in decoders:
        if name != "audiocraft" and "audiocraft" in res:
            res[name].update(speedup_loop=round(res["audiocraft"]["loop_ms_per_step"] / res[name]["loop_ms_per_step"],
                                                2),
                             speedup_total=round(res["audiocraft"]["total_s"] / res[name]["total_s"], 2))
        if name in codes and name != "audiocraft" and "audiocraft" in codes:
            same = codes[name] == codes["audiocraft"]
            res[name].update(same_codes=bool(same.all()), codes_equal_fraction=round(same.float().mean().item(), 6))
    return res


def profile(model, by_length: list[str], batch: int, duration: float, seed: int, decoders: tuple[str, ...],
            device: str) -> dict:
    """`benchkit.profile_summary` of one generation per decoder (T5, LM loop, codec decode), per decoding step."""
    import benchkit
    import torch

    from zalo_music.generate import generate_batch

    around = max(0, len(by_length) // 2 - batch // 2)
    texts = by_length[around:around + batch]
    model.set_generation_params(use_sampling=True, top_k=250, top_p=0.0, temperature=1.0, duration=duration,
                                cfg_coef=3.0)
    steps = int(duration * model.frame_rate) + model.lm.num_codebooks - 1
    out = {}
    for name in decoders:
        def run(name: str = name) -> None:
            torch.manual_seed(seed)
            with torch.inference_mode():
                generate_batch(model, texts, name)

        summary = benchkit.profile_summary(run, 1, device)
        summary["decoding_steps"] = steps
        for key in ("wall_ms_per_step", "gpu_busy_ms_per_step", "kernels_per_step"):
            if key in summary:  # one generation -> per decoding step
                summary[key] = round(summary[key] / steps, 3)
        for op in summary["ops"]:
            op["calls_per_step"] = round(op["calls_per_step"] / steps, 2)
            op["self_ms_per_step"] = round(op["self_ms_per_step"] / steps, 4)
        out[name] = summary
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--standins", default=None,
                   help="folder of `zalo-music standins` (full depth); default: the hub's real model")
    p.add_argument("--json", dest="out_json", default=None, help="write the figures here")
    p.add_argument("--texts", default=str(DEFAULT_JSON), help="Zalo JSON of descriptions (default: public test)")
    p.add_argument("--batches", default="1:4.0,16:0.6",
                   help="batch:seconds pairs (CPU default keeps the run near 10 min on 2 cores)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--decoders", default=None,
                   help="comma-separated, of audiocraft, fast, graph, transformers (default: audiocraft,fast; graph "
                        "too on CUDA)")
    p.add_argument("--profile", default="",
                   help="batch:seconds pairs to profile each decoder at (torch.profiler: ops, kernels per step, "
                        "GPU idle share), after the timed runs; default: none")
    p.add_argument("--order", choices=("length", "id"), default="length",
                   help="which descriptions a batch takes: consecutive in T5-length order around the median, as "
                        "`generate --batch-order length` batches them, or the first ids (default: length)")
    a = p.parse_args(argv)
    decoders = tuple(a.decoders.split(",")) if a.decoders else (
        ("audiocraft", "fast", "graph") if a.device.startswith("cuda") else ("audiocraft", "fast"))
    if a.standins:
        from zalo_music.standins.build import environment

        os.environ.update(environment(a.standins))  # before transformers is imported
    sys.path.insert(0, str(PROJECT))
    from zalo_music.runtime import prepare

    prepare()
    import torch

    from zalo_music.generate import load_model

    model = load_model("facebook/musicgen-small", a.device)
    hf = transformers_model(a.device) if "transformers" in decoders else None
    plan = [(int(b), float(d)) for b, d in (x.split(":") for x in a.batches.split(","))]
    texts = _texts(Path(a.texts))
    tokenizer = getattr(model.lm.condition_provider.conditioners["description"], "t5_tokenizer", None)
    count = (lambda t: len(tokenizer(t)["input_ids"])) if tokenizer else len
    by_length = sorted(texts, key=lambda t: (count(t), t))
    median = by_length[len(texts) // 2]
    measure(model, texts[:1], 0.1, a.seed, decoders, hf)  # warm-up: first-call allocations of every path
    import benchkit

    result = {**benchkit.result_header(__file__, argv if argv is not None else sys.argv[1:]),
              "threads": torch.get_num_threads(),
              "model": "facebook/musicgen-small " + ("(stand-in: random weights)" if a.standins else ""),
              "texts": a.texts if Path(a.texts).is_file() else "demo descriptions", "order": a.order,
              "decoders": decoders, "runs": []}
    for batch, duration in plan:
        around = max(0, len(by_length) // 2 - batch // 2)
        chunk = [median] if batch == 1 else (by_length[around:around + batch] if a.order == "length"
                                             else texts[:batch])
        lengths = [count(t) for t in chunk] if tokenizer else []
        run = {"batch": batch, "duration": duration, "t5_tokens_max": max(lengths, default=0),
               "t5_tokens_mean": round(sum(lengths) / len(lengths), 1) if lengths else 0,
               **measure(model, chunk, duration, a.seed, decoders, hf)}
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
    print("\n| batch | seconds | T5 tokens (max) | decoder | loop ms/step | capture s | end-to-end s (T5+LM+codec) "
          "| loop speedup | end-to-end speedup | same codes as audiocraft |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in result["runs"]:
        for name in decoders:
            d = r[name]
            print(f"| {r['batch']} | {r['duration']} | {r['t5_tokens_max']} | {name} | {d['loop_ms_per_step']} | "
                  f"{d['capture_s']} | {d['total_s']} | {_x(d, 'speedup_loop')} | {_x(d, 'speedup_total')} "
                  f"| {d.get('same_codes', '')} |")
    ours = tuple(d for d in decoders if d != "transformers")  # the profiles are of the project's own paths
    for batch, duration in [(int(b), float(d)) for b, d in (x.split(":") for x in a.profile.split(",") if x)]:
        result.setdefault("profiles", []).append(
            {"batch": batch, "duration": duration, **profile(model, by_length, batch, duration, a.seed, ours,
                                                             a.device)})
    if a.out_json:
        Path(a.out_json).write_text(json.dumps(result, indent=1))
        print(f"figures -> {a.out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
