"""Full-shape figures of the real recipe, side by side in one run: training, generation, CLAP, token loop.

The real recipe (`solver=zalo/musicgen_small_ft`: musicgen-small-shaped LM of 420M parameters, EnCodec 32 kHz,
t5-base; CLAP HTSAT-base in laion's checkpoint layout) runs against the project's stand-ins
(`zalo-music standins`: real architectures, configs and file formats, random weights; built here unless
`--standins DIR` is given), offline, with the environment the rehearsal tests give their children
(tests/test_rehearsal.py). Timings do not depend on weight values; scores and the loop agreement do.

Sections (`--only`), each in its own child process, so its peak memory is its own:

- `train`: seconds per training step (audiocraft's `run_step`: forward, backward, AdamW, scheduler) from audio
  (`dset=zalo/prepared`: decode + EnCodec encode inside the step) vs from tokens (`train_from=tokens`,
  the cache `zalo-music tokenize` writes). ONE solver holds the model and optimizer; the two paths feed it
  batches from their own train loaders (the token solver dispatches on the batch type), in alternating rounds
  after untimed warm-up steps. Same batch size and segment duration.
- `generate`: real-time factor RTF = wall seconds / seconds of audio produced (lower is faster) of
  `zalo_music.generate.generate_batch` at batch 1 and at `--gen-batch`, vs audiocraft's `MusicGen.generate`
  called one description at a time (the seed's way); same model object, descriptions, duration and sampling
  (top_k 250, cfg 3). `e2e_*`: `zalo-music generate`'s function with MP3s written and verified. On CUDA each
  mode first runs an untimed 1-s pass at its own batch size (a new shape's first pass pays CUDA's warm-up).
- `clap`: CLAP scoring clips/s (10-s clips: decode, 48 kHz window, HTSAT-base audio embedding, RoBERTa text
  embedding) through the scorer's functions (`embed_files`, `embed_text`) batched vs one clip at a time.
- `loop`: the 30-s loop augmentation in token space (codes tiled 3x) vs the codes of the looped audio, with
  EnCodec 32 kHz, measured as docs/tokens.md did for the debug codec (`zalo_music.tokens.loop.compare_loop`),
  plus the agreement per codebook. RANDOM CODEC WEIGHTS: not representative of the real EnCodec.

Peak memory per measured mode: the process's VmHWM, reset before each mode through /proc/self/clear_refs (so the
figure covers that mode, with everything already loaded), and `torch.cuda.max_memory_allocated` on CUDA.

    .venv/bin/python scripts/bench_fullshape.py --json /tmp/fullshape.json            # CPU defaults (~15 min)
    .venv/bin/python scripts/bench_fullshape.py --device cuda --json fullshape_gpu.json  # GPU defaults
    .venv/bin/python scripts/bench_fullshape.py --only clap,loop --standins /tmp/standins
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
SECTIONS = ("train", "generate", "clap", "loop")
DATASET = "bench_fullshape"
RECIPE = "solver=zalo/musicgen_small_ft"

#: Defaults per device: CPU sizes keep the whole run near 15 min on 2 cores; CUDA ones are the recipe's.
DEFAULTS = {
    "cpu": {"clips": 16, "batch": 2, "segment": 2.0, "steps": 2, "rounds": 2, "warmup": 1, "num_workers": 0,
            "gen_duration": 2.0, "gen_batch": 16, "gen_n": 16, "gen_n_single": 1, "e2e": "none",
            "clap_n": 8, "clap_batch": 8, "clap_n_single": 4, "loop_n": 4, "loop_check": 1, "loop_fit": 1},
    "cuda": {"clips": 48, "batch": 16, "segment": 10.0, "steps": 12, "rounds": 3, "warmup": 3, "num_workers": 4,
             "gen_duration": 10.0, "gen_batch": 16, "gen_n": 32, "gen_n_single": 4, "e2e": "all",
             "clap_n": 128, "clap_batch": 32, "clap_n_single": 16, "loop_n": 8, "loop_check": 2, "loop_fit": 1},
}


# ---------------------------------------------------------------------------------------------- helpers

def _vm(field: str) -> int | None:
    """`VmHWM`/`VmRSS` of this process in kB (None where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class Peak:
    """Peak memory of one measured mode: VmHWM reset at start (Linux clear_refs 5), CUDA peak stats reset."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self) -> Peak:
        self.reset_ok = False
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset_ok = True
        except OSError:
            pass
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        hwm = _vm("VmHWM")
        self.rss_mb = round(hwm / 1024) if hwm else None
        if not self.reset_ok:
            import resource

            self.rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        self.cuda_mb = None
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            self.cuda_mb = round(torch.cuda.max_memory_allocated() / 2 ** 20)

    def figures(self) -> dict:
        out = {"peak_rss_mb": self.rss_mb, "peak_rss_scope": "mode" if self.reset_ok else "process"}
        if self.cuda_mb is not None:
            out["cuda_max_allocated_mb"] = self.cuda_mb
        return out


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _merge_peak(acc: dict, peak: Peak) -> None:
    """Keep the largest peak of a mode measured over several rounds."""
    for k, v in peak.figures().items():
        if isinstance(v, int | float):
            acc[k] = max(acc.get(k) or 0, v)
        else:
            acc[k] = v


def _process_peak() -> dict:
    import resource

    return {"process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _autocast_overrides(device: str, dtype: str) -> list[str]:
    if dtype == "fp32":
        return ["autocast=false"]
    if dtype == "fp16":
        return ["autocast=true", "autocast_dtype=float16"]
    return ["autocast=true", "autocast_dtype=bfloat16"]  # the recipe's default (turned off on CPU by the solver)


def _recipe_argv(a: argparse.Namespace, tokens: bool) -> list[str]:
    """The real recipe plus size overrides only (as the rehearsal does), on the benchmark's dataset."""
    return [RECIPE, "dset=zalo/prepared", *(["train_from=tokens"] if tokens else []), f"zalo.dataset={DATASET}",
            f"device={a.device}", f"dataset.batch_size={a.batch}", f"dataset.num_workers={a.num_workers}",
            f"dataset.segment_duration={a.segment}", "optim.updates_per_epoch=1",
            "dataset.valid.num_samples=2", "dataset.evaluate.num_samples=2", "dataset.generate.num_samples=1",
            *_autocast_overrides(a.device, a.dtype), *a.standin_overrides]


# ---------------------------------------------------------------------------------------------- train

class _Runner:
    """Training steps of a solver on batches of one loader (scripts/bench_tokens.py's timing)."""

    def __init__(self, solver, loader, device: str):
        from audiocraft.utils.utils import get_dataset_from_loader

        self.solver, self.loader, self.device = solver, loader, device
        try:
            get_dataset_from_loader(loader).current_epoch = 1
        except AttributeError:
            pass
        self.it = iter(loader)
        self.wait = self.step = 0.0
        self.steps = 0
        self.each: list[float] = []
        self.peak: dict = {}

    def _next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def run(self, n: int, timed: bool = True) -> None:
        def loop():
            self.solver.model.train()
            for idx in range(n):
                t0 = time.perf_counter()
                batch = self._next()
                t1 = time.perf_counter()
                self.solver.run_step(idx, batch, {})
                _sync(self.device)
                t2 = time.perf_counter()
                if timed:
                    self.wait += t1 - t0
                    self.step += t2 - t1
                    self.steps += 1
                    self.each.append(round(t2 - t0, 3))
            return {}

        with Peak(self.device) as peak:
            self.solver._start_epoch()  # flashy logs each stage once per epoch: a fresh (uncommitted) one
            self.solver.run_stage("train", loop)
        if timed:
            _merge_peak(self.peak, peak)

    def result(self) -> dict:
        total = self.wait + self.step
        return {"steps": self.steps, "s_per_step": round(total / self.steps, 3),
                "step_s": round(self.step / self.steps, 3),
                "data_wait_s_per_step": round(self.wait / self.steps, 4), "each_step_s": self.each, **self.peak}


def section_train(a: argparse.Namespace) -> dict:
    import torch
    from audiocraft import train as ac_train
    from audiocraft.solvers import builders

    from zalo_music.tokens.encode import tokenize
    from zalo_music.train import main

    t0 = time.perf_counter()
    summary = tokenize(_recipe_argv(a, tokens=True), device=a.device, quiet=True)
    tokenize_s = time.perf_counter() - t0
    xp = main.get_xp(_recipe_argv(a, tokens=True))
    t0 = time.perf_counter()
    with xp.enter():
        solver = ac_train.get_solver(xp.cfg)  # LM built at full shape, random init (no restore: values don't matter)
    build_s = time.perf_counter() - t0
    if getattr(solver, "token_cache", None) is None:
        raise RuntimeError("the token solver did not switch to the token cache")
    audio_loaders = builders.get_audio_datasets(solver.cfg, dataset_type=solver.DATASET_TYPE)
    runners = {"audio": _Runner(solver, audio_loaders["train"], a.device),
               "tokens": _Runner(solver, solver.dataloaders["train"], a.device)}
    for r in runners.values():
        r.run(a.warmup, timed=False)
    per_round = max(1, a.steps // a.rounds)
    for _ in range(a.rounds):
        for r in runners.values():
            r.run(per_round)
    res = {name: r.result() for name, r in runners.items()}
    res["speedup_tokens_vs_audio"] = round(res["audio"]["s_per_step"] / res["tokens"]["s_per_step"], 2)
    lm_params = sum(p.numel() for p in solver.model.parameters())
    res.update({
        "lm_params_m": round(lm_params / 1e6, 1), "lm_layers": int(solver.cfg.transformer_lm.num_layers),
        "codec": str(solver.cfg.compression_model_checkpoint), "frame_rate": solver.compression_model.frame_rate,
        "batch": a.batch, "segment_s": a.segment, "num_workers": a.num_workers, "warmup_steps": a.warmup,
        "rounds": a.rounds, "steps_per_round": per_round,
        "autocast": getattr(solver.autocast, "autocast", None) is not None,
        "autocast_dtype": str(solver.cfg.autocast_dtype), "optimizer": str(solver.cfg.optim.optimizer),
        "solver_build_s": round(build_s, 1), "tokenize_s": round(tokenize_s, 1),
        "tokenized_clips": {s: v["clips"] for s, v in summary["splits"].items()},
        "token_cache": summary["cache"], "threads": torch.get_num_threads(), **_process_peak()})
    return res


# ---------------------------------------------------------------------------------------------- generate

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
        with Peak(a.device) as peak:
            t = time.perf_counter()
            fn(batch, texts[:n])
            _sync(a.device)
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
                "threads": torch.get_num_threads(), **_process_peak()})
    return res


