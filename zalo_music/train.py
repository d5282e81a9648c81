"""Dora entry point: `dora -P zalo_music run|grid|info ...`.

Config root: zalo-music's `config/` (our groups), with audiocraft's own config tree behind it through the
`hydra_plugins.zalo_music_searchpath` plugin, so every audiocraft group and default stays available and
Dora's signatures cover ours.
"""

from __future__ import annotations

# ruff: noqa: I001  (prepare() must run before audiocraft is imported: audiocraft reads its environment then)

import logging
import os
import signal

from zalo_music.runtime import prepare
from zalo_music.env import CONFIG_DIR

# `dora -P zalo_music` imports this module as the entry point: environment (also read by the dset configs'
# ${oc.env:ZALO_MUSIC_MANIFEST_DIR}) and upstream patches, before audiocraft below.
prepare()

import flashy  # noqa: E402
from audiocraft import train as ac_train  # noqa: E402
from audiocraft.environment import AudioCraftEnvironment  # noqa: E402
from audiocraft.utils.cluster import get_slurm_parameters  # noqa: E402
from dora import get_xp, hydra_main  # noqa: E402

from zalo_music.solvers import registry  # noqa: E402

logger = logging.getLogger(__name__)
registry.install()


@hydra_main(config_path=os.path.relpath(CONFIG_DIR, os.path.dirname(__file__)), config_name="config",
            version_base="1.1")
def main(cfg):
    from zalo_music.patches import workers_die_with_parent
    from zalo_music.procutil import exit_on_sigterm

    # DataLoader workers never outlive this process: SIGTERM unwinds cleanly, and each worker also gets a
    # parent-death signal, so that even kill -9 of `dora run` leaves none behind.
    signal.signal(signal.SIGTERM, exit_on_sigterm)  # the XP resumes from its checkpoint
    workers_die_with_parent()
    ac_train.init_seed_and_system(cfg)
    log_name = f"{cfg.execute_only}.log.{{rank}}" if cfg.execute_only else "solver.log.{rank}"
    flashy.setup_logging(level=str(cfg.logging.level).upper(), log_name=log_name)
    # Dora's default backend is NCCL, which CPU processes cannot use (`dora run -d` on CPU is refused by Dora
    # itself; torchrun-style launches would die on `assert backend != 'nccl'` in dora/distrib.py).
    flashy.distrib.init("nccl" if str(cfg.device).startswith("cuda") else "gloo")
    check_batch_sizes(cfg, flashy.distrib.world_size())
    xp = get_xp()
    logger.info("XP %s: %s (XPs live in %s; set ZALO_MUSIC_DORA_DIR to move them)",
                xp.sig, xp.folder, main.dora.dir)
    solver = ac_train.get_solver(cfg)  # dispatches zalo-music solvers first (registry.install)
    if cfg.show:
        solver.show()
        return None
    if cfg.execute_only:
        if not (cfg.execute_inplace or cfg.continue_from is not None):
            raise ValueError(f"execute_only={cfg.execute_only} needs continue_from=<//sig/SIG or path> "
                             "(or execute_inplace=true to run the stage inside this XP).")
        solver.restore(replay_metrics=False)
        solver.run_one_stage(cfg.execute_only)
        return None
    return solver.run()


def check_batch_sizes(cfg, world_size: int) -> None:
    """Refuse batch sizes that do not split evenly over the processes, naming the key.

    audiocraft divides `dataset.batch_size` (global) and each split's own `batch_size` by the world size and only
    asserts divisibility (`audiocraft/train.py`, `get_solver`).

    Args:
        cfg: the composed XP config.
        world_size: number of processes.
    """
    if world_size <= 1:
        return
    keys = {"dataset.batch_size": cfg.dataset.batch_size}
    for split in ("train", "valid", "evaluate", "generate"):
        value = cfg.dataset.get(split, {}).get("batch_size")
        if value is not None:
            keys[f"dataset.{split}.batch_size"] = value
    for key, value in keys.items():
        if int(value) % world_size:
            raise ValueError(f"{key}={value} does not divide over {world_size} processes: batch sizes are global "
                             f"in audiocraft; use a multiple of {world_size}")


main.dora.dir = AudioCraftEnvironment.get_dora_dir()
main.dora.grid_package = "grids"  # the top-level grids/ folder of the project
# audiocraft's config asks `dora grid` to launch from a clean git clone (provenance). ZALO_MUSIC_GIT_SAVE=0 turns
# that off, e.g. on a dev box with uncommitted changes; `zalo-music grid-local` records the git state instead.
if os.environ.get("ZALO_MUSIC_GIT_SAVE") == "0":
    main.dora.git_save = False
main._base_cfg.slurm = get_slurm_parameters(main._base_cfg.slurm)

if __name__ == "__main__":
    main()
