"""`clap` section: CLAP scoring clips/s through the scorer's functions, side by side in one run.

Modes, each scoring the same `--clap-n` 10-s MP3s with their texts at `--clap-batch`:
- `serial_float32`: the windows read one clip at a time, then embedded in float32 (the scorer before the
  read-ahead; kept here as the baseline);
- `read_ahead_float32`: `embed_files` as `score` runs it (next batch decoded on threads during the embedding);
- `read_ahead_bfloat16`: the same with the audio tower in bfloat16 (best-of-N's `--clap-dtype` on a GPU);
- `one_at_a_time`: batch 1, float32.
Parts, to say what bounds the pace: reading alone (serial and on threads) and embedding alone (float32 and
bfloat16, windows already in memory). Agreement of bfloat16 with float32 on the same clips: audio cosine, CLAP
difference and, for groups of 4 clips sharing a text (4 best-of-N candidates), how often the same one wins.
The tower's FLOPs per clip (torch's counter) turn the embedding pace into TFLOP/s and, on a GPU of the peak
table, a share of its bf16 peak.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import benchkit


def _timed(device: str, fn) -> tuple[float, object, dict]:
    """`(wall seconds, fn's result, peak figures)` of one call, the GPU's queue included."""
    with benchkit.Peak(device) as peak:
        t = time.perf_counter()
        out = fn()
        benchkit.sync(device)
        wall = time.perf_counter() - t
    return wall, out, peak.figures()


def _agreement(full, half, text_emb) -> dict:
    import numpy as np

    from zalo_music.metrics.clap import clap_cosines

    clap_full, clap_half = clap_cosines(text_emb, full), clap_cosines(text_emb, half)
    groups = len(full) // 4
    same = [int(np.argmax(clap_full[4 * g:4 * g + 4]) == np.argmax(clap_half[4 * g:4 * g + 4])) for g in range(groups)]
    return {"audio_cos_min": round(float((full * half).sum(-1).min()), 6),
            "clap_abs_diff_max": round(float(np.abs(clap_full - clap_half).max()), 6),
            "clap_spread_within_groups": round(float(np.mean([np.ptp(clap_full[4 * g:4 * g + 4])
                                                              for g in range(groups)])), 6) if groups else None,
            "groups_of_4": groups, "same_choice": sum(same)}


