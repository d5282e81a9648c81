"""`generate` section: real-time factor of zalo's batched generation vs audiocraft's `MusicGen.generate`."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import benchkit


def section_generate(a: argparse.Namespace) -> dict:
    import torch

    from zalo_music.data.demo import make_specs
    from zalo_music.generate import GenerationConfig, generate, generate_batch, load_model

    texts = [s.description for s in make_specs(max(a.gen_n, a.gen_n_single), seed=11)]
    t0 = time.perf_counter()
    model = load_model("facebook/musicgen-small", a.device)
    load_s = time.perf_counter() - t0
    if a.device == "cuda":
        from audiocraft.utils.autocast import TorchAutocast

        if a.dtype == "fp32":
            model.autocast = TorchAutocast(enabled=False)
        elif a.dtype == "bf16":
            model.autocast = TorchAutocast(enabled=True, device_type="cuda", dtype=torch.bfloat16)
        # fp16: audiocraft's MusicGen default on CUDA, kept
    gen = GenerationConfig(duration=a.gen_duration, batch_size=a.gen_batch)

    def params(duration: float) -> None:
        model.set_generation_params(use_sampling=True, top_k=gen.top_k, top_p=gen.top_p,
                                    temperature=gen.temperature, duration=duration, cfg_coef=gen.cfg_coef)

    def zalo(batch: int, items: list[str]) -> None:
        for i in range(0, len(items), batch):
            torch.manual_seed(i)
            with torch.inference_mode():
                generate_batch(model, items[i:i + batch])

    def seed_way(batch: int, items: list[str]) -> None:
        for i, text in enumerate(items):  # audiocraft's MusicGen.generate, one description per call
            torch.manual_seed(i)
            model.generate([text], progress=False)

    def e2e(batch: int, items: list[str], duration: float | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            js = Path(tmp) / "texts.json"
            js.write_text(json.dumps({f"{1_700_000_000 + i}.mp3": t for i, t in enumerate(items)}))
            out = generate("bench", js, Path(tmp) / "out", GenerationConfig(duration=duration or a.gen_duration,
                                                                            batch_size=batch),
                           device=a.device, model=model, quiet=True)
            if out["written"] != len(items):
                raise RuntimeError(f"generate wrote {out['written']} of {len(items)}: {out}")

    warm_s = min(0.2 if a.device == "cpu" else 1.0, a.gen_duration)
    params(warm_s)
    zalo(1, texts[:1])  # warm-up (first-call allocations, T5, codec)
    seed_way(1, texts[:1])
    b = min(a.gen_batch, a.gen_n)
    modes = [("zalo_batch1", zalo, 1, a.gen_n_single), ("musicgen_generate_one_at_a_time", seed_way, 1,
                                                         a.gen_n_single),
             (f"zalo_batch{b}", zalo, b, a.gen_n)]
    if a.e2e in ("single", "all"):
        modes.append(("e2e_batch1", e2e, 1, a.gen_n_single))
    if a.e2e in ("batched", "all"):
        modes.append((f"e2e_batch{b}", e2e, b, a.gen_n))
    res: dict = {"modes": {}}
    for name, fn, batch, n in modes:
        if a.device == "cuda":  # each shape's first pass pays CUDA's warm-up (kernel choice, allocator): untimed
            params(warm_s)
            if fn is e2e:
                e2e(batch, texts[:batch], duration=warm_s)
            else:
                fn(batch, texts[:batch])
        params(a.gen_duration)
        with benchkit.Peak(a.device) as peak:
            t = time.perf_counter()
            fn(batch, texts[:n])
            benchkit.sync(a.device)
            wall = time.perf_counter() - t
        audio = n * a.gen_duration
        res["modes"][name] = {"batch": batch, "clips": n, "wall_s": round(wall, 2),
                              "rtf_wall_per_audio_s": round(wall / audio, 4),
                              "audio_s_per_wall_s": round(audio / wall, 4), **peak.figures()}
    m = res["modes"]
    base = m["zalo_batch1"]["rtf_wall_per_audio_s"]
    for name in m:
        m[name]["speedup_vs_zalo_batch1"] = round(base / m[name]["rtf_wall_per_audio_s"], 2)
    seed = m["musicgen_generate_one_at_a_time"]["rtf_wall_per_audio_s"]
    res["speedup_batched_vs_musicgen_one_at_a_time"] = round(seed / m[f"zalo_batch{b}"]["rtf_wall_per_audio_s"], 2)
    res.update({"warmup": (f"untimed {warm_s:g}-s pass of each mode at its batch size" if a.device == "cuda"
                           else f"untimed {warm_s:g}-s pass at batch 1 (zalo and MusicGen.generate) before all modes"),
                "duration_s": a.gen_duration, "top_k": gen.top_k, "cfg_coef": gen.cfg_coef,
                "lm_params_m": round(sum(p.numel() for p in model.lm.parameters()) / 1e6, 1),
                "lm_layers": len(model.lm.transformer.layers), "model_load_s": round(load_s, 1),
                "autocast": getattr(model.autocast, "autocast", None) is not None,
                "threads": torch.get_num_threads(), **benchkit.process_peak()})
    return res
