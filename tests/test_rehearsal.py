"""Rehearsal: the real recipe and the README's commands, run for real against stand-ins of every hub artifact.

`zalo-music standins` builds facebook/musicgen-small, facebook/encodec_32khz, t5-base, roberta-base (+ the
tokenizers laion-clap loads) and the LAION-CLAP music checkpoint with random weights, their real architectures
and file formats, at depth 1 (one transformer layer; everything else full size). Every step below is the
command a user types, in a child process, with the recipe as written plus size overrides only (batch, updates,
sample counts, generated seconds, `device=cpu`, and the stand-in LM's layer count). Heavy steps share one
trained XP. The scores are meaningless: this proves plumbing, not quality (docs/rehearsal.md).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import PROJECT, standins_fixture
from zalo_music.procutil import dora_command

pytestmark = [pytest.mark.rehearsal, pytest.mark.e2e, pytest.mark.slow]

DATASET = "zalo_train"  # the name the grids and the README use
RECIPE = ["solver=zalo/musicgen_small_ft", "dset=zalo/prepared", f"zalo.dataset={DATASET}"]
#: Size overrides only: a CPU, tiny batches and counts, 2-s generations.
SIZE = ["device=cpu", "dataset.batch_size=2", "dataset.num_workers=0", "optim.updates_per_epoch=1",
        "dataset.valid.num_samples=2", "dataset.evaluate.num_samples=2", "dataset.generate.num_samples=1",
        "generate.lm.gen_duration=2", "evaluate.fixed_generation_duration=2", "zalo.eval.batch_size=2"]
SEED_COMMAND = ["solver=musicgen/musicgen_base_32khz", "model/lm/model_scale=small",
                "continue_from=//pretrained/facebook/musicgen-small", "conditioner=text2music",
                "dset=zalo/prepared", f"zalo.dataset={DATASET}"]
#: Seconds and peak RSS of each step, written to <rehearsal root>/timings.json (figures for the docs).
TIMINGS: dict[str, dict] = {}


class Rehearsal:
    """A private project environment (XPs, data, manifests, stand-ins) and a runner for its commands."""

    def __init__(self, root: Path, standins: dict):
        self.root = root
        self.standins = standins
        self.size = SIZE + standins["overrides"]  # transformer_lm.num_layers=<depth>
        self.env = standins_fixture.child_env({
            **standins["environment"],
            "ZALO_MUSIC_DORA_DIR": str(root / "outputs"), "AUDIOCRAFT_DORA_DIR": str(root / "outputs"),
            "ZALO_MUSIC_DATA_DIR": str(root / "data"), "ZALO_MUSIC_MANIFEST_DIR": str(root / "manifests"),
            "ZALO_MUSIC_GIT_SAVE": "0", "PYTHONUNBUFFERED": "1",
        })

    def run(self, name: str, args: list[str], timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
        """Run `python ARGS` (a module CLI) in a child process with this environment; time it."""
        cmd = ["/usr/bin/time", "-f", "MAXRSS_KB=%M CPU_S=%U+%S", sys.executable, *args]
        if not Path("/usr/bin/time").exists():
            cmd = cmd[3:]
        start = time.time()
        proc = subprocess.run(cmd, cwd=PROJECT, env=self.env, capture_output=True, text=True, timeout=timeout)
        usage = [ln.split() for ln in proc.stderr.splitlines() if ln.startswith("MAXRSS_KB=")]
        TIMINGS[name] = {"seconds": round(time.time() - start, 1)}
        if usage:  # peak RSS and CPU seconds (user + system) of the child, from GNU time
            TIMINGS[name]["peak_rss_mb"] = int(usage[-1][0].split("=")[1]) // 1024
            TIMINGS[name]["cpu_s"] = round(sum(float(x) for x in usage[-1][1].split("=")[1].split("+")), 1)
        (self.root / "timings.json").write_text(json.dumps(TIMINGS, indent=1))
        if check and proc.returncode != 0:
            raise AssertionError(f"{name}: {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        return proc

    def cli(self, name: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(name, ["-m", "zalo_music.cli", *args], **kw)

    def dora(self, name: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(name, dora_command(*args)[1:], **kw)  # run() puts its own interpreter first

    def xp_folder(self, sig: str) -> Path:
        return self.root / "outputs" / "xps" / sig


def _sig(output: str) -> str:
    """The XP signature from a `dora run` log ("XP <sig>: <folder>", zalo_music.train)."""
    for line in output.splitlines():
        if "zalo_music.train" in line and " XP " in line:
            return line.split(" XP ", 1)[1].split(":", 1)[0].strip()
    raise AssertionError(f"no XP signature in the log:\n{output[-3000:]}")


def _history(folder: Path) -> list[dict]:
    path = folder / "history.json"
    return json.loads(path.read_text()) if path.exists() else []


@pytest.fixture(scope="module")
def reh(tmp_path_factory) -> Rehearsal:
    """Stand-ins + a 6-clip demo dataset prepared as `zalo_train` through the CLI."""
    start = time.time()
    reuse = os.environ.get("ZALO_MUSIC_STANDINS_DIR")  # else under pytest's basetemp, which pytest prunes
    standins = standins_fixture.build(Path(reuse) if reuse else tmp_path_factory.mktemp("standins"))
    TIMINGS["standins build"] = {"seconds": round(time.time() - start, 1)}
    r = Rehearsal(tmp_path_factory.mktemp("rehearsal"), standins)
    src = r.root / "data" / "demo_source"
    r.cli("demo-data", "demo-data", "--out", str(src), "--clips", "6")
    r.cli("prepare", "prepare", "--json", str(src / "demo.json"), "--audio-dir", str(src / "audio"),
          "--name", DATASET, "--workers", "2")
    return r


@pytest.fixture(scope="module")
def trained(reh: Rehearsal) -> dict:
    """The recipe trained for 2 epochs with CLAS in its evaluate stage: killed after epoch 1, then resumed."""
    argv = [*RECIPE, *reh.size, "optim.epochs=2", "evaluate.every=2", "generate.every=2", "zalo.eval.clas=true"]
    cmd = dora_command("run", *argv)
    start = time.time()
    log_path = reh.root / "first_run.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=PROJECT, env=reh.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        folder, at_kill = None, []
        try:
            while time.time() - start < 600:
                if proc.poll() is not None:
                    break
                text = log_path.read_text()
                if folder is None and "zalo_music.train" in text:
                    folder = reh.xp_folder(_sig(text))
                if folder is not None and len(_history(folder)) >= 1 and (folder / "checkpoint.th").exists():
                    at_kill = _history(folder)
                    break
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # as a crash or a preempted job would end it
            proc.wait()
    first = log_path.read_text()
    TIMINGS["train: first run (killed after epoch 1)"] = {"seconds": round(time.time() - start, 1)}
    assert folder is not None and len(at_kill) == 1, f"epoch 1 never committed:\n{first[-5000:]}"
    resumed = reh.dora("train: resume (dora run -f SIG)", "run", "-f", folder.name)
    return {"sig": folder.name, "folder": folder, "argv": argv, "first_log": first, "at_kill": at_kill,
            "resume_log": resumed.stdout + resumed.stderr, "history": _history(folder)}


def test_standins_resolve_every_hub_name_and_rerun_builds_nothing(reh: Rehearsal):
    """Every hub name the recipe, the exports and laion-clap ask for resolves offline from the stand-ins."""
    hub = Path(reh.standins["environment"]["HF_HUB_CACHE"])
    for repo in ("facebook/musicgen-small", "facebook/encodec_32khz", "t5-base", "roberta-base",
                 "bert-base-uncased", "facebook/bart-base"):
        folder = hub / ("models--" + repo.replace("/", "--"))
        assert (folder / "refs" / "main").is_file(), repo
    assert (Path(reh.standins["environment"]["ZALO_MUSIC_REFERENCE_DIR"]) / "clap"
            / "music_audioset_epoch_15_esc_90.14.pt").is_file()
    import torch
    from omegaconf import OmegaConf

    from zalo_music.standins import hub as standin_hub

    # musicgen-small in the layout audiocraft's loaders read (safe loader: plain tensors and a YAML string)
    snap = standin_hub.snapshot_dir(Path(reh.standins["environment"]["HF_HOME"]), "facebook/musicgen-small")
    pkg = torch.load(snap / "state_dict.bin", map_location="cpu", weights_only=True)
    assert set(pkg) == {"xp.cfg", "best_state", "version", "exported"}
    cfg = OmegaConf.create(pkg["xp.cfg"])
    assert (cfg.transformer_lm.dim, cfg.transformer_lm.n_q, cfg.transformer_lm.card) == (1024, 4, 2048)
    assert cfg.transformer_lm.num_layers == standins_fixture.DEPTH
    assert cfg.conditioners.description.t5.name == "t5-base"
    assert cfg.compression_model_checkpoint == "//pretrained/facebook/encodec_32khz"
    assert pkg["best_state"]["emb.0.weight"].shape == (2049, 1024)  # card + the special token
    comp = torch.load(snap / "compression_state_dict.bin", map_location="cpu", weights_only=True)
    assert comp["pretrained"] == "facebook/encodec_32khz"
    del pkg
    again = reh.cli("standins rerun", "standins", "--out", reh.standins["out"], "--depth",
                    str(standins_fixture.DEPTH))
    assert "0 built, 7 already there" in again.stdout


def test_recipe_trains_resumes_evaluates_clas_and_generates(reh: Rehearsal, trained: dict):
    first, resumed, history = trained["first_log"], trained["resume_log"], trained["history"]
    # the recipe's own checkpoint and codec, through audiocraft's loaders
    assert "Loading a pretrained model" in first
    assert "Getting pretrained compression model from HF facebook/encodec_32khz" in first
    assert "Compression model has 4 codebooks with 2048 cardinality, and a framerate of 50" in first
    assert "autocast off on CPU" in first  # the recipe's autocast: true, adapted to the device
    # as quiet as the tiny recipe: no upstream Python warning in either run (zalo_music/quiet.py)
    assert not re.findall(r"\w+Warning: .*", first + resumed), re.findall(r"\w+Warning: .*", first + resumed)[:5]
    assert "Train Summary | Epoch 1" in first
    # resumed from the XP's own checkpoint: epoch 1 is not trained again, epoch 2 is
    # (a restored solver replays the summaries of past epochs in its log: count the commits instead)
    assert "Loading existing checkpoint" in resumed
    assert "Train Summary | Epoch 2" in resumed and resumed.count("Checkpoint saved") == 1
    assert len(history) == 2 and history[0] == trained["at_kill"][0]
    ev = history[1]["evaluate"]
    for key in ("clap", "fad", "fas", "clas"):
        assert key in ev and ev[key] == ev[key], key  # present and not NaN
    assert ev["clas"] == pytest.approx((ev["clap"] + ev["fas"]) / 2, abs=1e-6)
    generated = [p for p in (trained["folder"] / "samples").rglob("*.mp3") if "reference" not in p.parts]
    assert generated, "the generate stage wrote no sample"


def test_eval_only_xp_scores_the_trained_xp(reh: Rehearsal, trained: dict):
    argv = [*RECIPE, *reh.size, "zalo.eval.clas=true", f"continue_from=//sig/{trained['sig']}",
            "execute_only=evaluate"]
    proc = reh.dora("eval-only XP", "run", *argv)
    folder = reh.xp_folder(_sig(proc.stdout + proc.stderr))
    assert folder.name != trained["sig"]
    ev = _history(folder)[-1]["evaluate"]
    assert {"clap", "fad", "fas", "clas"} <= set(ev)


def test_export_generate_validate_score(reh: Rehearsal, trained: dict):
    export = reh.root / "exports" / trained["sig"]
    reh.cli("export", "export", trained["sig"], str(export))
    entries = [json.loads(ln) for ln in gzip.open(reh.root / "manifests" / DATASET / "valid" / "data.jsonl.gz",
                                                    "rt")]
    descriptions = {}
    for i, e in enumerate(entries[:2]):
        sidecar = Path(e["path"]).with_suffix(".json")
        descriptions[f"{1700000000 + i}.mp3"] = json.loads(sidecar.read_text())["description"]
    test_json = reh.root / "public_test.json"
    test_json.write_text(json.dumps(descriptions))
    out, zip_path = reh.root / "submission", reh.root / "submission.zip"
    reh.cli("generate", "generate", "--model", str(export), "--json", str(test_json), "--out", str(out),
            "--zip", str(zip_path), "--duration", "2", "--batch-size", "2", "--device", "cpu")
    valid = reh.cli("validate-submission", "validate-submission", str(zip_path), "--json", str(test_json),
                    "--duration", "2", "--sample-rate", "32000")
    assert "OK" in valid.stdout
    reh.cli("score", "score", "--audio-dir", str(out), "--json", str(test_json), "--reference",
            str(reh.root / "manifests" / DATASET / "valid"), "--batch-size", "2", "--device", "cpu")
    report = json.loads((out / "score.json").read_text())
    assert "clas" in json.dumps(report)


def test_tokenize_with_encodec_32khz_and_train_from_tokens(reh: Rehearsal):
    tok = reh.cli("tokenize", "tokenize", "solver=zalo/musicgen_small_ft", "dset=zalo/prepared",
                  *reh.standins["overrides"], "--dataset", DATASET, "--batch-size", "4", "--quiet")
    assert "facebook_encodec_32khz" in tok.stdout
    proc = reh.dora("train from tokens", "run", "solver=zalo/musicgen_small_ft", "dset=zalo/prepared", "train_from=tokens",
                    f"zalo.dataset={DATASET}", *reh.size, "optim.epochs=1")
    out = proc.stdout + proc.stderr
    assert "Train Summary | Epoch 1" in out
    assert _history(reh.xp_folder(_sig(out)))[0]["train"]["ce"] > 0


def test_trainer_front_end_model_id_small(reh: Rehearsal):
    """`zalo-music train --model_id small` (no CUDA here: it adds device=cpu itself)."""
    src = reh.root / "data" / "demo_source"
    folder = reh.root / "trainer_clips"
    folder.mkdir()
    descriptions = json.loads((src / "demo.json").read_text())
    keep = dict(list(descriptions.items())[:4])
    for key in keep:
        shutil.copy(src / "audio" / key, folder / key)
    (folder / "clips.json").write_text(json.dumps(keep))
    proc = reh.cli("zalo-music train --model_id small", "train", "--dataset_path", str(folder),
                   "--model_id", "small", "--epochs", "1", "--batch_size", "2", "--grad_acc", "1",
                   "--workers", "1", *[a for a in reh.size if not a.startswith(("device=", "dataset.batch_size",
                                                                               "optim.updates_per_epoch"))])
    out = proc.stdout + proc.stderr
    assert "adding device=cpu" in out and " done -> " in out
    assert "Train Summary | Epoch 1" in out


LORA_CHECK = r"""
import json, sys
from zalo_music.runtime import prepare
prepare()  # its environment and safe-load allow-list before audiocraft's import
import torch
from audiocraft.models.loaders import load_lm_model_ckpt
from zalo_music.solvers.lora import merged_lm_state

