"""The conditioning-validity tier: every training path learns to follow its descriptions.

Each test trains the tiny recipe for ~150 steps (`solver=zalo/tiny_validity`) on 384 rendered demo clips, whose
audio follows their description (mood -> mode and tempo, instruments -> timbre, drums), then measures the trained
XP with `zalo_music.conditioning`: on held-out clips, the LM's loss with each clip's own description (matched)
must be lower than with another clip's (shuffled), with the bootstrap interval of the gap above zero. Controls
(an untrained model, a run trained without text) must show no gap, so a defect that drops the text or pairs it
with the wrong clip fails here instead of wasting a GPU week. Figures: docs/BENCHMARKS.md ("Conditioning
validity"); set ZALO_MUSIC_VALIDITY_REPORT=FILE to collect each path's report as JSON lines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import (
    PROJECT,
    clap_fixture,  # noqa: F401  (HF stand-in cache: audiocraft's solvers import laion_clap)
)
from tests.helpers.dora import run_dora, xp_of_run

pytestmark = [pytest.mark.validity, pytest.mark.slow, pytest.mark.e2e]

DATASET = "validity"
N_CLIPS = 384           # 303 train / 81 held-out clips (valid fraction 0.2)
DEMO_SEED = 7           # not the session demo's seed 0: other clips, other descriptions
BASE = ["solver=zalo/tiny_validity", "dset=zalo/prepared", f"zalo.dataset={DATASET}"]
TOKENS = [*BASE, "train_from=tokens"]
#: nats/token the gap's interval must clear for a path to count as learning its text: ~1/10 of the full
#: fine-tune's gap. `check-conditioning` alone asks only for an interval above zero; a path whose text reaches
#: the LM through a side door (LoRA adapters on the feed-forward layers only: +0.0007 [+0.0000, +0.0014]) or
#: a manifest with shuffled descriptions (+0.0022 [-0.0002, +0.0048]) must fail here.
MIN_GAP = 0.002


@pytest.fixture(scope="module")
def validity_data(work_root: Path) -> dict:
    """The validity dataset rendered, prepared (plain and concat30) and tokenized once for the module."""
    from zalo_music.data.demo import build_demo
    from zalo_music.data.prepare import prepare
    from zalo_music.tokens.encode import tokenize

    source = build_demo(work_root / "data" / "validity_source", n=N_CLIPS, seed=DEMO_SEED)
    report = prepare(source, source.parent / "audio", DATASET, valid_fraction=0.2, workers=2,
                     augmentations=("none", "concat"), quiet=True)
    tokenize(TOKENS, quiet=True)
    tokenize(["solver=zalo/tiny_validity", "dset=zalo/prepared_concat30", f"zalo.dataset={DATASET}"], quiet=True)
    return {"source": source, "prepare": report, "valid": Path(report["manifests"]) / "valid"}


def _record(path: str, report) -> None:
    out = os.environ.get("ZALO_MUSIC_VALIDITY_REPORT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"path": path, **report.to_dict()}) + "\n")


def train(*argv: str, dora_args: tuple[str, ...] = ()) -> str:
    """`dora run` the XP; its signature."""
    proc = run_dora("run", *dora_args, *argv)
    return xp_of_run(proc.stdout + proc.stderr).name


def measure(path: str, sig: str, valid: Path):
    """check-conditioning of XP `sig` on the held-out 10-s clips, recorded under `path`."""
    from zalo_music.conditioning import check_xp

    report = check_xp(sig, manifest=str(valid))
    print(f"{path}: {report.summary()}")
    _record(path, report)
    return report


def assert_learns(path: str, sig: str, valid: Path, min_gap: float = MIN_GAP) -> None:
    report = measure(path, sig, valid)
    assert report.uses_text and report.shuffled_gap.low > min_gap, f"{path}: {report.summary()}"
    assert report.clips >= 60


def assert_no_gap(path: str, sig: str, valid: Path) -> None:
    """The verdict is negative and the gap is far below the trained paths' (>= 0.0018 nats/token)."""
    report = measure(path, sig, valid)
    assert not report.uses_text and abs(report.shuffled_gap.mean) < 0.001, f"{path}: {report.summary()}"


