"""MusicGen solver for zalo-music XPs (`solver: zalo_musicgen`).

Subclasses audiocraft's `MusicGenSolver`: training, checkpointing, generation and the XP history are
audiocraft's. What this class adds: start-up checks, so a bad recipe fails before the first step, and the Zalo
metrics (CLAP, FAD, FAS, CLAS) in the evaluate stage when `zalo.eval.clas` is true
(`zalo_music.metrics.solver_eval`). They land in the evaluate metrics, hence in history.json and `dora info -m`.
"""

from __future__ import annotations

import logging

import omegaconf
import torch
from audiocraft.solvers.musicgen import MusicGenSolver

from zalo_music.metrics.errors import MetricUnavailableError
from zalo_music.solvers.classic_options import ClassicOptionsMixin
from zalo_music.solvers.lora import LoraMixin
from zalo_music.solvers.speed import SpeedMixin
from zalo_music.solvers.throughput import ThroughputMixin
from zalo_music.solvers.tokens import TokenDataMixin

logger = logging.getLogger(__name__)


class ZaloMusicGenSolver(ThroughputMixin, SpeedMixin, TokenDataMixin, ClassicOptionsMixin, LoraMixin,
                         MusicGenSolver):
    """audiocraft's MusicGen solver plus zalo-music's start-up checks and the Zalo evaluate metrics.

    With `zalo.eval.clas: true` the evaluate stage also reports clap, fad, fas and clas
    (`zalo_music.metrics.solver_eval`). A metric that cannot run (`MetricUnavailableError`, e.g. a missing CLAP
    checkpoint) is logged at start-up and, during training, re-raised only once the epoch is committed.

    Args:
        cfg: the composed XP config (`solver=zalo/...`).
    """

    def __init__(self, cfg: omegaconf.DictConfig):
        from zalo_music.metrics.solver_eval import settings_from_cfg

        check_segment_policy(cfg)
        super().__init__(cfg)
        self._clas_settings = settings_from_cfg(cfg)
        if self.best_choice not in ("ce", "none", "clas"):
            raise ValueError(f"zalo.eval.best_metric={self.best_choice!r}: choose ce, none or clas")
        if self.best_choice == "clas" and (self._clas_settings is None or cfg.fsdp.use):
            raise ValueError("zalo.eval.best_metric=clas needs zalo.eval.clas=true (and no FSDP): the best state is "
                             "picked from the evaluate stage's CLAS")
        self._deferred_error: MetricUnavailableError | None = None
        if not cfg.get("execute_only"):
            check_epoch_length(cfg, self.dataloaders.get("train"))
        logger.info("zalo-music XP %s in %s", self.xp.sig, self.xp.folder)
        self._preflight_clas()

    def _preflight_clas(self) -> None:
        # Tell the user at start-up, not after hours of training, that the evaluate stage will fail.
        if self._clas_settings is None:
            return
        from zalo_music.metrics.clap import resolve_checkpoint

        try:
            path = resolve_checkpoint(self._clas_settings.clap)
        except MetricUnavailableError as exc:
            logger.error("zalo.eval.clas is on but the evaluate stage will fail: %s", exc)
        else:
            logger.info("CLAS evaluation on, CLAP checkpoint %s", path)

    @property
    def best_choice(self) -> str:
        """`zalo.eval.best_metric`: ce (audiocraft: lowest valid ce), none (last state), clas (highest CLAS)."""
        choice = self.cfg.zalo.eval.best_metric
        return "none" if choice is None else str(choice)

    @property
    def best_metric_name(self) -> str | None:
        # none: the last state is "best"; clas: chosen by `_update_best_by_clas`, not by audiocraft's min rule.
        return None if self.best_choice in ("none", "clas") else super().best_metric_name

    def _update_best_by_clas(self) -> None:
        """Best state = the weights with the highest evaluate CLAS so far.

        audiocraft keeps the state with the lowest value of a metric every epoch has; CLAS exists only in the
        epochs where the evaluate stage ran, so we track it here. Until a first CLAS is known, the last state is
        kept as best, so a checkpoint always has a best state.
        """
        current = self._pending_metrics.get("evaluate", {}).get("clas")
        previous = [h["evaluate"]["clas"] for h in self.history if "clas" in h.get("evaluate", {})]
        if current is None:
            self._new_best_state = not previous
        else:
            self._new_best_state = not previous or float(current) >= max(previous)
            if self._new_best_state:
                logger.info("New best state with clas=%.4f (was %s)", current,
                            f"{max(previous):.4f}" if previous else "none")
        if self._new_best_state:
            for name in self.best_state.states.keys():
                self.best_state.update(name, self._get_state_source(name))

    def _run_epoch_best_by_clas(self) -> None:
        """audiocraft's epoch order, except that evaluate scores the current weights and picks the best state."""
        from audiocraft.utils.utils import with_rank_rng

        self.run_stage("train", self.train)
        with torch.no_grad():
            with self.swap_ema_state():
                self.run_stage("valid", self.valid)
                if self.should_run_stage("evaluate"):
                    self.run_stage("evaluate", self.evaluate)
                self._update_best_by_clas()
            with self.swap_best_state():
                if self.should_run_stage("generate"):
                    self.run_stage("generate", with_rank_rng()(self.generate))

    def evaluate(self) -> dict:
        """audiocraft's evaluate metrics, plus clap/fad/fas/clas when `zalo.eval.clas` is on."""
        metrics = super().evaluate()
        if self._clas_settings is not None:
            from zalo_music.metrics.solver_eval import evaluate_clas

            self.model.eval()
            with torch.no_grad():
                metrics.update(evaluate_clas(self, self._clas_settings))
        return metrics

    def run_epoch(self) -> None:
        # A metric that cannot run fails the evaluate stage, but only after this epoch's training is committed
        # (checkpoint saved, see `commit`): the error never costs training state.
        try:
            if self.best_choice == "clas":
                self._run_epoch_best_by_clas()
            else:
                super().run_epoch()
        except MetricUnavailableError as exc:
            logger.error("evaluate stage failed at epoch %d: %s", self.epoch, exc)
            self._deferred_error = exc

    def commit(self, save_checkpoints: bool = True) -> None:
        epoch = self.epoch
        super().commit(save_checkpoints)
        if self._deferred_error is not None:
            exc, self._deferred_error = self._deferred_error, None
            raise MetricUnavailableError(
                f"evaluate stage failed at epoch {epoch}: {exc}\nThe training state of epoch {epoch} is saved in "
                f"{self.checkpoint_path()}. Fix the cause, then `dora -P zalo_music run -f {self.xp.sig}` "
                f"continues training, and an eval-only XP scores it: `... continue_from=//sig/{self.xp.sig} "
                "execute_only=evaluate`.") from exc

    def load_from_pretrained(self, name: str) -> dict:
        """`continue_from=//pretrained/<name>`: audiocraft's loader, or a transformers-format MusicGen (folder or
        hub id, converted; audiocraft/solvers/musicgen.py leaves this as a TODO)."""
        from zalo_music.transformers_format import pretrained_lm_state

        return {"best_state": {"model": pretrained_lm_state(name, self.cfg)}}

    def build_model(self) -> None:
        # Seed right before the models are built: a random-init LM (solver=zalo/tiny) is the same for a seed
        # whatever ran before in the process.
        torch.manual_seed(self.cfg.seed)
        super().build_model()  # audiocraft's, then the mixins': they choose what trains (requires_grad)
        self.build_optimizer()

    def build_optimizer(self) -> None:
        """The optimizer and schedule, built once after every mixin chose what trains (LoRA adapters,
        `zalo.tune_text`), so the result does not depend on the mixins' order.

        audiocraft's own (its parameter groups, `optim.emb_lr`) stays when everything trains and every batch is
        an optimizer step; otherwise AdamW & co. over the trainable weights, with the schedule counted in optimizer
        steps (`zalo.grad_acc` micro-batches each).
        """
        from audiocraft.solvers import builders

        frozen = any(not p.requires_grad for p in self.model.parameters())
        if not frozen and self.grad_acc == 1:
            return
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = builders.get_optimizer(params, self.cfg.optim)
        steps = max(1, self.total_updates // self.grad_acc)
        self.lr_scheduler = builders.get_lr_scheduler(self.optimizer, self.cfg.schedule, steps)


def check_segment_policy(cfg: omegaconf.DictConfig) -> None:
    """Refuse recipes that would train mostly on zero padding.

    audiocraft zero-pads any clip shorter than `segment_duration` down to `min_segment_ratio` of it; with the
    default 30-s segments and 0.8 ratio, a 10-s Zalo clip would be trained as 10 s of music and 20 s of silence.

    Args:
        cfg: the composed XP config.
    Raises:
        ValueError: when `dataset.segment_duration` exceeds the dataset's declared clip duration.
    """
    clip = cfg.zalo.clip_duration
    segment = cfg.dataset.segment_duration
    if segment is None:
        return
    if float(segment) > float(clip) + 1e-6:
        raise ValueError(
            f"dataset.segment_duration={segment} is longer than the clips of this dataset "
            f"(zalo.clip_duration={clip}): the model would train on padded silence. Use "
            f"dataset.segment_duration={clip}, or a dset prepared with 30-s augmentation.")


def check_epoch_length(cfg: omegaconf.DictConfig, loader) -> None:
    """Refuse a train loader shorter than an epoch.

    audiocraft runs `optim.updates_per_epoch` steps by iterating the train loader once and stops early, without
    a word, when the loader runs out (`StandardSolver.common_train_valid`); its length is
    `dataset.train.num_samples / batch_size` (per process).

    Args:
        cfg: the composed XP config.
        loader: the train DataLoader (None: nothing to check).
    Raises:
        ValueError: when the loader has fewer batches than `optim.updates_per_epoch`.
    """
    updates = cfg.optim.get("updates_per_epoch")
    if loader is None or not updates:
        return
    try:
        batches = len(loader)
    except TypeError:  # an iterable without a length: nothing to compare
        return
    if batches < int(updates):
        raise ValueError(
            f"the train loader has {batches} batches (dataset.train.num_samples="
            f"{cfg.dataset.train.get('num_samples')}, dataset.batch_size={cfg.dataset.batch_size}) but "
            f"optim.updates_per_epoch={updates}: every epoch would stop after {batches} steps. Set "
            f"dataset.train.num_samples>={int(updates) * int(cfg.dataset.batch_size)}.")