pkg = torch.load(sys.argv[1], map_location="cpu", weights_only=True)  # zalo_music allow-lists audiocraft's types
merged = merged_lm_state(pkg)
base = load_lm_model_ckpt("facebook/musicgen-small")["best_state"]  # the stand-in's weights, from the hub cache
targets = tuple(f"{t}.weight" for t in pkg["xp.cfg"]["zalo"]["lora"]["targets"])
changed = sorted(k for k in base if not torch.equal(merged[k], base[k]))
print("LORA=" + json.dumps({"keys_match": sorted(merged) == sorted(base), "changed": changed,
                            "targeted": sorted(k for k in base if k.endswith(targets))}))
"""


def test_lora_xp_of_the_recipe_trains_resumes_and_changes_only_adapters(reh: Rehearsal, trained: dict):
    """`zalo.lora.rank=8` on the real recipe: stopped (SIGTERM) after epoch 1, then resumed; the checkpoint holds
    adapters only, under 5% of the full XP's; merged, only the targeted linears differ from musicgen-small's."""
    import torch

    # Allow-lists what audiocraft pickles (its DictConfig) for the whole process. Not torch's safe_globals()
    # context manager: on exit it removes its types from the allow-list even when they were there before.
    from zalo_music.runtime import prepare

    prepare()  # already run by conftest; said here because this test relies on it
    # No classifier-free-guidance dropout: audiocraft drops the text of a whole batch at once (p 0.2), and with
    # one update per epoch a dropped batch leaves the cross-attention adapters without a gradient.
    argv = [*RECIPE, *reh.size, "optim.epochs=2", "zalo.lora.rank=8", "zalo.lora.alpha=16",
            "classifier_free_guidance.training_dropout=0"]
    start = time.time()
    log_path = reh.root / "lora_first_run.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(dora_command("run", *argv), cwd=PROJECT,
                                env=reh.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        folder = None
        try:
            while time.time() - start < 600 and proc.poll() is None:
                text = log_path.read_text()
                if folder is None and "zalo_music.train" in text:
                    folder = reh.xp_folder(_sig(text))
                if folder is not None and len(_history(folder)) >= 1 and (folder / "checkpoint.th").exists():
                    break
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # a scheduler's preemption notice
            proc.wait(timeout=120)
    TIMINGS["lora: first run (stopped after epoch 1)"] = {"seconds": round(time.time() - start, 1)}
    first = log_path.read_text()
    assert folder is not None and len(_history(folder)) == 1, f"epoch 1 never committed:\n{first[-5000:]}"
    assert "LoRA r=8 alpha=16" in first, first[-3000:]
    resumed = reh.dora("lora: resume", "run", *argv)
    assert "Loading existing checkpoint" in resumed.stdout + resumed.stderr
    assert len(_history(folder)) == 2

    pkg = torch.load(folder / "checkpoint.th", map_location="cpu", weights_only=True)
    assert pkg["model"] and all(".lora_" in k for k in pkg["model"])
    assert all(".lora_" in k for k in pkg["best_state"]["model"])
    ratio = (folder / "checkpoint.th").stat().st_size / (trained["folder"] / "checkpoint.th").stat().st_size
    assert ratio < 0.05, f"the LoRA checkpoint is {ratio:.1%} of the full one"

    check = reh.run("lora: merged vs musicgen-small", ["-c", LORA_CHECK, str(folder / "checkpoint.th")])
    facts = json.loads(check.stdout.split("LORA=", 1)[1].splitlines()[0])
    assert facts["keys_match"]
    assert facts["targeted"] and facts["changed"] == facts["targeted"]  # every adapted linear, nothing else


GRID_SCRIPT = r"""
import importlib, json, pkgutil, sys
import grids
from zalo_music.train import main
from audiocraft import train as ac_train
from dora.grid import RunGridArgs, run_grid

