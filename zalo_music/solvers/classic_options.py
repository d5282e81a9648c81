"""The classic musicgen_trainer's training options (`zalo-music train`), as a solver mixin: no second loop.

- `zalo.grad_acc: N` — gradients of N micro-batches are averaged (loss / N) before one optimizer step; the
  lr schedule is built for, and stepped at, optimizer steps. audiocraft's `run_step` steps every batch.
- `zalo.tune_text: true` — only the conditioning projection (`condition_provider.*.output_proj`) trains;
  every other LM weight is frozen (requires_grad False) and left out of the optimizer.

With several ranks (`dora run -d`), every train stage ends with a check that all ranks hold the same weights
(a fingerprint of the LM's parameters, logged per rank and compared across ranks): a gradient that was not
synchronised fails the run at the end of the epoch instead of silently training diverging copies.
"""

from __future__ import annotations

import hashlib
import logging
import typing as tp

import flashy
import torch

logger = logging.getLogger(__name__)


class ClassicOptionsMixin:
    """Mixed into `ZaloMusicGenSolver` before audiocraft's `MusicGenSolver`."""

    cfg: tp.Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: tp.Any
    scaler: tp.Any

    @property
    def grad_acc(self) -> int:
        return int(self.cfg.zalo.grad_acc)

    def build_model(self) -> None:
        if self.grad_acc > 1 and self.cfg.optim.eager_sync:
            logger.info("zalo.grad_acc=%d: gradients are averaged across ranks once per optimizer step "
                        "(optim.eager_sync applies to grad_acc=1 only)", self.grad_acc)
        if self.grad_acc > 1 and self.cfg.fsdp.use:
            # The accumulation step below averages gradients with flashy's `sync_model`; FSDP shards them.
            raise ValueError(f"zalo.grad_acc={self.grad_acc} does not support fsdp.use=true: use zalo.grad_acc=1 "
                             "with FSDP (a larger dataset.batch_size over more GPUs), or fsdp.use=false")
        super().build_model()  # type: ignore[misc]
        if self.cfg.zalo.tune_text:  # chooses what trains; the optimizer is built once, in build_optimizer
            trainable = 0
            for name, p in self.model.named_parameters():
                p.requires_grad_(name.startswith("condition_provider.") and ".output_proj." in name)
                trainable += p.numel() if p.requires_grad else 0
            if not trainable:
                raise ValueError("zalo.tune_text: this LM has no condition_provider output projection to train")
        self.optimizer_steps = 0
        self._micro_batches = 0

    def train(self) -> dict:
        metrics = super().train()  # type: ignore[misc]
        check_ranks_agree(self.model, f"train epoch {self.epoch}")  # type: ignore[attr-defined]
        return metrics

    def run_step(self, idx: int, batch: tp.Any, metrics: dict) -> dict:
        # zalo.speed.sync_free (SpeedMixin) takes this step at grad_acc 1 too: upstream's waits for the device
        sync_free = getattr(self, "sync_free", False)
        if not self.is_training or (self.grad_acc == 1 and not sync_free):  # type: ignore[attr-defined]
            if self.is_training:  # type: ignore[attr-defined]
                self.optimizer_steps += 1
            return super().run_step(idx, batch, metrics)  # type: ignore[misc]
        # audiocraft's MusicGenSolver.run_step with the optimizer part done every grad_acc micro-batches; the
        # same deadlock checkpoints, sync-debug window, grad_scale metric and divergence check. Gradients are
        # averaged across ranks once per optimizer step (flashy's sync_model, upstream's non-eager path):
        # optim.eager_sync would all-reduce every micro-batch, and FSDP is refused in build_model.
        deadlock = self.deadlock_detect  # type: ignore[attr-defined]
        check_sync = idx == 1 and self.device == "cuda"  # type: ignore[attr-defined]
        condition_tensors, audio_tokens, padding_mask = self._prepare_tokens_and_attributes(  # type: ignore
            batch, check_sync)
        deadlock.update("tokens_and_conditions")
        if check_sync:
            torch.cuda.set_sync_debug_mode("warn")
        with self.autocast:  # type: ignore[attr-defined]
            out = self.model.compute_predictions(audio_tokens, [], condition_tensors)  # type: ignore
            ce, ce_per_codebook = self._compute_cross_entropy(  # type: ignore[attr-defined]
                out.logits, audio_tokens, padding_mask & out.mask)
            loss = ce / self.grad_acc
        deadlock.update("loss")
        if check_sync:
            torch.cuda.set_sync_debug_mode("default")
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        deadlock.update("scale")
        loss.backward()
        self._micro_batches += 1
        if self._micro_batches % self.grad_acc == 0:
            flashy.distrib.sync_model(self.model)  # average the accumulated gradients across ranks
            deadlock.update("backward")
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if self.cfg.optim.max_norm:
                metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.requires_grad], self.cfg.optim.max_norm)
            if self.scaler is None:
                self.optimizer.step()
            else:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            if self.lr_scheduler:
                self.lr_scheduler.step()
            self.optimizer.zero_grad()
            self.optimizer_steps += 1
            deadlock.update("optim")
            if self.scaler is not None:
                metrics["grad_scale"] = self.scaler.get_scale()
        check = getattr(self, "check_loss", None)  # SpeedMixin's: upstream's check, or sync-free
        if check is not None:
            check(ce)
        elif not torch.isfinite(ce):
            raise RuntimeError("Model probably diverged (non-finite cross-entropy).")
        metrics["ce"] = ce
        metrics["ppl"] = torch.exp(ce)
        for k, ce_q in enumerate(ce_per_codebook):
            metrics[f"ce_q{k + 1}"] = ce_q
            metrics[f"ppl_q{k + 1}"] = torch.exp(ce_q)
        return metrics


def weights_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A short digest of a state dict (per tensor, in key order: float64 sum and sum of squares).

    Identical weights give identical digests on every rank of one device type; any difference shows. A
    checkpoint's `model` state gives the digest the ranks logged when it was saved.

    Args:
        state: a state dict, e.g. `model.state_dict()`.
    """
    with torch.no_grad():
        stats = torch.stack([torch.stack([t.detach().double().sum(), t.detach().double().square().sum()])
                             for _, t in sorted(state.items())]).cpu()
    return hashlib.sha1(stats.numpy().tobytes()).hexdigest()[:16]


def check_ranks_agree(model: torch.nn.Module, when: str) -> str | None:
    """Log this rank's weights fingerprint and, with several ranks, fail unless every rank has the same one.

    Args:
        model: the trained model.
        when: what just ran (for the log and the error).
    Returns:
        This rank's fingerprint (None with a single process: nothing to compare).
    Raises:
        RuntimeError: ranks hold different weights (gradients or buffers were not synchronised).
    """
    world = flashy.distrib.world_size()
    if world <= 1:
        return None
    mine = weights_fingerprint(model.state_dict())
    everyone: list = [None] * world
    torch.distributed.all_gather_object(everyone, mine)
    logger.info("rank %d/%d weights fingerprint after %s: %s", flashy.distrib.rank(), world, when, mine)
    if len(set(everyone)) != 1:
        raise RuntimeError(f"ranks hold different weights after {when} (fingerprints by rank: {everyone}): "
                           "gradients were not averaged across ranks; this is a bug, please report it")
    return mine
