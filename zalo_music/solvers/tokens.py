"""Training from precomputed compression-model tokens (`zalo.tokens.enabled` / `zalo.tokens.path`).

`TokenDataMixin` goes before audiocraft's `MusicGenSolver` in the MRO. When the config points at a token cache
it swaps the train and valid dataloaders for loaders over the cached codes (`zalo_music.tokens.dataset`),
after checking the cache key against the solver's own compression model; evaluate and generate keep audio.
Token batches skip the codec encode in `_prepare_tokens_and_attributes`; the conditioning path is audiocraft's
(MusicInfo from the sidecar, text augmentation in the dataset, CFG and attribute dropout in the model).
"""

from __future__ import annotations

import logging
import math
import typing as tp

import flashy
import torch

from zalo_music.tokens.dataset import TokenBatch, build_token_loaders
from zalo_music.tokens.resolve import resolve_cache, tokens_enabled

logger = logging.getLogger(__name__)


class TokenDataMixin:
    """Mixin for `MusicGenSolver` subclasses: train/valid from a token cache when the config asks for it.

    Config (`config/tokens/*.yaml`, README "Fast fine-tuning from tokens"):
        zalo.tokens.enabled: find the cache of this dataset + codec under `zalo.tokens.dir`.
        zalo.tokens.path: use this cache folder (its key is still checked).
        zalo.tokens.repeat: tile each clip's codes N times (30-s loop augmentation in token space).
    """

    cfg: tp.Any
    compression_model: tp.Any
    model: tp.Any
    dataloaders: dict
    token_cache: tp.Any = None

    def build_model(self) -> None:
        super().build_model()  # type: ignore[misc]
        # The loaders are swapped here, not in build_dataloaders: the cache key must be checked against the
        # compression model the solver actually loaded, which exists only now.
        if tokens_enabled(self.cfg):
            self._use_token_cache()

    def _use_token_cache(self) -> None:
        if self.cfg.cache.path:
            raise ValueError("zalo.tokens and audiocraft's cache.path are exclusive: use one of them")
        provider = self.model.condition_provider
        if provider.wav_conditions or provider.joint_embed_conditions:
            raise ValueError("training from tokens has no waveform: conditioners that read audio "
                             f"({sorted(provider.wav_conditions) + sorted(provider.joint_embed_conditions)}) "
                             "need zalo.tokens.enabled=false")
        argv = list(getattr(getattr(self, "xp", None), "argv", []) or [])
        folder = resolve_cache(self.cfg, self.compression_model, argv)
        loaders = build_token_loaders(self.cfg, str(folder), self.compression_model.frame_rate,
                                      self.model.special_token_id)
        self.dataloaders.update(loaders)
        self.token_cache = folder
        # With several ranks flashy wraps the valid set in a per-rank `Subset` (and train may be a random
        # subset): unwrap to reach the cache split.
        train_set, valid_set = (_cache_dataset(loaders[s]) for s in ("train", "valid"))
        logger.info("training from tokens: %s (train %d, valid %d clips); evaluate/generate read audio",
                    folder, len(train_set.codes), len(valid_set.codes))
        if flashy.distrib.world_size() > 1:
            logger.info("token loaders of rank %d/%d: train %s over %d items, valid %d of %d items",
                        flashy.distrib.rank(), flashy.distrib.world_size(),
                        type(loaders["train"].sampler).__name__, len(loaders["train"].dataset),
                        len(loaders["valid"].dataset), len(valid_set))

    def _prepare_tokens_and_attributes(self, batch: tp.Any, check_synchronization_points: bool = False
                                       ) -> tuple[dict, torch.Tensor, torch.Tensor]:
        if not isinstance(batch, TokenBatch):
            return super()._prepare_tokens_and_attributes(  # type: ignore[misc]
                batch, check_synchronization_points)
        # Pinned by the loader on CUDA (build_token_loaders): the copy queues behind the GPU's work, no wait.
        codes = batch.codes.to(self.device, non_blocking=True)  # type: ignore[attr-defined]
        infos = batch.infos
        # Same conditioning steps, in the same order (RNG included), as audiocraft's MusicGenSolver.
        attributes = [info.to_condition_attributes() for info in infos]
        attributes = self.model.cfg_dropout(attributes)
        attributes = self.model.att_dropout(attributes)
        tokenized = self.tokenize_conditions(attributes)
        with self.autocast:  # type: ignore[attr-defined]
            condition_tensors = self.model.condition_provider(tokenized)
        special = self.model.special_token_id
        # The dataset pads windows past a clip's end with the special token: never a target.
        padding_mask = codes != special
        if self.cfg.tokens.padding_with_special_token:
            # audiocraft's rule for padded audio (valid tokens from n_frames), kept for parity.
            frame_rate = self.compression_model.frame_rate
            for i, info in enumerate(infos):
                valid = math.floor(float(info.n_frames) / info.sample_rate * frame_rate)
                padding_mask[i, :, valid:] = False
            codes = codes.masked_fill(~padding_mask, special)
        return condition_tensors, codes, padding_mask


    def tokenize_conditions(self, attributes: list) -> dict:
        """The conditioners' tokenization of a batch (upstream's; `SpeedMixin` makes it wait-free when asked).

        Args:
            attributes: the batch's `ConditioningAttributes`.
        """
        return self.model.condition_provider.tokenize(attributes)


def _cache_dataset(loader: tp.Any) -> tp.Any:
    """The `TokenMusicDataset` under a loader's (nested) `Subset` wrappers."""
    dataset = loader.dataset
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return dataset