def section_clap(a: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from zalo_music.metrics.audio import load_clip_window
    from zalo_music.metrics.clap import ClapSpec, checkpoint_info, get_embedder
    from zalo_music.metrics.evaluator import embed_files
    from zalo_music.metrics.windows import window_batches
    from zalo_music.procutil import usable_cores

    ckpt = Path(a.standins) / "reference" / "clap" / "music_audioset_epoch_15_esc_90.14.pt"
    root = Path(tempfile.mkdtemp(prefix="zalo-bench-fullshape-clap-"))
    texts = benchkit.synthetic_clips(root, max(a.clap_n, a.clap_n_single), 10.0, seed=2)
    files = sorted(root.iterdir())
    t0 = time.perf_counter()
    embedder = get_embedder(ClapSpec(checkpoint=str(ckpt), amodel="HTSAT-base", device=a.device,
                                     batch_size=a.clap_batch, download=False))
    load_s = time.perf_counter() - t0
    bs, n = a.clap_batch, a.clap_n

    def serial(chosen: list[Path], batch: int) -> np.ndarray:
        out = []
        for i in range(0, len(chosen), batch):
            part = chosen[i:i + batch]
            out.append(embedder.embed_windows(np.stack([load_clip_window(p)[0] for p in part]), batch_size=batch))
            embedder.embed_text([texts[p.name] for p in part], batch_size=batch)
        return np.concatenate(out)

    def read_ahead(chosen: list[Path], dtype: str) -> np.ndarray:
        emb = embed_files(embedder, chosen, batch_size=bs, progress=False, dtype=dtype)[0]
        embedder.embed_text([texts[p.name] for p in chosen], batch_size=bs)
        return emb

    for dtype in ("float32", "bfloat16"):  # warm-up: kernels, autocast caches
        read_ahead(files[:bs], dtype)
    res: dict = {"modes": {}, "parts": {}}
    emb: dict = {}
    for name, fn, count in (("serial_float32", lambda: serial(files[:n], bs), n),
                            ("read_ahead_float32", lambda: read_ahead(files[:n], "float32"), n),
                            ("read_ahead_bfloat16", lambda: read_ahead(files[:n], "bfloat16"), n),
                            ("one_at_a_time", lambda: serial(files[:a.clap_n_single], 1), a.clap_n_single)):
        wall, emb[name], peak = _timed(a.device, fn)
        res["modes"][name] = {"batch": 1 if name == "one_at_a_time" else bs, "clips": count, "wall_s": round(wall, 2),
                              "clips_per_s": round(count / wall, 3), "s_per_clip": round(wall / count, 4), **peak}
    wall, windows, _ = _timed("cpu", lambda: np.stack([load_clip_window(p)[0] for p in files[:n]]))
    res["parts"]["read_serial"] = round(n / wall, 1)
    wall, _, _ = _timed("cpu", lambda: [r for _, r in window_batches(files[:n], bs)])
    res["parts"]["read_threads"] = round(n / wall, 1)
    for dtype in ("float32", "bfloat16"):
        wall, _, _ = _timed(a.device, lambda d=dtype: embedder.embed_windows(windows, batch_size=bs, dtype=d))
        res["parts"][f"embed_{dtype}"] = round(n / wall, 1)
    res["parts"]["unit"] = "clips/s"
    # the tower's distance from the hardware: its FLOPs per clip (counted by torch) at the embedding-alone pace
    from torch.utils.flop_counter import FlopCounterMode

    from zalo_music.solvers.throughput import peak_flops

    with FlopCounterMode(display=False) as counter:
        embedder.embed_windows(windows[:1], batch_size=1)
    gflop = counter.get_total_flops() / 1e9
    peak = peak_flops(a.device, None)
    res["tower"] = {"gflop_per_clip": round(gflop, 2), "peak_tflops": peak / 1e12 if peak else None, **{
        f"{d}_tflops": round(res["parts"][f"embed_{d}"] * gflop / 1e3, 3) for d in ("float32", "bfloat16")}}
    if peak:
        res["tower"]["bfloat16_share_of_peak"] = round(res["tower"]["bfloat16_tflops"] * 1e12 / peak, 4)
    # groups of 4 clips share their first clip's text, as the 4 candidates of one description do
    text_emb = embedder.embed_text([texts[p.name] for p in files[:n:4]], batch_size=bs).repeat(4, axis=0)[:n]
    res["bfloat16_vs_float32"] = _agreement(emb["read_ahead_float32"], emb["read_ahead_bfloat16"], text_emb)
    m = res["modes"]
    res["speedup_batched"] = round(m["serial_float32"]["clips_per_s"] / m["one_at_a_time"]["clips_per_s"], 2)
    res["speedup_read_ahead"] = round(m["read_ahead_float32"]["clips_per_s"] / m["serial_float32"]["clips_per_s"], 2)
    res["speedup_bfloat16"] = round(m["read_ahead_bfloat16"]["clips_per_s"] / m["serial_float32"]["clips_per_s"], 2)
    try:
        info = checkpoint_info(ckpt)
    except Exception as exc:  # informative only
        info = {"error": repr(exc)}
    res.update({"amodel": "HTSAT-base", "checkpoint": str(ckpt), "checkpoint_info": info,
                "model_load_s": round(load_s, 1), "clip_s": 10.0, "threads": torch.get_num_threads(),
                "read_workers": usable_cores(), **benchkit.process_peak()})
    return res
