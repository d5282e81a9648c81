"""`generate --batch-size auto`: the most descriptions per LM pass that fit in the device's free memory.

What a batch holds on the device while it decodes grows with its rows (two per sequence with classifier-free
guidance, `--candidates` sequences per description); beside that, the weights are already loaded and the codec
decodes in chunks of `generate.DECODE_ROWS` clips. Per row, for the fast decoders:

- the self-attention cache: layers x 2 (keys, values) x sequence positions x dim, at the compute dtype;
- the cross-attention keys and values: layers x 2 x the longest description's T5 positions x dim;
- one step's activations and logits (a few times dim, and K x card in float32 for sampling): small beside those.

For musicgen-small (24 layers, dim 1024), a 10-s clip (504 positions) and 512-position texts in fp16 that is
~100 MB per row. `auto` takes the free memory once the model is loaded (`torch.cuda.mem_get_info`), keeps
`HEADROOM` of it for the allocator and the codec, and picks the largest power of two of descriptions whose rows
fit, at most `MAX_AUTO` and no more than there are descriptions. A power of two keeps the choice stable when the
free memory moves a little between runs: the batch size decides the batches, their seeds and so the files, and
the summary prints the size chosen (pass it as `--batch-size N` to reproduce a run elsewhere). On a CPU memory
does not bound a batch, time does: `auto` is `CPU_BATCH`.
"""

from __future__ import annotations

import typing as tp

import torch

#: `auto` on a CPU: the batch whose per-step cost the CPU benchmarks measure (docs/BENCHMARKS.md, Decoders).
CPU_BATCH = 16
#: The largest batch `auto` picks (the largest the GPU benchmarks measure).
MAX_AUTO = 256
#: Share of the free memory left unplanned: the caching allocator's rounding, T5 and the codec's chunks.
HEADROOM = 0.25


def row_bytes(lm: tp.Any, positions: int, text_positions: int, dtype_bytes: int) -> int:
    """Device memory one LM row holds while it decodes (see the module's docstring).

    Args:
        lm: audiocraft's `LMModel`.
        positions: the pattern sequence's positions (frames + the delay pattern's extra steps).
        text_positions: the longest description's T5 positions.
        dtype_bytes: bytes per element of the compute dtype (2 under fp16/bf16 autocast, 4 in fp32).
    """
    layers = len(lm.transformer.layers)
    dim = lm.dim
    ffn = lm.transformer.layers[0].linear1.out_features
    caches = layers * 2 * (positions + text_positions) * dim * dtype_bytes
    step = (8 * dim + ffn) * dtype_bytes + 4 * lm.num_codebooks * lm.card * 4  # activations; logits and probs
    return caches + step


def fit(free_bytes: float, description_bytes: float, descriptions: int) -> int:
    """The largest power of two of descriptions whose memory fits in the planned share of `free_bytes`, between 1
    and `MAX_AUTO`, and no larger than needed for `descriptions`.

    Args:
        free_bytes: the device's free memory.
        description_bytes: what one description's rows hold.
        descriptions: how many descriptions the run has.
    """
    most = int(free_bytes * (1 - HEADROOM) // description_bytes)
    cap = min(MAX_AUTO, 1 << max(0, descriptions - 1).bit_length())  # a power of two covering them all
    size = 1
    while size * 2 <= min(most, cap):
        size *= 2
    return size


def auto_batch_size(model: tp.Any, texts: list[str], duration: float, candidates: int,
                    text_length: tp.Callable[[str], int]) -> tuple[int, str]:
    """`--batch-size auto` for `model` on its device; returns (size, how it was chosen).

    Args:
        model: the loaded MusicGen.
        texts: the run's descriptions.
        duration: seconds per clip.
        candidates: sequences per description (`--candidates`).
        text_length: T5 positions of a description (`generate.text_length`).
    """
    device = next(model.lm.parameters()).device
    if device.type != "cuda":
        return min(CPU_BATCH, max(1, len(texts))), f"{CPU_BATCH} on a CPU"
    lm = model.lm
    positions = int(duration * model.frame_rate) + lm.num_codebooks
    longest = max((text_length(t) for t in texts), default=1)
    per_row = row_bytes(lm, positions, longest, dtype_bytes=2)  # MusicGen decodes under fp16 autocast on CUDA
    free, _ = torch.cuda.mem_get_info(device)
    size = fit(free, 2 * candidates * per_row, len(texts))
    return size, (f"{free / 2**30:.1f} GiB free, {2 * candidates * per_row / 2**20:.0f} MiB per description "
                  f"({2 * candidates} rows, texts up to {longest} positions)")
