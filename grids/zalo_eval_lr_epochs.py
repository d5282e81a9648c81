"""Eval-only XPs for the `zalo_ft_lr_epochs` sweep, plus the un-fine-tuned musicgen-small baseline.

    dora -P zalo_music grid zalo_eval_lr_epochs --dry_run --init   # list the 6 + 1 eval XPs, no SLURM
    dora -P zalo_music grid zalo_eval_lr_epochs                    # submit (after the training XPs finished)

Each eval XP loads the best state of one training XP (`continue_from=//sig/<S>`) and runs only the evaluate
stage with the Zalo metrics on (`zalo.eval.clas=true`): clap, fad, fas and clas land in its history and in the
grid table. The baseline evaluates `//pretrained/facebook/musicgen-small` (the recipe's own `continue_from`).
The lr/epochs overrides are kept on each eval XP only so the table shows which training XP it scores.
"""

from __future__ import annotations

from audiocraft.environment import AudioCraftEnvironment

from . import zalo_ft_lr_epochs as train_grid
from ._explorers import ZaloExplorer

EVAL = {"execute_only": "evaluate", "zalo.eval.clas": True}


def _argv(overrides: dict) -> list[str]:
    return [f"{k}={v}" for k, v in overrides.items()]


def training_signature(overrides: dict) -> str:
    """Dora signature of the `zalo_ft_lr_epochs` XP with these per-XP overrides.

    Args:
        overrides: one element of `zalo_ft_lr_epochs.sweep()`.
    """
    from zalo_music.train import main

    return main.get_xp(_argv({**train_grid.BASE, **overrides})).sig


@ZaloExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, partition=AudioCraftEnvironment.get_slurm_partitions(["team", "global"]))
    launcher.bind_({**train_grid.BASE, **EVAL})
    launcher()  # baseline: the recipe's continue_from, pretrained musicgen-small, no fine-tuning
    for overrides in train_grid.sweep():
        launcher({**overrides, "continue_from": f"//sig/{training_signature(overrides)}"})