# ---------------------------------------------------------------------------------------------- clap

def _write_clips(folder: Path, n: int, seconds: float, seed: int) -> dict[str, str]:
    """n synthetic 10-s 32 kHz mono MP3s (what `generate` writes) and a description each."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sr = 32_000
    t = np.arange(int(seconds * sr)) / sr
    out = {}
    for i in range(n):
        hz = 110 * 2 ** (rng.integers(0, 36) / 12)
        wav = 0.4 * np.sin(2 * np.pi * hz * t) * np.exp(-t * rng.uniform(0.5, 4)) + 0.02 * rng.normal(size=t.size)
        key = f"{1_700_000_000 + i}.mp3"
        sf.write(folder / key, wav.astype("float32"), sr, format="MP3")
        out[key] = f"a {'calm' if hz < 300 else 'bright'} piano melody with soft drums, number {i}"
    return out


def section_clap(a: argparse.Namespace) -> dict:
    import torch

    from zalo_music.metrics.clap import ClapSpec, checkpoint_info, get_embedder
    from zalo_music.metrics.evaluator import embed_files

    ckpt = Path(a.standins) / "reference" / "clap" / "music_audioset_epoch_15_esc_90.14.pt"
    root = Path(tempfile.mkdtemp(prefix="zalo-bench-fullshape-clap-"))
    texts = _write_clips(root, max(a.clap_n, a.clap_n_single), 10.0, seed=2)
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
        with Peak(a.device) as peak:
            t = time.perf_counter()
            score(batch, files[:n])
            _sync(a.device)
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
                **_process_peak()})
    return res


# ---------------------------------------------------------------------------------------------- loop

def _loop_agreement(model, codes, i: int, repeat: int = 3, seam_frames: int = 2):
    """compare_loop's comparison for clip i, kept per codebook: (equal [K, T] bool, mask away from seams [T])."""
    import numpy as np
    from audiocraft.data.audio import audio_read
    from audiocraft.data.audio_utils import convert_audio

    wav, sr = audio_read(codes.rows[i]["path"])
    wav = convert_audio(wav, sr, model.sample_rate, model.channels)
    looped = model.encode(wav.repeat(1, repeat)[None])[0][0].cpu().numpy()
    tiled = np.tile(codes.codes(i), (1, repeat))
    t = min(looped.shape[-1], tiled.shape[-1])
    same = looped[:, :t] == tiled[:, :t]
    frames = codes.rows[i]["frames"]
    mask = np.ones(t, dtype=bool)
    for s in range(1, repeat):
        mask[max(0, s * frames - seam_frames):s * frames + seam_frames] = False
    return same, mask


