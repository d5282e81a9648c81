"""The lr x epochs sweep on the tiny CPU recipe and the demo data: the grid that tests and demos run for real.

    zalo-music grid-local zalo_tiny_lr_epochs            # runs all 6 XPs on this machine, then prints the table
    dora -P zalo_music grid zalo_tiny_lr_epochs --dry_run --init
"""

from __future__ import annotations

from ._explorers import ZaloExplorer

LRS = (5e-4, 1e-3, 2e-3)
EPOCHS = (1, 2)


@ZaloExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, partition="cpu")
    launcher.bind_({"solver": "zalo/tiny", "dset": "zalo/demo", "optim.updates_per_epoch": 2,
                    "generate.every": 100, "evaluate.every": 100})
    for lr in LRS:
        for epochs in EPOCHS:
            launcher({"optim.lr": lr, "optim.epochs": epochs})
