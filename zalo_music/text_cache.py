"""The frozen text encoder's outputs, computed once per description and reused (`zalo.speed.text_cache`).

MusicGen's description conditioner (audiocraft's `T5Conditioner`, audiocraft/modules/conditioners.py) runs the
whole T5 encoder on every batch, although T5 is frozen and a fine-tuning set repeats the same few thousand
descriptions every epoch. `TextEncoderCache` keeps T5's last hidden state per description (LRU, bounded in MB)
and runs T5 only on descriptions it has not seen; the trainable part after it (`output_proj`, the mask) runs as
upstream. Rows are exact: T5's attention masks padded keys, so a description's states do not depend on what it
was batched with (tests/test_text_cache.py compares with the uncached conditioner).

The cache is keyed by the description's text: a training step with word dropout (the text T5 sees is random)
runs upstream's path, and a fine-tuned T5 (`finetune`) is refused.
"""

from __future__ import annotations

import collections
import logging
import typing as tp

import torch

logger = logging.getLogger(__name__)

#: The key under which the wrapped `tokenize` hands the descriptions to the wrapped `forward`.
TEXTS_KEY = "zalo_texts"


class TextEncoderCache:
    """T5 states per description, in front of one `T5Conditioner`.

    Args:
        conditioner: audiocraft's `T5Conditioner` (frozen T5, no word dropout).
        max_mb: memory bound of the stored states; the least recently used go first.
    """

    def __init__(self, conditioner: tp.Any, max_mb: float) -> None:
        if conditioner.finetune:
            raise ValueError("zalo.speed.text_cache needs a frozen text encoder (this T5 is fine-tuned: "
                             "conditioners.description.t5.finetune=true): set zalo.speed.text_cache=false")
        if conditioner.word_dropout > 0:
            logger.info("text encoder cache: evaluation and generation only; training steps run T5 because "
                        "word_dropout=%s changes each description every step "
                        "(conditioners.description.t5.word_dropout=0 caches them too)", conditioner.word_dropout)
        self.conditioner = conditioner
        self.max_bytes = int(max_mb * 2**20)
        self.states: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0
        self._tokenize = conditioner.tokenize
        self._forward = conditioner.forward

    def install(self) -> TextEncoderCache:
        """Put the cache in front of the conditioner's `tokenize` and `forward` (instance attributes: the class and
        every other conditioner stay upstream's)."""
        self.conditioner.tokenize = self.tokenize
        self.conditioner.forward = self.forward
        self.conditioner.zalo_text_cache = self
        return self

    def uninstall(self) -> None:
        """Give the conditioner back upstream's `tokenize` and `forward` (the stored states are kept)."""
        for name in ("tokenize", "forward", "zalo_text_cache"):
            self.conditioner.__dict__.pop(name, None)

    def tokenize(self, x: list[str | None]) -> tp.Any:
        """Upstream's tokenization, with the descriptions attached for `forward` ("" for a dropped one)."""
        inputs = self._tokenize(x)
        inputs[TEXTS_KEY] = ["" if t is None else t for t in x]
        return inputs

    def forward(self, inputs: tp.Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Upstream's `forward`, with T5's states read from the cache (and computed for the unseen texts only).

        Args:
            inputs: what `tokenize` returned.
        """
        texts = inputs.pop(TEXTS_KEY, None)
        c = self.conditioner
        if texts is None or (c.training and c.word_dropout > 0):  # tokenized elsewhere, or dropped words
            return self._forward(inputs)
        mask = inputs["attention_mask"]
        self._fill([t for t in dict.fromkeys(texts) if t])
        dtype = next((self.states[t].dtype for t in texts if t), torch.float32)
        # A dropped description ("") gets no states (zeros): upstream zeroes its mask, so its states never count.
        none = torch.zeros(0, c.output_proj.in_features, dtype=dtype, device=mask.device)
        rows = [self.states[t] if t else none for t in texts]
        embeds = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # one padded copy, not one per row
        embeds = torch.nn.functional.pad(embeds, (0, 0, 0, mask.shape[1] - embeds.shape[1]))
        embeds = c.output_proj(embeds.to(c.output_proj.weight))
        return embeds * mask.unsqueeze(-1), mask

    def _fill(self, texts: list[str]) -> None:
        """Compute and store T5's states of the texts not in the cache (one batched T5 pass), keeping `texts`
        the most recently used."""
        for t in texts:
            if t in self.states:
                self.states.move_to_end(t)
        missing = [t for t in texts if t not in self.states]
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            c = self.conditioner
            inputs = self._tokenize(missing)
            lengths = inputs["attention_mask"].sum(dim=1).tolist()
            with torch.no_grad(), c.autocast:
                states = c.t5(**inputs).last_hidden_state
            for text, row, n in zip(missing, states, lengths, strict=True):
                self.states[text] = row[:n].clone()
                self.bytes += self.states[text].numel() * self.states[text].element_size()
        while self.bytes > self.max_bytes and len(self.states) > len(texts):  # never this batch's own
            _, old = self.states.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()

    def hit_rate(self) -> float | None:
        """Share of descriptions served from the cache so far (None before any)."""
        seen = self.hits + self.misses
        return self.hits / seen if seen else None


def install_text_cache(model: tp.Any, max_mb: float) -> TextEncoderCache | None:
    """Put a `TextEncoderCache` in front of the LM's T5 description conditioner, if it has one.

    Args:
        model: audiocraft's LM (its `condition_provider`).
        max_mb: the cache's memory bound.
    Returns:
        The cache, or None when no conditioner is a T5 (the LUT conditioner of the tiny recipe has nothing to
        cache).
    """
    from audiocraft.modules.conditioners import T5Conditioner

    for name, conditioner in model.condition_provider.conditioners.items():
        if isinstance(conditioner, T5Conditioner):
            logger.info("text encoder cache on %r (up to %.0f MB of T5 states)", name, max_mb)
            return TextEncoderCache(conditioner, max_mb).install()
    return None