size = json.loads(sys.argv[1])
out = {}
for info in pkgutil.iter_modules(grids.__path__):  # every grid of the project, present and future
    module = importlib.import_module(f"grids.{info.name}")
    if info.name.startswith("_") or not hasattr(module, "explorer"):
        continue
    name = info.name
    sheeps = run_grid(main, module.explorer, name, args=RunGridArgs(dry_run=True, init=True, silent=True,
                                                                    monitor=False))
    first = sheeps[0].xp
    out[name] = {"xps": len(sheeps), "first": first.sig, "argv": list(first.argv)}
    if "solver=zalo/tiny" in first.argv:  # the demo recipe: built by the e2e tests on the demo data
        continue
    xp = main.get_xp(list(first.argv) + size)
    with xp.enter():
        solver = ac_train.get_solver(xp.cfg)
    out[name]["params"] = sum(p.numel() for p in solver.model.parameters())
    out[name]["batches"] = {k: len(v) for k, v in solver.dataloaders.items()}
    del solver
print("GRIDS=" + json.dumps(out))
"""


def test_every_grid_first_xp_builds(reh: Rehearsal):
    """Every grid composes all its XPs (Dora's dry run); the solver of each real-recipe grid's first XP is built."""
    size = [a for a in reh.size if a.startswith(("device=", "dataset.num_workers", "transformer_lm."))]
    proc = reh.run("grids: dry run + first XP built", ["-c", GRID_SCRIPT, json.dumps(size)])
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("GRIDS="))
    grids = json.loads(line[len("GRIDS="):])
    assert grids["zalo_ft_lr_epochs"]["xps"] == 6 and grids["zalo_tiny_lr_epochs"]["xps"] == 6
    assert grids["zalo_ft_augment"]["xps"] == 3 and grids["zalo_eval_lr_epochs"]["xps"] == 7
    assert {"zalo_ft_lr_epochs", "zalo_ft_augment", "zalo_eval_lr_epochs", "zalo_tiny_lr_epochs"} <= set(grids)
    for name, g in grids.items():
        assert g["xps"] >= 1, name
        if "params" in g and not any("execute_only" in a for a in g["argv"]):
            assert g["batches"]["train"] > 0, name  # the loader that crashed with num_samples: null
    assert grids["zalo_eval_lr_epochs"]["batches"]["evaluate"] > 0  # the baseline: pretrained musicgen-small
    # the fine-tune grids' first XPs hold the musicgen-small LM (cut to the stand-in depth)
    assert grids["zalo_ft_lr_epochs"]["params"] == grids["zalo_eval_lr_epochs"]["params"] > 10_000_000


def test_seed_command_runs_on_cpu_and_warns_about_padding(reh: Rehearsal):
    """The seed's audiocraft recipe: EMA kept on the CPU, autocast off, and the 30-s padding said out loud."""
    # audiocraft's solver has no zalo keys; its generate stage also writes prompted samples (1-s prompts here)
    size = [a for a in reh.size if not a.startswith("zalo.eval.")] + ["generate.lm.prompt_duration=1"]
    proc = reh.dora("seed command (musicgen_base_32khz)", "run", *SEED_COMMAND, *size, "optim.epochs=1")
    out = proc.stdout + proc.stderr
    assert "optim.ema.device cuda -> cpu" in out and "autocast off on CPU" in out
    assert "pads each clip with 20 s of silence (67% of every segment)" in out
    assert "New pattern, time steps: 1500" in out  # 30-s segments at 50 Hz: 20 s of them padding
    assert "Train Summary | Epoch 1" in out
