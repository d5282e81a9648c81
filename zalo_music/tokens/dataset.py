"""Dataset over cached codes that samples and conditions exactly like audiocraft's `MusicDataset`.

`TokenMusicDataset` subclasses audiocraft's `MusicDataset` for its file sampling (`sample_file`: uniform,
by weight/duration, or `permutation_on_files`), its epoch-seeded RNG and its text augmentation settings; only
`__getitem__` is ours, because audiocraft's reads audio inline (`AudioDataset.__getitem__` calls `audio_read`
directly). Per item it draws the same random numbers in the same order as audiocraft (file, then seek time),
so the same (epoch, index) picks the same clip and the same offset:

- offset in token frames = round(seek_time * frame_rate), clamped so the window never runs past the codes.
  For 10-s clips and 10-s segments this is always 0: the whole clip. (audiocraft would seek up to
  `(1 - min_segment_ratio) * segment` into the clip and zero-pad the end; codes of padded audio do not exist
  in the cache, and zalo-music never trains on padding anyway.)
- windows shorter than the segment (clips shorter than the segment) are padded with the LM's special token
  and masked out of the loss (the audio path's `tokens.padding_with_special_token` behaviour).
- `repeat > 1` tiles the codes in time: the 30-s loop augmentation in token space (see README: exact up to
  the codec's boundary context at each seam).
"""

from __future__ import annotations

import json
import random
import typing as tp

import numpy as np
import torch
from audiocraft.data.audio_dataset import AudioMeta, SegmentInfo
from audiocraft.data.info_audio_dataset import AudioInfo
from audiocraft.data.music_dataset import MusicDataset, MusicInfo, augment_music_info_description
from audiocraft.modules.conditioners import WavCondition

from .store import SplitCodes


class TokenBatch(tp.NamedTuple):
    """A batch of cached codes: `codes` long [B, K, T] (special token where `infos[i].n_frames` ends), and the
    MusicInfo of each item (as the audio path's collater returns them)."""

    codes: torch.Tensor
    infos: list


