"""Each classic trainer option has a visible effect on the real solver (built in-process, tiny recipe)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import PROJECT

#: 2-s segments of the 10-s demo clips: what these tests check (optimizer steps, which weights move, condition
from tests.helpers.dora import run_dora

#: dropout, best state) does not depend on the segment length, and each training step is ~5x cheaper.
BASE = ["solver=zalo/tiny", "dset=zalo/demo", "optim.updates_per_epoch=4", "optim.epochs=1",
        "dataset.batch_size=4", "dataset.segment_duration=2"]


@pytest.fixture(scope="module")
def make_solver(demo_manifests):
    """Build the real solver of `BASE + overrides` in this process (its debug codec is loaded from its file)."""
    from audiocraft import train as ac_train

    from zalo_music.train import main

    def make(*extra: str):
        xp = main.get_xp([*BASE, *extra])
        return ac_train.get_solver_from_xp(xp, restore=False)

    return make


def _train_one_epoch(solver) -> None:
    solver.run_stage("train", solver.train)


def test_grad_acc_steps_the_optimizer_half_as_often(make_solver):
    plain, acc = make_solver("zalo.grad_acc=1"), make_solver("zalo.grad_acc=2")
    _train_one_epoch(plain)
    _train_one_epoch(acc)
    assert plain.optimizer_steps == 4 and acc.optimizer_steps == 2
    assert plain.lr_scheduler.last_epoch == 4 and acc.lr_scheduler.last_epoch == 2


def test_grad_acc_step_reports_what_audiocrafts_step_does(make_solver):
    """Deadlock checkpoints, grad_norm and grad_scale: the accumulation step keeps upstream's step's reports."""
    seen = {}
    for acc in (1, 2):
        solver = make_solver(f"zalo.grad_acc={acc}")
        solver.scaler = torch.amp.GradScaler("cpu", enabled=False)  # what fp16 autocast builds, inert on CPU
        calls: list[str] = []
        solver.deadlock_detect.update = calls.append
        reported: list[set] = []
        step = solver.run_step

        def spy(idx, batch, metrics, step=step, reported=reported):
            out = step(idx, batch, metrics)
            reported.append(set(out))
            return out

        solver.run_step = spy
        _train_one_epoch(solver)
        seen[acc] = calls, reported
    (plain_calls, plain_metrics), (acc_calls, acc_metrics) = seen[1], seen[2]
    assert plain_calls.count("optim") == 4 and acc_calls.count("optim") == 2
    assert set(acc_calls) == set(plain_calls)  # the loop's own checkpoints plus the step's
    assert {"tokens_and_conditions", "loss", "scale", "backward", "optim"} <= set(acc_calls)
    assert {"grad_scale", "grad_norm", "ce", "lr"} <= plain_metrics[0]
    assert {"grad_scale", "grad_norm", "ce", "lr"} <= acc_metrics[1]  # the micro-batch that stepped
    assert "grad_scale" not in acc_metrics[0]  # the one that only accumulated


def test_grad_acc_refuses_fsdp(demo_manifests):
    from audiocraft import train as ac_train

    from zalo_music.train import main

    # Built as `dora run` builds it (`get_solver_from_xp`, the fixture's way, always turns FSDP off).
    xp = main.get_xp([*BASE, "zalo.grad_acc=2", "fsdp.use=true"])
    with xp.enter(), pytest.raises(ValueError, match="zalo.grad_acc=2 does not support fsdp.use=true"):
        ac_train.get_solver(xp.cfg)


def test_tune_text_leaves_every_lm_weight_unchanged(make_solver):
    solver = make_solver("zalo.tune_text=true")
    before = {k: v.detach().clone() for k, v in solver.model.state_dict().items()}
    _train_one_epoch(solver)
    after = solver.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    assert all(k.startswith("condition_provider.") and ".output_proj." in k for k in changed), changed
    trainable = {n for n, p in solver.model.named_parameters() if p.requires_grad}
    assert trainable == {k for k in before if ".output_proj." in k and k.startswith("condition_provider.")}


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_use_cfg_drops_conditions_at_the_configured_rate(make_solver, p):
    from audiocraft.modules.conditioners import ConditioningAttributes

    solver = make_solver(f"classifier_free_guidance.training_dropout={p}")
    dropout = solver.model.cfg_dropout
    dropout.train()
    n = 2000
    dropped = 0
    for _ in range(n):
        attrs = [ConditioningAttributes(text={"description": "a calm piano melody"})]
        dropped += dropout(attrs)[0].text["description"] is None
    # batch-level dropout as audiocraft does it: each batch loses its conditions with probability p
    assert abs(dropped / n - p) < 4 * (p * (1 - p) / n) ** 0.5 + 1e-9


def test_no_label_trains_without_text(make_solver):
    from audiocraft.modules.conditioners import ConditioningAttributes

    solver = make_solver("+attribute_dropout.text.description=1.0")
    att = solver.model.att_dropout
    att.train()
    out = att([ConditioningAttributes(text={"description": f"text {i}"}) for i in range(32)])
    assert all(a.text["description"] is None for a in out)


@pytest.mark.e2e
def test_train_front_end_makes_an_xp_dora_sees(demo_source, tmp_path):
    """musicgen_trainer layout (wav/mp3 + txt) -> prepare -> dora run; save_step checkpoints; dora info."""
    data = json.loads(demo_source.read_text())
    folder = tmp_path / "clips"
    folder.mkdir()
    for key in list(data)[:24]:
        (folder / key).write_bytes((demo_source.parent / "audio" / key).read_bytes())
        (folder / key).with_suffix(".txt").write_text(data[key])
    cmd = [sys.executable, "-m", "zalo_music.cli", "train", "--dataset_path", str(folder), "--model_id", "tiny",
           "--epochs", "1", "--batch_size", "4", "--grad_acc", "2", "--save_step", "1", "--name", "clips16",
           "generate.every=100", "evaluate.every=100",
           # sizes only (the last "epoch" runs evaluate and generate whatever `every` says)
           "dataset.valid.num_samples=4", "dataset.evaluate.num_samples=4", "dataset.generate.num_samples=1",
           "generate.lm.gen_duration=1"]
    proc = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sig = re.search(r"XP ([0-9a-f]{8}) done", proc.stdout).group(1)
    info = run_dora("info", "-f", sig, "-m")
    out = info.stdout + info.stderr
    assert re.search(r"Metrics\[(\d+)\]", out)
    folder_xp = Path(re.search(r"Folder is (\S+)", out).group(1))
    history = json.loads((folder_xp / "history.json").read_text())
    # prepare holds out at least 8 clips; train clips / (4 x 2) optimizer steps per pass; --save_step 1 -> an
    # "epoch" per step
    report = json.loads((Path(os.environ["ZALO_MUSIC_MANIFEST_DIR"]) / "clips16" / "report.json").read_text())
    steps = -(-report["splits"]["train"] // 8)
    assert steps >= 2 and len(history) == steps
    assert sorted(p.name for p in folder_xp.glob("checkpoint_*.th")) == [f"checkpoint_{i}.th" for i in
                                                                         range(1, steps + 1)]


def test_best_state_follows_the_highest_clas(make_solver):
    """zalo.eval.best_metric=clas: the best state is the one with the highest evaluate CLAS so far."""
    solver = make_solver("zalo.eval.clas=true", "zalo.eval.best_metric=clas")
    assert solver.best_metric_name is None and solver.best_choice == "clas"

    def set_weights(v: float) -> None:
        with torch.no_grad():
            for p in solver.model.parameters():
                p.fill_(v)

    def best_value() -> float:
        state = solver.best_state.state_dict()["model"]
        return float(next(iter(state.values())).flatten()[0])

    steps = [  # (weights, pending evaluate clas or None, new best?, best weights after)
        (0.1, None, True, 0.1),   # no CLAS known yet: track the last state
        (0.2, 0.5, True, 0.2),
        (0.3, 0.4, False, 0.2),   # worse CLAS: keep the 0.2 weights
        (0.4, None, False, 0.2),  # an epoch without evaluate does not move the best state
        (0.5, 0.6, True, 0.5),
    ]
    for weights, clas, new_best, best in steps:
        set_weights(weights)
        solver._pending_metrics = {"valid": {"ce": 1.0}, **({"evaluate": {"clas": clas}} if clas else {})}
        solver._update_best_by_clas()
        assert solver._new_best_state == new_best
        assert best_value() == pytest.approx(best)
        solver.history.append(dict(solver._pending_metrics))


def test_best_by_clas_needs_clas_evaluation(make_solver):
    with pytest.raises(ValueError, match="zalo.eval.clas=true"):
        make_solver("zalo.eval.best_metric=clas")