# Controls: without them a check that always passes would pass everything.

def test_untrained_model_shows_no_gap(validity_data):
    sig = train(*TOKENS, "optim.lr=0", "optim.epochs=1", "optim.updates_per_epoch=1")
    assert_no_gap("control: untrained", sig, validity_data["valid"])


def test_run_trained_without_text_shows_no_gap(validity_data, no_label_xp):
    assert_no_gap("control: --no_label (every description dropped)", no_label_xp, validity_data["valid"])


@pytest.fixture(scope="module")
def no_label_xp(validity_data) -> str:
    """The tokens path trained with every description dropped (`zalo-music train --no_label`'s override)."""
    return train(*TOKENS, "+attribute_dropout.text.description=1.0")


# The training paths.

@pytest.fixture(scope="module")
def tokens_xp(validity_data) -> str:
    return train(*TOKENS)


def test_full_finetune_from_tokens_learns_text(validity_data, tokens_xp):
    """Also through the command: exit 0 and its JSON report."""
    out = validity_data["valid"].parent / "check_tokens.json"
    proc = subprocess.run([str(PROJECT / ".venv" / "bin" / "zalo-music"), "check-conditioning", tokens_xp,
                           "--manifest", str(validity_data["valid"]), "--json", str(out)],
                          cwd=PROJECT, text=True, capture_output=True, env=dict(os.environ), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "uses its text" in proc.stdout and json.loads(out.read_text())["uses_text"] is True
    assert_learns("full fine-tuning, from tokens", tokens_xp, validity_data["valid"])


def test_from_audio_learns_text(validity_data):
    # One epoch more than the token paths: its gap after 150 steps is about half theirs (docs/BENCHMARKS.md).
    assert_learns("from audio", train(*BASE, "optim.epochs=4"), validity_data["valid"])


# The 30-s paths get the same 150 steps: the text is learned per (description, clip) pair seen, not per token
# (with a third of the steps, 3x longer sequences learned no text at all).

def test_tokens_loop30_learns_text(validity_data):
    sig = train(*BASE, "train_from=tokens_loop30")
    assert_learns("tokens, loop augmentation (30 s)", sig, validity_data["valid"])


def test_concat30_learns_text(validity_data):
    sig = train("solver=zalo/tiny_validity", "dset=zalo/prepared_concat30", f"zalo.dataset={DATASET}",
                "train_from=tokens")
    assert_learns("--augment concat (30 s)", sig, validity_data["valid"])


def test_grad_accumulation_learns_text(validity_data):
    # Micro-batches of 8, 2 per optimizer step: the base run's 150 steps of 16 clips.
    sig = train(*TOKENS, "zalo.grad_acc=2", "dataset.batch_size=8", "optim.updates_per_epoch=100")
    assert_learns("grad accumulation (2 x 8)", sig, validity_data["valid"])


def test_two_processes_learn_text(validity_data):
    # Each rank draws its own shard (DistributedSampler), 8 clips per rank per step.
    sig = train(*TOKENS, "dataset.batch_size=8", "dataset.train.num_samples=400",
                dora_args=("-d", "--ddp_workers", "2"))
    assert_learns("2 processes (gloo), sharded data", sig, validity_data["valid"])


def test_resumed_run_learns_text(validity_data):
    """Killed after its first epoch's checkpoint, then rerun: it resumes and still learns."""
    from zalo_music.procutil import dora_command
    from zalo_music.train import main

    argv = [*TOKENS, "optim.lr=3.9e-3"]  # its own signature (the base XP is another test's)
    folder = Path(main.dora.dir) / "xps" / main.get_xp(argv).sig
    proc = subprocess.Popen(dora_command("run", *argv), cwd=PROJECT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            history = folder / "history.json"
            if history.is_file() and len(json.loads(history.read_text() or "[]")) >= 1:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)  # as a preempted node: no clean shutdown
    finally:
        proc.wait()
    out = run_dora("run", *argv)
    log = out.stdout + out.stderr
    assert "Loading existing checkpoint" in log and "Train | Epoch 1 |" not in log
    assert_learns("resumed after a kill", folder.name, validity_data["valid"])


def test_lora_adapters_learn_text(validity_data, no_label_xp):
    """From a base that never saw text (the --no_label control): only the adapters can learn to read it. Adapters
    learn with a larger lr than full fine-tuning (at 4e-3 the gap's interval touches zero)."""
    sig = train(*TOKENS, f"continue_from=//sig/{no_label_xp}", "zalo.lora.rank=8", "optim.lr=1e-2")
    assert_learns("LoRA adapters (rank 8) on a text-blind base", sig, validity_data["valid"])


def test_tune_text_learns_text(validity_data, no_label_xp):
    """From the text-blind base, only the conditioner's output projection trains (the LM frozen): one linear
    layer, so a larger lr (at 4e-3 its gap's interval barely clears zero), and half the floor: one layer in front
    of a frozen, text-blind attention learns a tenth of full fine-tuning's gap (+0.0030 [+0.0017, +0.0043])."""
    sig = train(*TOKENS, f"continue_from=//sig/{no_label_xp}", "zalo.tune_text=true", "optim.lr=1e-2")
    assert_learns("tune_text (conditioning projection only) on a text-blind base", sig, validity_data["valid"],
                  min_gap=MIN_GAP / 2)


def test_classic_front_end_learns_text(validity_data, work_root: Path):
    """`zalo-music train` with musicgen_trainer's options and layout (<name>.mp3 + <name>.txt), from tokens:
    `--dry_run` prepares the folder, `tokenize` encodes it, then the front end trains with `train_from=tokens`."""
    from zalo_music.tokens.encode import tokenize

    folder = work_root / "data" / "validity_classic_pairs"
    folder.mkdir(parents=True, exist_ok=True)
    descriptions = json.loads(validity_data["source"].read_text())
    for key, text in descriptions.items():
        clip = folder / key
        if not clip.exists():  # a hard link: prepare refuses symlinks that leave the folder
            os.link(validity_data["source"].parent / "audio" / key, clip)
        clip.with_suffix(".txt").write_text(text)
    name = "validity_classic"
    cmd = [str(PROJECT / ".venv" / "bin" / "zalo-music"), "train", "--dataset_path", str(folder), "--model_id", "tiny",
           "--name", name, "--epochs", "8", "--lr", "4e-3", "--batch_size", "16", "--grad_acc", "1",
           "--warmup_steps", "15", "--use_cfg", "1", "--cfg_p", "0.2", "--workers", "2"]
    extra = ["train_from=tokens", "dataset.num_workers=0"]

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([*cmd, *args], cwd=PROJECT, text=True, capture_output=True, env=dict(os.environ),
                              timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    run("--dry_run")
    tokenize(["solver=zalo/tiny", "dset=zalo/prepared", f"zalo.dataset={name}"], quiet=True)
    proc = run(*extra)
    sig = next(line.split()[3] for line in proc.stdout.splitlines() if line.startswith("zalo-music train: XP "))
    assert_learns("classic front end (zalo-music train)", sig, validity_data["valid"])


def test_sampler_follows_text(validity_data, tokens_xp):
    """Generated codes for drum vs drum-free held-out descriptions look like real clips of their class."""
    from zalo_music.conditioning import load_clips, sampler_follows_text
    from zalo_music.generate import load_model

    model = load_model(f"//sig/{tokens_xp}", device="cpu")
    model.set_generation_params(duration=10.0, top_k=250, cfg_coef=3.0)
    codes, conditions = load_clips(validity_data["valid"], model, 10.0)
    descriptions = [c.text["description"] for c in conditions]
    labels = ["kick" in d for d in descriptions]  # both description templates name the kick when drums play
    n = min(sum(labels), len(labels) - sum(labels))
    prompts = {cls: [d for d, lab in zip(descriptions, labels, strict=True) if lab == cls][:n] for cls in (True, False)}
    report = sampler_follows_text(model, codes, labels, prompts)
    print(f"sampler: {report.summary()}")
    assert n >= 20 and report.p_value < 1e-3, report.summary()
