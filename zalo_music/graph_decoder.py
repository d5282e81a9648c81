"""The fast decoder's step with static shapes, replayed from CUDA graphs on a GPU (`--decoder graph`).

At small batch an eager decoding step on a GPU is bound by its ~500 kernel launches, not by the GPU's work
(transformers' MusicGen: ~13 ms per step at batch 1 to 64 on an H200, nearly flat; the weights' read floor is
~0.18 ms). A CUDA graph replays the whole step as one launch, on fixed memory, so the step may not depend on a
Python value that changes from one step to the next. `StaticDecoder` is `FastDecoder` organised for that:

- the position is a device tensor: its positional embedding is gathered with it, and the self-attention cache is
  written at it with `index_copy_`;
- self-attention runs over a fixed window of the cache, the position's bucket of `BUCKET` positions, with the
  positions past the current one masked: masked scores are -inf, so their weights are exactly 0 and the result is
  attention over the filled part (tests/test_graph_decoder.py: the logits equal `FastDecoder`'s at every step);
- the first step runs eagerly (it allocates the cache); then one graph per window (8 for a 10-s clip) is captured
  the first time a step needs it, after one eager warm-up step on a side stream; `GraphSteps.capture_s` is that
  cost, reported apart from the steady state. Graphs are per batch: their cross-attention keys and values are
  the batch's own tensors.

Sampling (CFG, temperature, top-k / top-p, the delay pattern) stays eager, as in `fast_decoder.generate_tokens`:
it is a few launches, and audiocraft's sampling functions copy index lists to the device, which a graph cannot
capture. So the same seed draws from the same logits, and on a CPU (no graphs: the static step runs eagerly)
the codes equal `--decoder fast`'s.
"""

from __future__ import annotations

import time
import typing as tp

import torch
from torch.nn import functional as F

from . import fast_decoder
from .fast_decoder import FastDecoder

#: Positions per attention window: a step attends over the cache up to the end of its position's bucket.
BUCKET = 64


class StaticDecoder(FastDecoder):
    """`FastDecoder` whose `step` has the same shapes and the same memory at every position of a window.

    Args:
        lm, cross_src, length: as `FastDecoder`.
    """

    def __init__(self, lm, cross_src: torch.Tensor, length: int) -> None:
        super().__init__(lm, cross_src, length)
        self.positions = torch.arange(length, device=cross_src.device)
        self.window = length
        self.mask: torch.Tensor | None = None

    def step(self, codes: torch.Tensor, pos: tp.Any) -> torch.Tensor:
        """Logits `[rows, K, 1, card]` for position `pos + 1`.

        Args:
            codes: `[rows, K, 1]` codes at position `pos`.
            pos: a 0-dimensional long tensor on the model's device.
        """
        self.mask = (self.positions[:self.window] <= pos).view(1, 1, 1, self.window)
        return super().step(codes, pos)

    def _position(self, pos: tp.Any) -> torch.Tensor:
        return self.pos_emb.index_select(0, pos.view(1))[0]

    def _cached_attention(self, keys: torch.Tensor, values: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                          v: torch.Tensor, pos: tp.Any) -> torch.Tensor:
        keys.index_copy_(2, pos.view(1), k.transpose(1, 2))
        values.index_copy_(2, pos.view(1), v.transpose(1, 2))
        return F.scaled_dot_product_attention(q, keys[:, :, :self.window], values[:, :, :self.window],
                                              attn_mask=self.mask)


class GraphSteps:
    """`(codes, position) -> logits` of a `StaticDecoder`, replayed from one CUDA graph per window on a GPU and run
    eagerly elsewhere.

    Args:
        decoder: the batch's `StaticDecoder`.
        num_codebooks: K.
    """

    def __init__(self, decoder: StaticDecoder, num_codebooks: int) -> None:
        device = decoder.positions.device
        self.decoder = decoder
        self.codes = torch.zeros(decoder.rows, num_codebooks, 1, dtype=torch.long, device=device)
        self.pos = torch.zeros((), dtype=torch.long, device=device)
        self.graphs: dict[int, tp.Any] = {}
        self.logits: dict[int, torch.Tensor] = {}
        self.capture_s = 0.0
        self.cuda = device.type == "cuda"
        self.pool = torch.cuda.graph_pool_handle() if self.cuda else None

    def __call__(self, codes: torch.Tensor, pos: int) -> torch.Tensor:
        """The step's logits (on a GPU, a view of the graph's output: read it before the next call).

        Args:
            codes: `[rows, K, 1]`.
            pos: the position of `codes`.
        """
        self.codes.copy_(codes)
        self.pos.fill_(pos)
        window = min(self.decoder.length, (pos // BUCKET + 1) * BUCKET)
        self.decoder.window = window
        if not self.cuda or self.decoder.cache is None:
            # the first step runs eagerly on this stream: it allocates the KV cache here, outside any capture
            return self.decoder.step(self.codes, self.pos)
        if window not in self.graphs:
            self._capture(window)
        self.graphs[window].replay()
        return self.logits[window]

    def _capture(self, window: int) -> None:
        """Warm the step up on a side stream (allocations, kernel plans), then capture it."""
        start = time.perf_counter()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.decoder.step(self.codes, self.pos)  # writes this position's keys/values: the replay rewrites them
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self.logits[window] = self.decoder.step(self.codes, self.pos)
        self.graphs[window] = graph
        self.capture_s += time.perf_counter() - start


def graph_steps(lm, cross_src: torch.Tensor, length: int) -> GraphSteps:
    """The batch's step for `fast_decoder.generate_tokens` (its `stepper`)."""
    return GraphSteps(StaticDecoder(lm, cross_src, length), lm.num_codebooks)


def generate_tokens(model, attributes: list, callback: tp.Callable[[int, int], None] | None = None,
                    stats: dict | None = None) -> torch.Tensor:
    """`fast_decoder.generate_tokens` stepping with `GraphSteps`: `--decoder graph`.

    Args:
        model, attributes, callback, stats: as `fast_decoder.generate_tokens`.
    """
    return fast_decoder.generate_tokens(model, attributes, callback, stepper=graph_steps, stats=stats)
