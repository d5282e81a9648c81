"""The project's own MusicGen decoding loop: audiocraft's LM weights and modules, without its per-step waste.

audiocraft 1.3.0's `LMModel.generate` (audiocraft/models/lm.py) runs the LM in streaming mode, one sequence step
per call. Each call recomputes every layer's cross-attention keys and values over the whole description
(audiocraft/modules/transformer.py, the "todo: when streaming, we could actually save k, v" comment): with
Zalo's ~150-token descriptions that is ~90% of a step at batch 16 on a CPU. Its self-attention cache also grows
by `torch.cat` (a copy of the whole cache per layer per step) and the positions are read back with `.item()`.

`FastDecoder` is the same computation organised for decoding:
- cross-attention keys and values are projected once per batch (per layer, the null-condition rows too);
- the self-attention keys and values go into a cache preallocated at the final length, written in place, and
  each step attends over its filled part only (the step index is a Python int: no host sync reads it back);
- the sinusoidal positions are computed once for the whole sequence;
- sampling (CFG combination, temperature, top-k / top-p) calls audiocraft's own functions on the LM's device,
  and the delay pattern is audiocraft's own `CodebooksPatternProvider`.

Every tensor operation is the one audiocraft's modules apply, on the same weights (the layers' own norms,
projections, activation and layer scales are called), so on CPU fp32 the logits equal audiocraft's and the
sampled tokens are the same for the same seed (tests/test_fast_decoder.py; docs/generation.md).

Supported: the text-to-music MusicGen architecture (sinusoidal positions, pre-norm layers, cross-attention on
the conditions, one-pass CFG, durations up to the model's `max_duration`). Anything else is refused by
`check_supported` with the reason; `--decoder audiocraft` runs audiocraft's own loop.
"""

from __future__ import annotations

import typing as tp

import torch
from torch.nn import functional as F

from .decoding import DECODERS  # noqa: F401  (declared with the other decoding options; re-exported)

#: audiocraft's placeholder for a code not generated yet (`LMModel.generate`'s `unknown_token`).
UNKNOWN_TOKEN = -1


class UnsupportedModel(ValueError):
    """The model (or the requested generation) uses a feature the fast decoder does not implement."""


def check_decoder(name: str) -> None:
    """Raise ValueError unless `name` is one of `DECODERS` (`--decoder`, `zalo.generate.decoder`).

    Args:
        name: the decoder asked for.
    """
    if name not in DECODERS:
        raise ValueError(f"--decoder {name}: expected one of {', '.join(DECODERS)}")


def _in_projection(attn) -> tuple[torch.Tensor, torch.Tensor | None, torch.nn.Module]:
    """(packed q/k/v weight, its bias, output projection) of an audiocraft `StreamingMultiheadAttention`.

    audiocraft keeps them on the module itself when `custom` (the memory-efficient path of the released
    models) and inside a `torch.nn.MultiheadAttention` otherwise (the tiny recipe).
    """
    if attn.custom:
        return attn.in_proj_weight, attn.in_proj_bias, attn.out_proj
    return attn.mha.in_proj_weight, attn.mha.in_proj_bias, attn.mha.out_proj