def _distinct(codes) -> list[int]:
    """Distinct codes per codebook in a [K, T] array."""
    import numpy as np

    return [int(len(np.unique(row))) for row in codes]


def _fit_codebooks(codec, wavs, seed: int = 0) -> None:
    """Refill a transformers-EnCodec's codebooks with frames of its own encoder's output (residual, per stage).

    The stand-in's codebooks are N(0, 1) vectors that sit far from what the random encoder outputs, so every frame
    quantizes to the same code (see `loop.standin.distinct_codes_per_codebook`) and any agreement is trivially
    100%. Drawing each stage's codebook from the residual frames of the clips makes the quantizer use many codes;
    the encoder (convolutions + LSTM, the part whose context at the seams matters) is unchanged.
    """
    import torch

    hf = codec.model  # audiocraft's HFEncodecCompressionModel wraps transformers' EncodecModel
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        frames = torch.cat([hf.encoder(w[None]).transpose(1, 2).reshape(-1, hf.config.codebook_dim) for w in wavs])
        residual = frames.clone()
        for layer in hf.quantizer.layers:
            book = layer.codebook
            idx = torch.randint(len(residual), (book.embed.shape[0],), generator=g)
            jitter = 1e-3 * residual.std() * torch.randn(book.embed.shape, generator=g)
            book.embed.copy_(residual[idx] + jitter)
            book.embed_avg.copy_(book.embed)
            nearest = torch.cdist(residual, book.embed).argmin(dim=1)
            residual = residual - book.embed[nearest]


