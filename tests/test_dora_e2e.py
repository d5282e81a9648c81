"""Real `dora` commands on the tiny CPU recipe, in child processes, asserting on what they wrote."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers.dora import TINY_ARGV, run_dora

pytestmark = pytest.mark.e2e


def test_tiny_run_writes_train_and_valid_metrics(tiny_xp):
    history = tiny_xp["history"]
    assert len(history) == 2  # optim.epochs=2
    for epoch in history:
        assert {"train", "valid"} <= set(epoch)
        assert epoch["train"]["ce"] > 0 and epoch["valid"]["ce"] > 0
    assert history[-1]["train"]["ce"] < history[0]["train"]["ce"]  # it learns something
    assert "evaluate" in history[-1] and "generate" in history[-1]
    assert (tiny_xp["folder"] / "checkpoint.th").is_file()
    samples = [p for p in (tiny_xp["folder"] / "samples").rglob("*.wav") if "reference" not in p.parts]
    assert samples, "the generate stage wrote no sample"
    assert f"XP {tiny_xp['sig']}" in tiny_xp["log"]  # the XP folder is printed at start


def test_rerun_resumes_instead_of_restarting(tiny_xp):
    before = (tiny_xp["folder"] / "history.json").read_text()
    proc = run_dora("run", *TINY_ARGV)
    out = proc.stdout + proc.stderr
    assert "Loading existing checkpoint" in out
    assert "Train | Epoch" not in out  # nothing retrained: both epochs were done
    assert json.loads((tiny_xp["folder"] / "history.json").read_text()) == json.loads(before)


def test_dora_info_prints_metrics(tiny_xp):
    proc = run_dora("info", "-f", tiny_xp["sig"], "-m")
    out = proc.stdout + proc.stderr
    m = re.search(r"Metrics\[(\d+)\]: (\{.*\})", out)
    assert m and int(m.group(1)) == 2
    last = json.loads(m.group(2))
    assert last["valid"]["ce"] == pytest.approx(tiny_xp["history"][-1]["valid"]["ce"])


def test_continue_from_sig_loads_our_xp(tiny_xp):
    # one update: what is checked is where the weights come from, not the training (test_tiny_run_...)
    argv = [*TINY_ARGV, f"continue_from=//sig/{tiny_xp['sig']}", "optim.epochs=1", "optim.updates_per_epoch=1",
            "generate.every=100", "evaluate.every=100", "dataset.generate.num_samples=2",
            "generate.lm.gen_duration=1"]
    proc = run_dora("run", *argv)
    out = proc.stdout + proc.stderr
    assert "Continuing from provided checkpoint" in out
    assert str(tiny_xp["folder"] / "checkpoint.th") in out


def test_grid_dry_run_lists_signatures():
    from grids.zalo_ft_lr_epochs import EPOCHS, LRS
    from zalo_music.train import main

    proc = run_dora("grid", "zalo_ft_lr_epochs", "--dry_run", "--init")
    out = proc.stdout + proc.stderr
    expected = {
        main.get_xp(["solver=zalo/musicgen_small_ft", "dset=zalo/prepared", f"optim.lr={lr}",
                     f"optim.epochs={ep}"]).sig
        for lr in LRS for ep in EPOCHS
    }
    assert len(expected) == len(LRS) * len(EPOCHS) >= 6
    listed = set(re.findall(r"\b([0-9a-f]{8})\b", out))
    assert expected <= listed, out


def _warning_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if re.search(r"warning", ln, re.I)]


def test_dora_run_of_a_recipe_shows_no_upstream_warning(tiny_xp):
    assert not _warning_lines(tiny_xp["log"]), _warning_lines(tiny_xp["log"])[:5]


def test_debug_shows_the_warnings_the_filters_hide(tiny_xp):
    """The same `dora info` is quiet by default and shows dora's Hydra14MigrationWarning with ZALO_MUSIC_DEBUG=1:
    the silence comes from `quiet.FILTERS`, not from the warning having gone away upstream."""
    quiet = run_dora("info", "-f", tiny_xp["sig"])
    loud = run_dora("info", "-f", tiny_xp["sig"], env={"ZALO_MUSIC_DEBUG": "1"})
    assert not _warning_lines(quiet.stdout + quiet.stderr)
    assert "Hydra14MigrationWarning" in loud.stdout + loud.stderr


def test_quickstart_first_run_is_quiet_and_ends_with_a_metrics_table(tmp_path):
    """The README's first command as a newcomer sees it (fresh data and XP folders): no line says "warning", and
    it ends with the XP's metrics table and the raw `dora info` command."""
    import os
    import subprocess
    import sys

    from tests.helpers import PROJECT

    env = dict(os.environ, ZALO_MUSIC_DORA_DIR=str(tmp_path / "o"), AUDIOCRAFT_DORA_DIR=str(tmp_path / "o"),
               ZALO_MUSIC_DATA_DIR=str(tmp_path / "d"), ZALO_MUSIC_MANIFEST_DIR=str(tmp_path / "m"))
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run([sys.executable, "-m", "zalo_music.cli", "quickstart", "--clips", "16",
                           "optim.updates_per_epoch=2"], cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert not _warning_lines(out), _warning_lines(out)[:5]
    errors = [ln for ln in out.splitlines() if re.search(r"\berror\b", ln, re.I)]  # e.g. a C decoder's stderr
    assert not errors, errors[:5]
    table = proc.stdout[proc.stdout.index("(raw metrics: dora -P zalo_music info -f "):]
    header, row = table.splitlines()[1:3]
    assert header.split()[:3] == ["sig", "epochs", "valid", ] and "2/2" in row.split()
    assert float(row.split()[3]) > 0  # the valid ce of the run just trained
    assert proc.stdout.rstrip().splitlines()[-1].startswith("quickstart done in ")