def unsupported_reason(model) -> str | None:
    """Why the fast decoder cannot generate with `model` as it is set up, or None when it can.

    Args:
        model: an audiocraft `MusicGen` with its generation parameters set.
    """
    lm = getattr(model, "lm", None)
    transformer = getattr(lm, "transformer", None)
    if transformer is None or not hasattr(lm, "fuser"):
        return "not an audiocraft LMModel"
    if transformer.positional_embedding != "sin":
        return f"positional_embedding={transformer.positional_embedding} (only 'sin')"
    if getattr(model, "duration", 0) > getattr(model, "max_duration", float("inf")):
        return (f"duration {model.duration}s beyond the model's max_duration {model.max_duration}s (audiocraft's "
                "windowed extension)")
    params = getattr(model, "generation_params", {})
    if params.get("two_step_cfg") or getattr(lm, "two_step_cfg", False):
        return "two_step_cfg"
    for op in ("sum", "prepend", "input_interpolate"):
        if lm.fuser.fuse2cond.get(op):
            return f"conditions fused by '{op}' ({', '.join(lm.fuser.fuse2cond[op])})"
    if not lm.fuser.fuse2cond.get("cross"):
        return "no cross-attention condition"
    for i, layer in enumerate(transformer.layers):
        if type(layer).__name__ != "StreamingTransformerLayer":
            return f"layer {i} is a {type(layer).__name__}"
        if not layer.norm_first:
            return "post-norm layers (norm_first=False)"
        if layer.cross_attention is None:
            return f"layer {i} has no cross-attention"
        for name in ("self_attn", "cross_attention"):
            attn = getattr(layer, name)
            if attn.past_context is not None or attn.kv_repeat != 1 or attn.qk_layer_norm or attn.rope is not None:
                return f"layer {i} {name}: past_context/kv_repeat/qk_layer_norm/rope"
    if transformer.checkpointing != "none":
        return f"checkpointing={transformer.checkpointing}"
    return None


def check_supported(model, decoder: str = "fast") -> None:
    """Raise `UnsupportedModel` naming the feature when the fast decoder cannot run `model`.

    Args:
        model: an audiocraft `MusicGen` with its generation parameters set.
        decoder: the `--decoder` asked for (fast or graph: graph runs the fast decoder's step), for the message.
    """
    reason = unsupported_reason(model)
    if reason:
        raise UnsupportedModel(f"--decoder {decoder} does not support this model: {reason}; use --decoder audiocraft")