def section_loop(a: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from zalo_music.tokens.encode import compose_config, load_codec, tokenize
    from zalo_music.tokens.loop import compare_loop
    from zalo_music.tokens.store import SplitCodes

    # Always on CPU: compare_loop feeds the model CPU tensors, and the cached codes must come from the same device
    # as the looped audio's (on CUDA its own CPU cache, not the train section's; on CPU the same cache).
    argv = _recipe_argv(a, tokens=True)
    out = None if a.device == "cpu" else Path(os.environ["ZALO_MUSIC_DATA_DIR"]) / "tokens_loop_cpu"
    t0 = time.perf_counter()
    summary = tokenize(argv, out=out, device="cpu", quiet=True)
    tokenize_s = time.perf_counter() - t0
    cfg = compose_config(argv)
    model = load_codec(cfg, "cpu")
    split = Path(summary["cache"]) / "train"
    codes = SplitCodes(split)
    n = min(a.loop_n, len(codes))
    equal, away, first, per_cb, per_cb_away = [], [], [], [], []
    with Peak("cpu") as peak, torch.no_grad():
        t = time.perf_counter()
        for i in range(n):  # one encode of each looped clip; compare_loop's figures and per codebook
            same, mask = _loop_agreement(model, codes, i)
            equal.append(same.mean())
            away.append(same[:, mask].mean())
            first.append(same[0].mean())
            per_cb.append(same.mean(axis=1))
            per_cb_away.append(same[:, mask].mean(axis=1))
        wall = time.perf_counter() - t
    # Cross-check on the first clip(s): the project's own function gives the same figures as the loop above.
    check = compare_loop(model, split, n=min(a.loop_check, n), repeat=3, seam_frames=2)
    mine = float(np.mean(equal[:min(a.loop_check, n)]))
    distinct = np.max([_distinct(codes.codes(i)) for i in range(n)], axis=0).tolist()
    res = {"agree": round(float(np.mean(equal)), 4), "agree_away_from_seams": round(float(np.mean(away)), 4),
           "agree_first_codebook": round(float(np.mean(first)), 4),
           "agree_per_codebook": [round(float(x), 4) for x in np.mean(per_cb, axis=0)],
           "agree_away_from_seams_per_codebook": [round(float(x), 4) for x in np.mean(per_cb_away, axis=0)],
           "distinct_codes_per_codebook": distinct,
           "compare_loop_check": {"clips": min(a.loop_check, n), "agree": round(check["agree"], 4),
                                  "same_as_ours": abs(check["agree"] - mine) < 1e-9},
           "clips": n, "frames_compared": int(same.shape[-1]), "repeat": 3, "seam_frames": 2,
           "codec": str(cfg.compression_model_checkpoint), "device": "cpu", "frame_rate": model.frame_rate,
           "n_q": model.num_codebooks, "cardinality": model.cardinality, "compare_s": round(wall, 1),
           "tokenize_s": round(tokenize_s, 1), **peak.figures(), **_process_peak(),
           "caveat": "random stand-in EnCodec weights: the agreement is NOT representative of the real codec"}
    if max(distinct) <= 4:
        res["degenerate"] = (f"the stand-in codec uses at most {max(distinct)} distinct codes per codebook on these "
                             "clips: every frame quantizes to the same code, so this agreement is trivially ~100%")
    if a.loop_fit:
        res["fitted_codebooks"] = _loop_fitted(model, codes, n)
    return res


def _loop_fitted(model, codes, n: int) -> dict:
    """The same comparison with codebooks drawn from the encoder's own residual frames (`_fit_codebooks`)."""
    import numpy as np
    import torch
    from audiocraft.data.audio import audio_read
    from audiocraft.data.audio_utils import convert_audio

    wavs = []
    for i in range(n):
        wav, sr = audio_read(codes.rows[i]["path"])
        wavs.append(convert_audio(wav, sr, model.sample_rate, model.channels))
    t0 = time.perf_counter()
    _fit_codebooks(model, wavs)
    equal, away, per_cb, per_cb_away, per_copy, distinct = [], [], [], [], [], []
    with torch.no_grad():
        for wav in wavs:
            clip = model.encode(wav[None])[0][0].cpu().numpy()  # what `tokenize` caches (whole clip)
            looped = model.encode(wav.repeat(1, 3)[None])[0][0].cpu().numpy()
            tiled = np.tile(clip, (1, 3))
            t = min(looped.shape[-1], tiled.shape[-1])
            same = looped[:, :t] == tiled[:, :t]
            frames = clip.shape[-1]
            mask = np.ones(t, dtype=bool)
            for s in (1, 2):
                mask[max(0, s * frames - 2):s * frames + 2] = False
            equal.append(same.mean())
            away.append(same[:, mask].mean())
            per_cb.append(same.mean(axis=1))
            per_cb_away.append(same[:, mask].mean(axis=1))
            per_copy.append([same[:, c * frames:(c + 1) * frames].mean() for c in range(3)])
            distinct.append(_distinct(clip))
    return {"agree": round(float(np.mean(equal)), 4), "agree_away_from_seams": round(float(np.mean(away)), 4),
            "agree_per_codebook": [round(float(x), 4) for x in np.mean(per_cb, axis=0)],
            "agree_away_from_seams_per_codebook": [round(float(x), 4) for x in np.mean(per_cb_away, axis=0)],
            "agree_per_copy": [round(float(x), 4) for x in np.mean(per_copy, axis=0)],
            "distinct_codes_per_codebook": np.max(distinct, axis=0).tolist(), "clips": n,
            "seconds": round(time.perf_counter() - t0, 1),
            "method": "stand-in encoder (random convs + LSTM) unchanged; each residual stage's 2048 codes drawn "
                      "from these clips' encoder frames; clip codes = encode(clip) whole, as `tokenize` does"}


CHILDREN = {"train": section_train, "generate": section_generate, "clap": section_clap, "loop": section_loop}


# ---------------------------------------------------------------------------------------------- parent

def _machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                  "platform": platform.platform()}
    try:
        info["mem_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError):
        pass
    from importlib import metadata

    for pkg in ("torch", "audiocraft", "numpy", "transformers", "laion-clap"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = None
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        if gpu.returncode == 0 and gpu.stdout.strip():
            info["gpu"] = gpu.stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _child_env(standins: dict, root: Path) -> dict[str, str]:
    """tests/standins_fixture.child_env + tests/test_rehearsal.Rehearsal's variables."""
    env = dict(os.environ)
    env.pop("ZALO_MUSIC_CLAP_CHECKPOINT", None)
    env.update({**standins["environment"],
                "ZALO_MUSIC_DORA_DIR": str(root / "outputs"), "AUDIOCRAFT_DORA_DIR": str(root / "outputs"),
                "ZALO_MUSIC_DATA_DIR": str(root / "data"), "ZALO_MUSIC_MANIFEST_DIR": str(root / "manifests"),
                "ZALO_MUSIC_GIT_SAVE": "0", "PYTHONUNBUFFERED": "1"})
    return env


def _run(cmd: list[str], env: dict, timeout: float, log: Path) -> subprocess.CompletedProcess:
    with open(log, "a") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n")
        fh.flush()
        return subprocess.run(cmd, cwd=PROJECT, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)


def _tail(log: Path, n: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _build_standins(a: argparse.Namespace, log: Path) -> dict:
    out = Path(a.standins)
    if (out / "standins.json").is_file():  # never rebuild someone's folder at another depth
        have = json.loads((out / "standins.json").read_text()).get("depth")
        if have != a.depth:
            raise RuntimeError(f"--standins {out} holds stand-ins of depth {have or 'full'}, this run asks for "
                               f"{a.depth or 'full'}: pass another folder (or --depth {have}, a deviation)")
    cmd = [sys.executable, "-m", "zalo_music.cli", "standins", "--out", str(out)]
    if a.depth:
        cmd += ["--depth", str(a.depth)]
    env = dict(os.environ)
    env.pop("ZALO_MUSIC_CLAP_CHECKPOINT", None)
    t0 = time.time()
    proc = _run(cmd, env, 3600, log)
    if proc.returncode != 0:
        raise RuntimeError(f"zalo-music standins failed ({proc.returncode}):\n{_tail(log)}")
    summary = json.loads((out / "standins.json").read_text())
    if summary.get("depth") != a.depth:
        raise RuntimeError(f"{out}: stand-ins of depth {summary.get('depth')}, asked for {a.depth}")
    return {"summary": summary, "seconds": round(time.time() - t0, 1)}


def _prepare_data(a: argparse.Namespace, env: dict, root: Path, log: Path) -> float:
    src = root / "data" / "demo_source"
    t0 = time.time()
    for args in (["demo-data", "--out", str(src), "--clips", str(a.clips)],
                 ["prepare", "--json", str(src / "demo.json"), "--audio-dir", str(src / "audio"), "--name", DATASET,
                  "--workers", str(min(2, os.cpu_count() or 1))]):
        proc = _run([sys.executable, "-m", "zalo_music.cli", *args], env, 1800, log)
        if proc.returncode != 0:
            raise RuntimeError(f"zalo-music {args[0]} failed ({proc.returncode}):\n{_tail(log)}")
    return round(time.time() - t0, 1)


def _fmt_rss(d: dict) -> str:
    s = f"{d.get('peak_rss_mb', '?'):,}" if isinstance(d.get("peak_rss_mb"), int) else "?"
    if d.get("cuda_max_allocated_mb") is not None:
        s += f" / {d['cuda_max_allocated_mb']:,} cuda"
    return s


def _table(res: dict) -> str:
    rows = ["| section | mode | figure | peak RSS MB (mode) |", "| --- | --- | ---: | ---: |"]
    sec = res["sections"]
    t = sec.get("train", {})
    if "audio" in t:
        for k in ("audio", "tokens"):
            rows.append(f"| train | from {k} (batch {t['batch']}, {t['segment_s']:g}-s segments) | "
                        f"{t[k]['s_per_step']:.2f} s/step (data wait {t[k]['data_wait_s_per_step']:.3f} s) | "
                        f"{_fmt_rss(t[k])} |")
        rows.append(f"| train | tokens vs audio | {t['speedup_tokens_vs_audio']}x faster | "
                    f"process {t['process_peak_rss_mb']:,} |")
    g = sec.get("generate", {})
    if "modes" in g:
        for name, m in g["modes"].items():
            rows.append(f"| generate | {name} ({m['clips']} x {g['duration_s']:g} s) | RTF {m['rtf_wall_per_audio_s']:.3f} "
                        f"({m['speedup_vs_zalo_batch1']}x zalo batch 1) | {_fmt_rss(m)} |")
        rows.append(f"| generate | batched vs MusicGen.generate one at a time | "
                    f"{g['speedup_batched_vs_musicgen_one_at_a_time']}x | process {g['process_peak_rss_mb']:,} |")
    c = sec.get("clap", {})
    if "modes" in c:
        for name, m in c["modes"].items():
            rows.append(f"| clap | HTSAT-base {name} ({m['clips']} clips) | {m['clips_per_s']:.3f} clips/s "
                        f"({m['s_per_clip']:.2f} s/clip) | {_fmt_rss(m)} |")
        rows.append(f"| clap | batched vs one at a time | {c['speedup_batched']}x | "
                    f"process {c['process_peak_rss_mb']:,} |")
    lp = sec.get("loop", {})
    if "agree" in lp:
        p = lp
        rows.append(f"| loop | EnCodec 32 kHz (random), {lp['clips']} clips, tiled x3 vs encode(loop) | "
                    f"{100 * p['agree']:.1f}% equal, {100 * p['agree_away_from_seams']:.1f}% away from seams | "
                    f"{_fmt_rss(lp)} |")
        rows.append(f"| loop | distinct codes per codebook (stand-in as built) | {lp['distinct_codes_per_codebook']}"
                    f"{' DEGENERATE' if 'degenerate' in lp else ''} | |")
        rows.append("| loop | per codebook (all / away from seams) | "
                    + ", ".join(f"{100 * x:.1f}/{100 * y:.1f}%" for x, y in
                                zip(lp["agree_per_codebook"], lp["agree_away_from_seams_per_codebook"], strict=True))
                    + " | |")
        f = lp.get("fitted_codebooks")
        if f:
            rows.append(f"| loop | same, codebooks fitted to the encoder ({f['distinct_codes_per_codebook']} codes) | "
                        f"{100 * f['agree']:.1f}% equal, {100 * f['agree_away_from_seams']:.1f}% away from seams; "
                        f"per copy {', '.join(f'{100 * x:.1f}%' for x in f['agree_per_copy'])}; "
                        "per codebook " + ", ".join(f"{100 * x:.1f}/{100 * y:.1f}%" for x, y in
                                                   zip(f["agree_per_codebook"], f["agree_away_from_seams_per_codebook"],
                                                       strict=True)) + " | |")
    for name, s in sec.items():
        if "error" in s:
            rows.append(f"| {name} | FAILED | {s['error'].splitlines()[0][:160] if s['error'] else '?'} | |")
    return "\n".join(rows)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if nvidia-smi works")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16",
                   help="autocast on CUDA (the recipe's default: bf16); on CPU the solver turns autocast off")
    p.add_argument("--standins", default=None,
                   help="stand-in folder to build or reuse; one built at another depth is refused, not rebuilt "
                        "(default <tmp>/zalo-music-standins-full[-depthN])")
    p.add_argument("--depth", type=int, default=None,
                   help="DEVIATION: cut the stand-in LM/T5/RoBERTa to N layers (default: full depth)")
    p.add_argument("--workdir", default=None, help="data, manifests, token cache and XPs (default: a temp folder)")
    p.add_argument("--json", default=None, help="write every figure here")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per section")
    g = p.add_argument_group("sizes (defaults per device: see DEFAULTS in the script)")
    for name, typ, help_ in (
            ("clips", int, "demo clips prepared (train split ~90%%, valid the rest, at least 8)"),
            ("batch", int, "train batch size"), ("segment", float, "train segment seconds"),
            ("steps", int, "timed train steps per path (split over rounds)"),
            ("rounds", int, "alternating audio/tokens rounds"), ("warmup", int, "untimed steps per path first"),
            ("num_workers", int, "train dataloader workers"),
            ("gen_duration", float, "seconds per generated clip"), ("gen_batch", int, "batched generation size"),
            ("gen_n", int, "descriptions generated batched"),
            ("gen_n_single", int, "descriptions generated one at a time (per one-at-a-time mode)"),
            ("e2e", str, "end-to-end modes with MP3s written: none|single|batched|all"),
            ("clap_n", int, "10-s clips scored batched"), ("clap_batch", int, "CLAP batch size"),
            ("clap_n_single", int, "clips scored one at a time"), ("loop_n", int, "clips of the loop comparison"),
            ("loop_check", int, "clips re-measured with zalo_music.tokens.loop.compare_loop (cross-check)"),
            ("loop_fit", int, "1: also measure with codebooks fitted to the encoder's output (non-degenerate)")):
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None, help=help_)
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_overrides", default="[]", help=argparse.SUPPRESS)
    return p


def _resolve(a: argparse.Namespace) -> argparse.Namespace:
    if a.device is None:
        try:
            ok = subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        a.device = "cuda" if ok else "cpu"
    for k, v in DEFAULTS[a.device].items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.standins is None:
        # Not $ZALO_MUSIC_STANDINS_DIR: the tests keep depth-1 stand-ins there.
        a.standins = str(Path(tempfile.gettempdir())
                         / ("zalo-music-standins-full" + (f"-depth{a.depth}" if a.depth else "")))
    a.standin_overrides = json.loads(a._overrides)
    return a


def _sizes(a: argparse.Namespace) -> dict:
    return {k: getattr(a, k) for k in DEFAULTS["cpu"]}


def _child_main(a: argparse.Namespace) -> int:
    import importlib

    importlib.import_module("zalo_music")  # its environment (USER, audiocraft's team file) before audiocraft
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but torch.cuda.is_available() is False")
    res = CHILDREN[a._child](a)
    res["torch"] = torch.__version__
    if a.device == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)
    Path(a._out).write_text(json.dumps(res, indent=1, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    from zalo_music.runtime import prepare

    prepare()  # entry point: audiocraft's environment and zalo_music's patches before audiocraft is imported
    argv = sys.argv[1:] if argv is None else argv
    a = _resolve(_parser().parse_args(argv))
    if a._child:
        return _child_main(a)
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"--only: unknown sections {unknown}; choose from {SECTIONS}")
    root = Path(a.workdir or tempfile.mkdtemp(prefix="zalo-bench-fullshape-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    log = root / "bench_fullshape.log"
    started = time.time()
    result: dict = {
        "command": shlex.join([sys.executable, str(Path(__file__).resolve().relative_to(PROJECT))
                               if Path(__file__).resolve().is_relative_to(PROJECT) else __file__, *argv]),
        "cwd": os.getcwd(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": _machine(),
        "load_average_start": os.getloadavg(), "device": a.device, "dtype": a.dtype,
        "recipe": RECIPE, "standins": a.standins, "depth": a.depth or "full", "sizes": _sizes(a),
        "workdir": str(root), "log": str(log), "sections": {},
        "notes": ["stand-ins: real architectures, random weights; timings do not depend on values, scores and "
                  "the loop agreement do",
                  "RTF = wall seconds / seconds of audio produced (lower is faster)"],
    }
    if a.depth:
        result["notes"].append(f"DEVIATION: stand-in LM/T5/RoBERTa cut to {a.depth} layer(s) (--depth)")
    if a.device == "cpu":
        result["notes"].append("reduced CPU sizes (see `sizes`): the recipe trains 10-s segments at batch 16 and "
                               "generates 10-s clips; these are for side-by-side ratios on a small CPU")

    def save() -> None:
        if a.json:
            Path(a.json).write_text(json.dumps(result, indent=1, default=str))

    try:
        built = _build_standins(a, log)
        result["standins_build_s"] = built["seconds"]
        standins = built["summary"]
        env = _child_env(standins, root)
        if {"train", "loop"} & set(only):
            result["data_prepare_s"] = _prepare_data(a, env, root, log)
    except Exception:
        result["error"] = traceback.format_exc()
        save()
        print(result["error"], file=sys.stderr)
        return 1
    for name in only:
        out = root / f"{name}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--_child", name, "--_out", str(out),
               "--_overrides", json.dumps(standins["overrides"]), "--device", a.device,
               "--standins", a.standins]
        t0 = time.time()
        load0 = os.getloadavg()
        print(f"[bench_fullshape] {name} ...", flush=True)
        try:
            proc = _run(cmd, env, a.timeout, log)
            if proc.returncode != 0 or not out.is_file():
                tail = _tail(log, 6000)
                cause = [ln for ln in tail.splitlines() if ln[:1].isalpha() and ("Error" in ln.split(":")[0]
                                                                                 or "Exception" in ln.split(":")[0])]
                why = cause[-1] if cause else (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                                               else "no result file")
                raise RuntimeError(f"child exited {proc.returncode}: {why}\n{tail}")
            result["sections"][name] = json.loads(out.read_text())
        except Exception as exc:
            err = traceback.format_exc() if not isinstance(exc, RuntimeError) else str(exc)
            result["sections"][name] = {"error": err}
        result["sections"][name]["section_wall_s"] = round(time.time() - t0, 1)
        result["sections"][name]["load_average_start_end"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
        print(f"[bench_fullshape] {name}: {result['sections'][name]['section_wall_s']} s"
              + (" FAILED" if "error" in result["sections"][name] else ""), flush=True)
        save()
    result["total_s"] = round(time.time() - started, 1)
    result["load_average_end"] = os.getloadavg()
    save()
    print(_table(result))
    print(json.dumps(result, indent=1, default=str))
    return 0 if not any("error" in s for s in result["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
