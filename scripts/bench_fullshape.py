"""Full-shape figures of the real recipe, side by side in one run: training, generation, CLAP, token loop.

The real recipe (`solver=zalo/musicgen_small_ft`: musicgen-small-shaped LM of 420M parameters, EnCodec 32 kHz,
t5-base; CLAP HTSAT-base in laion's checkpoint layout) runs against the project's stand-ins
(`zalo-music standins`: real architectures, configs and file formats, random weights; built here unless
`--standins DIR` is given), offline, with the environment the rehearsal tests give their children
(tests/test_rehearsal.py). Timings do not depend on weight values; scores and the loop agreement do.

Sections (`--only`), each in its own child process (its module in `scripts/fullshape/`), so its peak memory is
its own:

- `train`: seconds per training step (audiocraft's `run_step`: forward, backward, AdamW, scheduler) from audio
  (`dset=zalo/prepared`: decode + EnCodec encode inside the step) vs from tokens (`train_from=tokens`,
  the cache `zalo-music tokenize` writes). ONE solver holds the model and optimizer; the two paths feed it
  batches from their own train loaders (the token solver dispatches on the batch type), in alternating rounds
  after untimed warm-up steps. Same batch size and segment duration.
- `levers`: the training-speed levers of `zalo.speed.*` (text-encoder cache, fused AdamW, `torch.compile` with
  `--levers-compile 1`), each off and on, switched in place on one solver from tokens, in alternating rounds.
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
    .venv/bin/python scripts/bench_fullshape.py --only levers --json /tmp/levers.json   # speed levers (~10 min CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import benchkit
from fullshape.common import DATASET, DEFAULTS, RECIPE
from fullshape.report import table

PROJECT = benchkit.PROJECT
SECTIONS = ("train", "levers", "generate", "clap", "loop")
def _child_env(standins: dict, root: Path) -> dict[str, str]:
    """tests/helpers/standins_fixture.child_env + tests/test_rehearsal.Rehearsal's variables."""
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
            ("loop_fit", int, "1: also measure with codebooks fitted to the encoder's output (non-degenerate)"),
            ("levers_compile", int, "1: the levers section also measures torch.compile (compiling takes minutes)"),
            ("profile_steps", int, "training steps the levers section profiles in the baseline and all-on modes")):
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
    module = importlib.import_module(f"fullshape.{a._child}")
    res = getattr(module, f"section_{a._child}")(a)
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
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": benchkit.machine(),
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
        if {"train", "levers", "loop"} & set(only):
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
    print(table(result))
    print(json.dumps(result, indent=1, default=str))
    return 0 if not any("error" in s for s in result["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
