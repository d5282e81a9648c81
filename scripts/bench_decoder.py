"""Decoding speed, side by side in one run: the fast decoder vs audiocraft's own `MusicGen` loop.

One `MusicGen` (musicgen-small loaded by name: the full-shape stand-ins of `zalo-music standins`, or the real
model where the hub is reachable), the same descriptions (the first ids of a Zalo JSON, batched as
`zalo-music generate` batches them: sorted by id, consecutive), the same seed and sampling (top-k 250, CFG 3).
Per batch size, in alternating order:

- `audiocraft`: `MusicGen.generate(texts)`: T5, audiocraft's `LMModel.generate`, EnCodec decode.
- `fast`: `fast_decoder.generate_tokens` on the same attributes, then the same `generate_audio` decode.

Both columns time the same three stages (T5 + LM loop + codec decode). `loop ms/step` is the decoding loop
alone, from the first step's end to the last step's end (each loop's progress callback), so neither T5 nor the
setup is in it; `same codes` compares the two paths' codes for the same seed. Batch 1 takes the description of
median T5 length in the JSON; larger batches take its first ids in sorted order, as `generate` batches them.

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


def _clock(marks: list[float]):
    def callback(done: int, total: int) -> None:
        marks.append(time.perf_counter())

    return callback


def measure(model, texts: list[str], duration: float, seed: int) -> dict:
    """Both decoders on one batch: seconds per stage, codes compared."""
    import torch

    from zalo_music import fast_decoder

    model.set_generation_params(use_sampling=True, top_k=250, top_p=0.0, temperature=1.0, duration=duration,
                                cfg_coef=3.0)
    res: dict = {}
    codes = {}
    for name in ("audiocraft", "fast"):
        with torch.inference_mode():
            t0 = time.perf_counter()
            attributes, _ = model._prepare_tokens_and_attributes(texts, None)
            torch.manual_seed(seed)
            marks: list[float] = []
            if name == "fast":
                tokens = fast_decoder.generate_tokens(model, attributes, callback=_clock(marks))
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
        res[name] = {"tokens_s": round(t1 - t0, 2), "decode_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2),
                     "loop_ms_per_step": round(1000 * (marks[-1] - marks[0]) / (len(marks) - 1), 1),
                     "first_step_s": round(marks[0] - t0, 2), "steps": steps,
                     "rtf": round((t2 - t0) / (duration * len(texts)), 3)}
    res["same_codes"] = bool(torch.equal(codes["fast"], codes["audiocraft"]))
    res["codes_equal_fraction"] = round((codes["fast"] == codes["audiocraft"]).float().mean().item(), 6)
    res["speedup_loop"] = round(res["audiocraft"]["loop_ms_per_step"] / res["fast"]["loop_ms_per_step"], 2)
    res["speedup_total"] = round(res["audiocraft"]["total_s"] / res["fast"]["total_s"], 2)
    return res


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
    a = p.parse_args(argv)
    if a.standins:
        from zalo_music.standins.build import environment

        os.environ.update(environment(a.standins))  # before transformers is imported
    sys.path.insert(0, str(PROJECT))
    from zalo_music.runtime import prepare

    prepare()
    import torch

    from zalo_music.generate import load_model

    model = load_model("facebook/musicgen-small", a.device)
    plan = [(int(b), float(d)) for b, d in (x.split(":") for x in a.batches.split(","))]
    texts = _texts(Path(a.texts))
    tokenizer = getattr(model.lm.condition_provider.conditioners["description"], "t5_tokenizer", None)
    count = (lambda t: len(tokenizer(t)["input_ids"])) if tokenizer else len
    median = sorted(texts, key=count)[len(texts) // 2]
    measure(model, texts[:1], 0.1, a.seed)  # warm-up: first-call allocations of both paths
    import benchkit

    result = {**benchkit.result_header(__file__, argv if argv is not None else sys.argv[1:]),
              "threads": torch.get_num_threads(),
              "model": "facebook/musicgen-small " + ("(stand-in: random weights)" if a.standins else ""),
              "texts": a.texts if Path(a.texts).is_file() else "demo descriptions", "runs": []}
    for batch, duration in plan:
        chunk = [median] if batch == 1 else texts[:batch]
        lengths = [count(t) for t in chunk] if tokenizer else []
        run = {"batch": batch, "duration": duration, "t5_tokens_max": max(lengths, default=0),
               "t5_tokens_mean": round(sum(lengths) / len(lengths), 1) if lengths else 0,
               **measure(model, chunk, duration, a.seed)}
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
    print("\n| batch | seconds | T5 tokens (max) | audiocraft loop ms/step | fast loop ms/step | loop speedup | "
          "end-to-end s (T5+LM+codec) audiocraft / fast | end-to-end speedup | same codes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["runs"]:
        ac, fa = r["audiocraft"], r["fast"]
        print(f"| {r['batch']} | {r['duration']} | {r['t5_tokens_max']} | {ac['loop_ms_per_step']} | "
              f"{fa['loop_ms_per_step']} | {r['speedup_loop']}x | {ac['total_s']} / {fa['total_s']} | "
              f"{r['speedup_total']}x | {r['same_codes']} |")
    if a.out_json:
        Path(a.out_json).write_text(json.dumps(result, indent=1))
        print(f"figures -> {a.out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
