"""`clap` section: CLAP scoring clips/s through the scorer's functions, batched vs one clip at a time."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import benchkit


def section_clap(a: argparse.Namespace) -> dict:
    import torch

    from zalo_music.metrics.clap import ClapSpec, checkpoint_info, get_embedder
    from zalo_music.metrics.evaluator import embed_files

    ckpt = Path(a.standins) / "reference" / "clap" / "music_audioset_epoch_15_esc_90.14.pt"
    root = Path(tempfile.mkdtemp(prefix="zalo-bench-fullshape-clap-"))
    texts = benchkit.synthetic_clips(root, max(a.clap_n, a.clap_n_single), 10.0, seed=2)
    files = sorted(root.iterdir())
    t0 = time.perf_counter()
    embedder = get_embedder(ClapSpec(checkpoint=str(ckpt), amodel="HTSAT-base", device=a.device,
                                     batch_size=a.clap_batch, download=False))
    load_s = time.perf_counter() - t0

    def score(batch: int, chosen: list[Path]) -> None:
        for i in range(0, len(chosen), batch):
            part = chosen[i:i + batch]
            embed_files(embedder, part, batch_size=batch, progress=False)
            embedder.embed_text([texts[p.name] for p in part], batch_size=batch)

    score(a.clap_batch, files[:a.clap_batch])  # warm-up
    res: dict = {"modes": {}}
    for name, batch, n in ((f"batch{a.clap_batch}", a.clap_batch, a.clap_n), ("one_at_a_time", 1, a.clap_n_single)):
        with benchkit.Peak(a.device) as peak:
            t = time.perf_counter()
            score(batch, files[:n])
            benchkit.sync(a.device)
            wall = time.perf_counter() - t
        res["modes"][name] = {"batch": batch, "clips": n, "wall_s": round(wall, 2),
                              "clips_per_s": round(n / wall, 4), "s_per_clip": round(wall / n, 3), **peak.figures()}
    m = res["modes"]
    res["speedup_batched"] = round(m[f"batch{a.clap_batch}"]["clips_per_s"] / m["one_at_a_time"]["clips_per_s"], 2)
    try:
        info = checkpoint_info(ckpt)
    except Exception as exc:  # informative only
        info = {"error": repr(exc)}
    res.update({"amodel": "HTSAT-base", "checkpoint": str(ckpt), "checkpoint_info": info,
                "model_load_s": round(load_s, 1), "clip_s": 10.0, "threads": torch.get_num_threads(),
                **benchkit.process_peak()})
    return res
