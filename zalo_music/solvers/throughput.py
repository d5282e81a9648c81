"""Training throughput in every XP's train metrics: frames/s, samples/s, model FLOP utilisation (MFU), data-wait
share, peak memory and the device-seconds the stage took (`zalo.throughput.*`).

FLOPs are counted from the LM's actual shapes (`lm_flops_per_frame`): the weights every frame passes through,
self-attention over the causal context, cross-attention over the text, the output heads; a training step costs
the forward, the backward through the activations (1x forward) and the weight gradients of what trains (1x the
forward FLOPs of those weights), so full fine-tuning is the usual 3x forward and LoRA / `tune_text` about 2x.
MFU divides the achieved FLOP/s per device by the device's dense bf16/fp16 peak (`PEAK_TFLOPS`, by device name;
`zalo.throughput.peak_tflops` overrides it; on a CPU there is no table entry, so MFU is reported only when set).

No per-step host synchronisation is added: the stage's wall time (ended by audiocraft's own metric average) and
the time spent waiting for the loader between steps are all that is measured.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import time
import typing as tp

import torch

#: Dense bf16/fp16 tensor-core peak, TFLOP/s, by a substring of `torch.cuda.get_device_name()` (first match).
#: Vendor datasheets, without sparsity.
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0),
               ("A10G", 125.0), ("L4", 121.0), ("V100", 125.0), ("RTX 4090", 165.0), ("T4", 65.0))


@dataclasses.dataclass(frozen=True)
class LMShape:
    """What the FLOP count needs of an LM and its batches."""

    dim: int
    layers: int
    ffn: int
    codebooks: int
    card: int
    frames: int  # frames per training segment
    text_tokens: int  # mean text length the cross-attention sees


def shape_from_cfg(cfg: tp.Any, frame_rate: float, text_tokens: int = 32) -> LMShape:
    """The LM shape of an XP config (`transformer_lm.*`, `dataset.segment_duration`) at the codec's frame rate.

    Args:
        cfg: the composed XP config.
        frame_rate: the codec's frames per second (EnCodec 32 kHz: 50).
        text_tokens: mean tokens per description (T5 on the Zalo descriptions: about 30).
    """
    lm = cfg.transformer_lm
    return LMShape(dim=int(lm.dim), layers=int(lm.num_layers), ffn=int(lm.dim * lm.hidden_scale),
                   codebooks=int(lm.n_q), card=int(lm.card),
                   frames=int(round(float(cfg.dataset.segment_duration) * frame_rate)), text_tokens=text_tokens)


def lm_flops_per_frame(shape: LMShape) -> dict[str, float]:
    """Forward FLOPs per frame (one position of the delayed sequence, all codebooks), by part.

    Returns:
        `{"weights": ..., "attention": ..., "heads": ...}` (2 FLOPs per multiply-add).
    """
    d, t, s = shape.dim, shape.frames, shape.text_tokens
    per_layer = (2 * 4 * d * d          # self-attention q, k, v, o
                 + 2 * 2 * d * d        # cross-attention q, o
                 + 2 * 2 * d * d * s / t  # cross-attention k, v over the text, shared by the segment's frames
                 + 2 * 2 * d * shape.ffn)  # feed-forward
    # scores and values over every key, as the kernels compute them (PaLM's MFU convention: no causal halving)
    attention = shape.layers * (2 * 2 * d * t + 2 * 2 * d * s)
    return {"weights": shape.layers * per_layer, "attention": attention,
            "heads": 2.0 * shape.codebooks * d * shape.card}


def train_flops_per_frame(shape: LMShape, trainable_share: float) -> float:
    """FLOPs of one training frame: forward, the activation gradients (one forward's worth), and the weight
    gradients of the trainable share of the weights.

    Args:
        shape: the LM's shape.
        trainable_share: trainable parameters / all parameters (1 for full fine-tuning).
    """
    fwd = lm_flops_per_frame(shape)
    total = sum(fwd.values())
    return 2 * total + trainable_share * (fwd["weights"] + fwd["heads"])


def peak_flops(device: str, override_tflops: float | None) -> float | None:
    """The device's peak FLOP/s: the override, else the table entry for the CUDA device's name, else None."""
    if override_tflops:
        return float(override_tflops) * 1e12
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((tf * 1e12 for key, tf in PEAK_TFLOPS if key in name), None)


def peak_memory_gb(device: str) -> float:
    """Peak memory of this process so far: CUDA allocated on a GPU, resident set size on a CPU."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1e9 if sys.platform == "darwin" else rss * 1024 / 1e9  # bytes on macOS, KiB on Linux


class ThroughputMixin:
    """Mixed first into `ZaloMusicGenSolver`: times the train stage and counts its frames."""

    cfg: tp.Any
    model: torch.nn.Module
    device: str

    def _shape(self) -> LMShape:
        codec = getattr(self, "compression_model", None)
        return shape_from_cfg(self.cfg, float(getattr(codec, "frame_rate", 50)))

    _tp_last: float | None = None

    def _tp_reset(self) -> None:
        self._tp_frames_per_sample = self._shape().frames
        self._tp_frames = self._tp_samples = 0
        self._tp_wait = 0.0
        self._tp_last = None

    def train(self) -> dict:
        self._tp_reset()
        start = time.perf_counter()
        metrics = super().train()  # type: ignore[misc]
        seconds = time.perf_counter() - start
        metrics.update(self.throughput_metrics(seconds))
        return metrics

    def run_step(self, idx: int, batch: tp.Any, metrics: dict) -> dict:
        if not self.is_training:  # type: ignore[attr-defined]
            return super().run_step(idx, batch, metrics)  # type: ignore[misc]
        if not hasattr(self, "_tp_frames"):  # steps run outside `train()` (benchmarks, tests): count from here
            self._tp_reset()
        now = time.perf_counter()
        if self._tp_last is not None:
            self._tp_wait += now - self._tp_last  # the loader's next(): data the step waited for
        out = super().run_step(idx, batch, metrics)  # type: ignore[misc]
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        samples = int(first.shape[0]) if hasattr(first, "shape") else 0
        self._tp_samples += samples
        self._tp_frames += samples * self._tp_frames_per_sample
        self._tp_last = time.perf_counter()
        return out

    def throughput_metrics(self, seconds: float) -> dict:
        """The train stage's throughput (per device; `world_size` devices ran it)."""
        import flashy

        world = flashy.distrib.world_size()
        params = list(self.model.parameters())
        total = sum(p.numel() for p in params)
        trainable = sum(p.numel() for p in params if p.requires_grad)
        shape = self._shape()
        frames_per_s = self._tp_frames / max(seconds, 1e-9)
        flops = train_flops_per_frame(shape, trainable / max(total, 1)) * frames_per_s
        block = self.cfg.zalo.get("throughput") or {}
        peak = peak_flops(str(self.device), block.get("peak_tflops"))
        out = {"frames_per_s": frames_per_s, "samples_per_s": self._tp_samples / max(seconds, 1e-9),
               "tflops": flops / 1e12, "data_wait": self._tp_wait / max(seconds, 1e-9),
               "peak_mem_gb": peak_memory_gb(str(self.device)), "device_seconds": seconds * world}
        if peak:
            out["mfu"] = flops / peak
        speed = getattr(self, "speed_metrics", None)  # SpeedMixin's (text cache hit rate)
        return {**out, **(speed() if speed else {})}
