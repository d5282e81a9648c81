"""lr x epochs sweep of the MusicGen-small fine-tune recipe on a prepared Zalo dataset.

    dora -P zalo_music grid zalo_ft_lr_epochs --dry_run --init   # list XPs and signatures, no SLURM
    dora -P zalo_music grid zalo_ft_lr_epochs                    # submit through SLURM

The dataset is `zalo.dataset=zalo_train` (`zalo-music prepare --name zalo_train ...`).
"""

from __future__ import annotations

from audiocraft.environment import AudioCraftEnvironment

from ._explorers import ZaloExplorer

LRS = (1e-5, 2e-5, 5e-5)
EPOCHS = (5, 10)
#: Overrides shared by every XP of the sweep (also bound by the eval grid `zalo_eval_lr_epochs`).
BASE = {"solver": "zalo/musicgen_small_ft", "dset": "zalo/prepared"}


def sweep() -> list[dict]:
    """The per-XP overrides of this sweep, in launch order (the eval grid derives its XPs from them)."""
    return [{"optim.lr": lr, "optim.epochs": epochs} for lr in LRS for epochs in EPOCHS]


@ZaloExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, partition=AudioCraftEnvironment.get_slurm_partitions(["team", "global"]))
    launcher.bind_(BASE)
    for overrides in sweep():
        launcher(overrides)
