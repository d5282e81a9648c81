"""LoRA rank x lr sweep of the MusicGen-small fine-tune recipe (docs/lora.md).

    dora -P zalo_music grid zalo_ft_lora --dry_run --init   # list XPs and signatures, no SLURM
    dora -P zalo_music grid zalo_ft_lora                    # submit through SLURM
    zalo-music grid-local zalo_ft_lora --gpus 0,1           # or on local GPUs

Adapters start at zero and want a larger lr than full fine-tuning (`zalo_ft_lr_epochs` sweeps 1e-5..5e-5).
The dataset is `zalo.dataset=zalo_train` (`zalo-music prepare --name zalo_train ...`).
"""

from __future__ import annotations

from audiocraft.environment import AudioCraftEnvironment

from ._explorers import ZaloExplorer

RANKS = (8, 16, 32)
LRS = (1e-4, 3e-4)
BASE = {"solver": "zalo/musicgen_small_ft", "dset": "zalo/prepared"}


def sweep() -> list[dict]:
    """The per-XP overrides of this sweep, in launch order."""
    return [{"zalo.lora.rank": rank, "zalo.lora.alpha": 2 * rank, "optim.lr": lr} for rank in RANKS for lr in LRS]


@ZaloExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, partition=AudioCraftEnvironment.get_slurm_partitions(["team", "global"]))
    launcher.bind_(BASE)
    for overrides in sweep():
        launcher(overrides)
