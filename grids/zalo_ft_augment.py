"""30-s augmentation comparison of the fine-tune recipe: native 10-s clips vs looped 30-s vs concatenated 30-s.

    zalo-music prepare --json train.json --audio-dir clips/ --name zalo_train --augment none,loop,concat
    dora -P zalo_music grid zalo_ft_augment --dry_run --init

Each dset sets `zalo.clip_duration`, which the recipe uses as `dataset.segment_duration` (10 or 30 s), and
generation stays 10 s, so the grid table compares what the competition scores.
"""

from __future__ import annotations

from audiocraft.environment import AudioCraftEnvironment

from ._explorers import ZaloExplorer

DSETS = ("zalo/prepared", "zalo/prepared_loop30", "zalo/prepared_concat30")


@ZaloExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, partition=AudioCraftEnvironment.get_slurm_partitions(["global"]))
    launcher.bind_({"solver": "zalo/musicgen_small_ft", "zalo.eval.clas": True})
    for dset in DSETS:
        launcher({"dset": dset})
