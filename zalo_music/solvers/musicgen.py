"""MusicGen solver for zalo-music XPs (`solver: zalo_musicgen`).

Subclasses audiocraft's `MusicGenSolver`: training, checkpointing, generation and the XP history are
audiocraft's. What this class adds is checked at start-up so a bad recipe fails before the first step.
"""

from __future__ import annotations

import logging

import omegaconf
import torch
from audiocraft.solvers.musicgen import MusicGenSolver

logger = logging.getLogger(__name__)


class ZaloMusicGenSolver(MusicGenSolver):
    """audiocraft's MusicGen solver plus zalo-music's start-up checks.

    Args:
        cfg: the composed XP config (`solver=zalo/...`).
    """

    def __init__(self, cfg: omegaconf.DictConfig):
        check_segment_policy(cfg)
        super().__init__(cfg)
        logger.info("zalo-music XP %s in %s", self.xp.sig, self.xp.folder)

    def build_model(self) -> None:
        # Seed right before the models are built: audiocraft's debug codec is random-init, and
        # `zalo_music.export` must rebuild the very same one from the XP's seed.
        torch.manual_seed(self.cfg.seed)
        super().build_model()


def check_segment_policy(cfg: omegaconf.DictConfig) -> None:
    """Refuse recipes that would train mostly on zero padding.

    audiocraft zero-pads any clip shorter than `segment_duration` down to `min_segment_ratio` of it; with the
    default 30-s segments and 0.8 ratio, a 10-s Zalo clip would be trained as 10 s of music and 20 s of silence.

    Args:
        cfg: the composed XP config.
    Raises:
        ValueError: when `dataset.segment_duration` exceeds the dataset's declared clip duration.
    """
    clip = cfg.get("zalo", {}).get("clip_duration")
    segment = cfg.dataset.segment_duration
    if clip is None or segment is None:
        return
    if float(segment) > float(clip) + 1e-6:
        raise ValueError(
            f"dataset.segment_duration={segment} is longer than the clips of this dataset "
            f"(zalo.clip_duration={clip}): the model would train on padded silence. Use "
            f"dataset.segment_duration={clip}, or a dset prepared with 30-s augmentation.")