class FastDecoder:
    """Incremental decoding of an audiocraft `LMModel` with cached cross-attention and a static KV cache.

    One instance decodes one batch: `start` projects the conditions' keys and values, `step` runs one sequence
    position for every row (conditional rows first, then the null-condition rows, as audiocraft batches CFG).

    Args:
        lm: the `LMModel` (eval mode).
        cross_src: the fuser's cross-attention input `[2B, T_text, dim]` (conditions + null conditions).
        length: sequence positions the cache must hold (the pattern sequence's length).
    """

    def __init__(self, lm, cross_src: torch.Tensor, length: int) -> None:
        self.lm = lm
        transformer = lm.transformer
        self.layers = list(transformer.layers)
        first = self.layers[0].self_attn
        self.heads = first.num_heads
        self.dim = first.embed_dim
        self.head_dim = self.dim // self.heads
        self.rows = cross_src.shape[0]
        self.length = length
        # Keys/values of the conditions, once per batch: [rows, heads, T_text, head_dim] per layer.
        self.cross_kv = [self._cross_kv(layer.cross_attention, cross_src) for layer in self.layers]
        # Positions 0..length-1 at once with audiocraft's own function (same values as its per-step call).
        from audiocraft.modules.transformer import create_sin_embedding

        positions = torch.arange(length, device=cross_src.device).view(-1, 1, 1)
        self.pos_emb = transformer.positional_scale * create_sin_embedding(
            positions, self.dim, max_period=transformer.max_period, dtype=cross_src.dtype)  # [length, 1, dim]
        self.cache: torch.Tensor | None = None  # [layers, 2, rows, heads, length, head_dim], allocated at step 0

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        # [rows, t, heads*head_dim] -> [rows, heads, t, head_dim], audiocraft's "b t (h d) -> b h t d"
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def _cross_kv(self, attn, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight, bias, _ = _in_projection(attn)
        d = self.dim
        k = F.linear(src, weight[d:2 * d], None if bias is None else bias[d:2 * d])
        v = F.linear(src, weight[2 * d:], None if bias is None else bias[2 * d:])
        return self._heads(k), self._heads(v)

    def _self_attention(self, i: int, layer, h: torch.Tensor, pos: int) -> torch.Tensor:
        weight, bias, out_proj = _in_projection(layer.self_attn)
        q, k, v = F.linear(h, weight, bias).view(self.rows, 1, 3, self.heads, self.head_dim).unbind(2)
        if self.cache is None:
            self.cache = k.new_zeros(len(self.layers), 2, self.rows, self.heads, self.length, self.head_dim)
        x = self._cached_attention(self.cache[i, 0], self.cache[i, 1], q.transpose(1, 2), k, v, pos)
        return out_proj(x.transpose(1, 2).reshape(self.rows, 1, self.dim))

    def _cached_attention(self, keys: torch.Tensor, values: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                          v: torch.Tensor, pos: tp.Any) -> torch.Tensor:
        """Write position `pos`'s key and value into the layer's cache and attend over its filled part.

        Args:
            keys, values: the layer's cache `[rows, heads, length, head_dim]`.
            q: `[rows, heads, 1, head_dim]`; k, v: `[rows, 1, heads, head_dim]`.
            pos: the position (a Python int here).
        """
        keys[:, :, pos] = k[:, 0]
        values[:, :, pos] = v[:, 0]
        return F.scaled_dot_product_attention(q, keys[:, :, :pos + 1], values[:, :, :pos + 1])

    def _position(self, pos: tp.Any) -> torch.Tensor:
        """The positional embedding of sequence position `pos`, `[1, dim]`."""
        return self.pos_emb[pos]

    def _cross_attention(self, i: int, layer, h: torch.Tensor) -> torch.Tensor:
        weight, bias, out_proj = _in_projection(layer.cross_attention)
        d = self.dim
        q = self._heads(F.linear(h, weight[:d], None if bias is None else bias[:d]))
        keys, values = self.cross_kv[i]
        x = F.scaled_dot_product_attention(q, keys, values)
        return out_proj(x.transpose(1, 2).reshape(self.rows, 1, self.dim))

    def step(self, codes: torch.Tensor, pos: int) -> torch.Tensor:
        """Logits `[rows, K, 1, card]` for sequence position `pos + 1`, given the codes at position `pos`.

        Args:
            codes: `[rows, K, 1]` codes (the special token where the pattern has none).
            pos: the position of `codes` in the pattern sequence (0 for the first call).
        """
        lm = self.lm
        x = sum([lm.emb[k](codes[:, k]) for k in range(codes.shape[1])])  # audiocraft's input sum, same order
        x = x + self._position(pos)
        for i, layer in enumerate(self.layers):
            x = x + layer.layer_scale_1(self._self_attention(i, layer, layer.norm1(x), pos))
            x = x + layer.layer_scale_cross(self._cross_attention(i, layer, layer.norm_cross(x)))
            x = x + layer.layer_scale_2(layer.linear2(layer.activation(layer.linear1(layer.norm2(x)))))
        if lm.out_norm is not None:
            x = lm.out_norm(x)
        return torch.stack([lm.linears[k](x) for k in range(len(lm.linears))], dim=1)


def cfg_condition_tensors(lm, attributes: list) -> dict:
    """The condition tensors of `attributes` followed by their null conditions, as `LMModel.generate` builds them.

    Args:
        lm: the `LMModel`.
        attributes: one `ConditioningAttributes` per row.
    """
    from audiocraft.modules.conditioners import ClassifierFreeGuidanceDropout

    null = ClassifierFreeGuidanceDropout(p=1.0)(attributes)
    return lm.condition_provider(lm.condition_provider.tokenize(attributes + null))


def sample(logits: torch.Tensor, rows: int, cfg_coef: float, use_sampling: bool, temp: float, top_k: int,
           top_p: float) -> torch.Tensor:
    """Next codes `[B, K, 1]` from the step's logits `[2B, K, 1, card]`: CFG, then audiocraft's sampling.

    The same operations, in the same order, as `LMModel._sample_next_token` (audiocraft/models/lm.py), so the
    same random state draws the same codes.

    Args:
        logits: conditional rows then null-condition rows.
        rows: B.
        cfg_coef, use_sampling, temp, top_k, top_p: `MusicGen.generation_params`.
    """
    from audiocraft.utils import utils

    cond, uncond = logits.split(rows, dim=0)
    logits = (uncond + (cond - uncond) * cfg_coef).permute(0, 1, 3, 2)[..., -1]  # [B, K, card]
    if use_sampling and temp > 0.0:
        probs = torch.softmax(logits / temp, dim=-1)
        if top_p > 0.0:
            return utils.sample_top_p(probs, p=top_p)
        if top_k > 0:
            return utils.sample_top_k(probs, k=top_k)
        return utils.multinomial(probs, num_samples=1)
    return torch.argmax(logits, dim=-1, keepdim=True)


#: `(lm, cross_src, length) -> step`, where `step(codes, pos)` gives the logits of position `pos + 1`.
Stepper = tp.Callable[[tp.Any, torch.Tensor, int], tp.Callable[[torch.Tensor, int], torch.Tensor]]


def _fast_steps(lm, cross_src: torch.Tensor, length: int) -> tp.Callable[[torch.Tensor, int], torch.Tensor]:
    return FastDecoder(lm, cross_src, length).step


def generate_tokens(model, attributes: list, callback: tp.Callable[[int, int], None] | None = None,
                    stepper: Stepper | None = None, stats: dict | None = None) -> torch.Tensor:
    """Codes `[B, K, T]` for `attributes` with the model's generation parameters: `MusicGen._generate_tokens`'s
    contract (no audio prompt, duration up to `max_duration`), decoded by `FastDecoder`.

    Args:
        model: an audiocraft `MusicGen` with its generation parameters set.
        attributes: from `model._prepare_tokens_and_attributes(texts, None)`.
        callback: called with (steps done, steps in all) after each step.
        stepper: builds the batch's step (default: `FastDecoder(...).step`; `graph_decoder.graph_steps` for
            `--decoder graph`).
        stats: if given, receives `capture_s`, the seconds the step spent capturing CUDA graphs (0 without them).
    Raises:
        UnsupportedModel: see `check_supported`.
    """
    check_supported(model)
    lm = model.lm
    params = model.generation_params
    cfg_coef = lm.cfg_coef if params.get("cfg_coef") is None else params["cfg_coef"]
    gen_len = int(model.duration * model.frame_rate)
    rows = len(attributes)
    device = next(iter(lm.parameters())).device
    with model.autocast:  # audiocraft's dtype policy (fp16 autocast on CUDA, none on CPU)
        tensors = cfg_condition_tensors(lm, attributes)
        _, cross_src = lm.fuser(torch.zeros(2 * rows, 1, lm.dim, device=device), tensors)
        pattern = lm.pattern_provider.get_pattern(gen_len)
        codes = torch.full((rows, lm.num_codebooks, gen_len), UNKNOWN_TOKEN, dtype=torch.long, device=device)
        sequence, _, mask = pattern.build_pattern_sequence(codes, lm.special_token_id)
        first = pattern.get_first_step_with_timesteps(0)
        if first != 1:  # the loop feeds one position per step from position 0 on
            raise UnsupportedModel(f"--decoder fast does not support this model: its codebook pattern starts "
                                   f"at step {first}; use --decoder audiocraft")
        length = sequence.shape[-1]
        step = (stepper or _fast_steps)(lm, cross_src, length)
        special = torch.full([], lm.special_token_id, dtype=torch.long, device=device)
        for offset in range(first, length):
            current = sequence[..., offset - 1:offset]
            logits = step(torch.cat([current, current], dim=0), offset - 1)
            nxt = sample(logits, rows, cfg_coef, params["use_sampling"], params["temp"], params["top_k"],
                         params["top_p"])
            nxt = torch.where(mask[..., offset:offset + 1].expand(rows, -1, -1), nxt, special)
            sequence[..., offset:offset + 1] = torch.where(
                sequence[..., offset:offset + 1] == UNKNOWN_TOKEN, nxt, sequence[..., offset:offset + 1])
            if callback is not None:
                callback(1 + offset - first, length - first)
    if stats is not None:
        stats["capture_s"] = getattr(step, "capture_s", 0.0)
    out, _, _ = pattern.revert_pattern_sequence(sequence, special_token=UNKNOWN_TOKEN)
    return out[..., :gen_len]