class TokenMusicDataset(MusicDataset):
    """audiocraft `MusicDataset` whose items are (codes [K, T], MusicInfo) windows of a token cache.

    Args:
        split_codes: the cache split (`SplitCodes`).
        frame_rate: codec frame rate (Hz).
        special_token: the LM's special token id (padding beyond a clip's end).
        repeat: time tiling of each clip's codes (1: none; 3: 30-s loop of 10-s clips).
        **kwargs: audiocraft `MusicDataset` arguments (segment_duration, shuffle, num_samples, sample_rate,
            channels, min_segment_ratio, sample_on_weight, merge_text_p, ...), as `get_audio_datasets` passes them.
    """

    def __init__(self, split_codes: SplitCodes, frame_rate: float, special_token: int, repeat: int = 1,
                 **kwargs: tp.Any):
        self.codes = split_codes
        self.frame_rate = float(frame_rate)
        self.special_token = int(special_token)
        self.repeat = int(repeat)
        meta = [AudioMeta(path=r["path"], duration=float(r["duration"]) * self.repeat,
                          sample_rate=int(r["sample_rate"]), amplitude=r.get("amplitude"), weight=r.get("weight"))
                for r in split_codes.rows]
        super().__init__(meta, **kwargs)
        # Duration filters may drop files: map what is left back to cache rows by path.
        self._row_of = {r["path"]: i for i, r in enumerate(split_codes.rows)}
        # Sidecars are tiny: read them once, so an item costs a memory-map slice and no file I/O.
        self._sidecars: dict[str, dict | None] = {}
        for r in split_codes.rows:
            try:
                with open(r["sidecar"], encoding="utf-8") as f:
                    self._sidecars[r["path"]] = json.load(f)
            except FileNotFoundError:
                self._sidecars[r["path"]] = None  # audiocraft: no sidecar -> MusicInfo without metadata

    @property
    def hop(self) -> int:
        """Audio samples per token frame."""
        return int(round(self.sample_rate / self.frame_rate))

    def _sample(self, index: int) -> tuple[AudioMeta, float]:
        # Same RNG seeding and draw order as `audiocraft.data.audio_dataset.AudioDataset.__getitem__`.
        if self.segment_duration is None:
            return self.meta[index], 0.0
        rng = torch.Generator()
        if self.shuffle:
            if self.current_epoch is None:
                rng.manual_seed(index + self.num_samples * random.randint(0, 2**24))
            else:
                rng.manual_seed(index + self.num_samples * (self.current_epoch + self.shuffle_seed))
        else:
            rng.manual_seed(index)
        file_meta = self.sample_file(index, rng)
        max_seek = max(0, file_meta.duration - self.segment_duration * self.min_segment_ratio)
        seek_time = torch.rand(1, generator=rng).item() * max_seek
        return file_meta, seek_time

    def window(self, codes: np.ndarray, seek_time: float) -> tuple[np.ndarray, int, int]:
        """Segment window of a clip's codes.

        Args:
            codes: int [K, T] codes of the whole (tiled) clip.
            seek_time: audiocraft's sampled seek time (s).
        Returns:
            (window int64 [K, T_seg] padded with the special token, offset in frames, valid frames).
        """
        total = codes.shape[-1]
        if self.segment_duration is None:
            return codes.astype(np.int64), 0, total
        seg_frames = -(-int(self.segment_duration * self.sample_rate) // self.hop)  # ceil, as the encoder
        offset = min(int(round(seek_time * self.frame_rate)), max(0, total - seg_frames))
        win = codes[:, offset:offset + seg_frames].astype(np.int64)
        valid = win.shape[-1]
        if valid < seg_frames:
            win = np.pad(win, ((0, 0), (0, seg_frames - valid)), constant_values=self.special_token)
        return win, offset, valid

    def __getitem__(self, index: int) -> tuple[torch.Tensor, MusicInfo]:
        file_meta, seek_time = self._sample(index)
        codes = self.codes.codes(self._row_of[file_meta.path])
        if self.repeat > 1:
            codes = np.tile(codes, (1, self.repeat))
        win, offset, valid = self.window(codes, seek_time)
        total_frames = (int(self.segment_duration * self.sample_rate) if self.segment_duration is not None
                        else win.shape[-1] * self.hop)
        n_frames = min(valid * self.hop, total_frames)
        seg = SegmentInfo(file_meta, offset / self.frame_rate, n_frames=n_frames, total_frames=total_frames,
                          sample_rate=self.sample_rate, channels=self.channels)
        info_data = AudioInfo(**seg.to_dict()).to_dict()
        sidecar = self._sidecars[file_meta.path]
        if sidecar is not None:
            music_data = {**sidecar, **info_data}
            music_info = MusicInfo.from_dict(music_data, fields_required=self.info_fields_required)
            if self.paraphraser is not None:
                # audiocraft's MusicDataset calls `paraphraser.sample`, which does not exist
                # (audiocraft/data/music_dataset.py ~l.231); `sample_paraphrase` is the method it has.
                music_info.description = self.paraphraser.sample_paraphrase(file_meta.path, music_info.description)
            if self.merge_text_p:
                music_info = augment_music_info_description(
                    music_info, self.merge_text_p, self.drop_desc_p, self.drop_other_p)
        else:
            music_info = MusicInfo.from_dict(info_data, fields_required=False)
        # No waveform exists on this path: a 1-sample NaN stand-in keeps `to_condition_attributes` well-formed
        # (TokenDataMixin refuses conditioners that would read it, e.g. chroma).
        music_info.self_wav = WavCondition(
            torch.full([1, self.channels, 1], float("nan")), length=torch.tensor([n_frames]),
            sample_rate=[self.sample_rate], path=[file_meta.path], seek_time=[music_info.seek_time])
        return torch.from_numpy(win), music_info

    def collater(self, samples: list) -> TokenBatch:  # type: ignore[override]
        """Stack windows (padded with the special token when lengths differ) into a `TokenBatch`."""
        t_max = max(c.shape[-1] for c, _ in samples)
        codes = torch.stack([torch.nn.functional.pad(c, (0, t_max - c.shape[-1]), value=self.special_token)
                             for c, _ in samples])
        return TokenBatch(codes, [info for _, info in samples])


def build_token_loaders(cfg, cache: str, frame_rate: float, special_token: int,
                        splits: tp.Sequence[str] = ("train", "valid")) -> dict:
    """DataLoaders over a token cache with the dataset settings audiocraft's `get_audio_datasets` would use.

    Args:
        cfg: the XP config (its `dataset` block: batch size, segment, sampling, text augmentation).
        cache: token cache folder.
        frame_rate: codec frame rate.
        special_token: LM special token id.
        splits: which splits to build.
    """
    from pathlib import Path

    import flashy
    from audiocraft.utils.utils import dict_from_config, get_loader

    from .encode import token_repeat

    dataset_cfg = dict_from_config(cfg.dataset)
    split_cfgs = {s: dataset_cfg.pop(s) for s in ("train", "valid", "evaluate", "generate")}
    loaders = {}
    for split in splits:
        # Same merge as audiocraft/solvers/builders.py:get_audio_datasets (split keys override shared ones).
        kwargs = {**dataset_cfg, **split_cfgs[split]}
        kwargs["sample_rate"], kwargs["channels"] = int(cfg.sample_rate), int(cfg.channels)
        if kwargs.get("permutation_on_files") and cfg.optim.updates_per_epoch:
            kwargs["num_samples"] = flashy.distrib.world_size() * cfg.dataset.batch_size * cfg.optim.updates_per_epoch
        kwargs.pop("return_info")
        batch_size, num_workers = kwargs.pop("batch_size", None), kwargs.pop("num_workers")
        dataset = TokenMusicDataset(SplitCodes(Path(cache) / split), frame_rate, special_token,
                                    repeat=token_repeat(cfg), **kwargs)
        # Pinned batches on CUDA: the solver's copy to the GPU is then asynchronous (`non_blocking`).
        loaders[split] = get_loader(dataset, kwargs["num_samples"], batch_size=batch_size, num_workers=num_workers,
                                    seed=cfg.seed, collate_fn=dataset.collater, shuffle=kwargs["shuffle"],
                                    pin_memory=str(cfg.device).startswith("cuda"))
    return loaders
