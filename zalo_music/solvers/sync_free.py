"""Training steps without host synchronisation (`zalo.speed.sync_free`).

Five places make every audiocraft training step wait for the GPU before the host can queue the next one
(audiocraft 1.3.0, flashy 0.0.2):

1. `MusicGenSolver._compute_cross_entropy` (audiocraft/solvers/musicgen.py) selects the valid positions of each
   codebook with a boolean mask: the result's size is read back from the device, once per codebook.
2. `MusicGenSolver.run_step` checks `loss.isfinite()` in Python after every optimizer step.
3. `flashy.averager` (flashy/utils.py), which `StandardSolver.common_train_valid` (audiocraft/solvers/base.py)
   feeds every step's metrics, turns each metric into a Python float.
4. `flashy.logging.LogProgressBar.update` formats every step's metrics into strings, logged or not.
5. `T5Conditioner.tokenize` (audiocraft/modules/conditioners.py) copies the token ids and the mask to the GPU with
   `.to(self.device)`: torch's blocking copy waits for everything queued before it (the previous step).

Here each has a synchronisation-free equivalent: `masked_cross_entropy` (the same loss, positions weighted by the
mask), a divergence flag kept on the device and read every `CHECK_EVERY` steps, `device_averager` (the same
running means, kept as tensors), and `LazyLogProgressBar` (formats only the lines it logs). The training step
itself is `ClassicOptionsMixin.run_step`'s (audiocraft's step with the optimizer every `zalo.grad_acc`
micro-batches), and `tokenize_on_host` runs upstream's tokenization on the host and sends its tensors without
waiting. tests/test_speed_levers.py shows the same losses and stage metrics as upstream's path, and counts
the host reads per step.
"""

from __future__ import annotations

import collections.abc
import contextlib
import typing as tp

import torch
import torch.nn.functional as F
from flashy.logging import LogProgressBar

#: Steps between two reads of the device-side divergence flag: a diverged run stops at most this many steps late.
CHECK_EVERY = 32


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                         mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """audiocraft's `_compute_cross_entropy` without boolean indexing: the mean cross-entropy of the valid
    positions of each codebook, then the mean over codebooks.

    Invalid positions hold NaN logits (audiocraft's pattern revert) and the special token as target: both are
    replaced before the loss (so neither the loss nor its gradient sees them) and weighted 0.

    Args:
        logits: `[B, K, T, card]`.
        targets: `[B, K, T]` codes.
        mask: `[B, K, T]`, True where the position counts.
    Returns:
        `(ce, [ce of codebook k, detached])`, as upstream.
    """
    card = logits.shape[-1]
    safe_logits = logits.masked_fill(~mask.unsqueeze(-1), 0.0)
    safe_targets = targets.masked_fill(~mask, 0)
    per_position = F.cross_entropy(safe_logits.reshape(-1, card), safe_targets.reshape(-1),
                                   reduction="none").view(targets.shape)
    weights = mask.to(per_position.dtype)
    per_codebook = (per_position * weights).sum(dim=(0, 2)) / weights.sum(dim=(0, 2))
    return per_codebook.mean(), list(per_codebook.detach().unbind())


def device_averager(beta: float = 1.0) -> tp.Callable[..., dict]:
    """`flashy.averager` with tensors kept on their device (no `float()` per step)."""
    total: dict[str, tp.Any] = {}
    weight_sum: dict[str, float] = {}

    def update(metrics: dict, weight: float = 1.0) -> dict:
        for key, value in metrics.items():
            value = value.detach() if isinstance(value, torch.Tensor) else float(value)
            total[key] = total.get(key, 0.0) * beta + weight * value
            weight_sum[key] = weight_sum.get(key, 0.0) * beta + weight
        return {key: t / weight_sum[key] for key, t in total.items()}

    return update


@contextlib.contextmanager
def averaging_on_device() -> tp.Iterator[None]:
    """`flashy.averager` is `device_averager` inside the block (audiocraft's stage loop calls it by attribute)."""
    import flashy

    upstream = flashy.averager
    flashy.averager = device_averager
    try:
        yield
    finally:
        flashy.averager = upstream


def to_floats(metrics: dict) -> dict:
    """A stage's metrics as Python numbers (history.json, the summary line): the stage's one read-back."""
    return {k: float(v) if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}


class LazyLogProgressBar(LogProgressBar):
    """flashy's progress logger, formatting the metrics only for the lines it logs."""

    _raw: dict

    def update(self, **metrics: tp.Any) -> bool:
        self._raw = metrics
        return self._will_log

    def _log(self) -> None:
        self._metrics = self._formatter(getattr(self, "_raw", {}))
        super()._log()


class DivergenceFlag:
    """Whether a non-finite loss was seen, kept on the device and read every `CHECK_EVERY` steps."""

    def __init__(self) -> None:
        self.bad: torch.Tensor | None = None
        self.steps = 0

    def update(self, ce: torch.Tensor) -> None:
        """Add a step's loss; raise once a read shows a non-finite one.

        Args:
            ce: the step's cross-entropy.
        """
        bad = ~torch.isfinite(ce.detach())
        self.bad = bad if self.bad is None else self.bad | bad
        self.steps += 1
        if self.steps % CHECK_EVERY == 0:
            self.check()

    def check(self) -> None:
        """Read the flag (one host synchronisation) and raise if a loss was not finite."""
        if self.bad is not None and bool(self.bad):
            raise RuntimeError("Model probably diverged (non-finite cross-entropy within the last "
                               f"{CHECK_EVERY} steps).")
        self.bad = None


def tokenize_on_host(provider: tp.Any, attributes: list, device: str | torch.device) -> dict:
    """audiocraft's `ConditioningProvider.tokenize`, with the tensors built on the host and sent without a wait.

    Upstream's tokenization runs as it is, with each conditioner that places its tensors by its `device`
    attribute (`T5Conditioner`) pointed at the CPU for the call; the results then go to `device` with
    non-blocking copies from pinned memory, which queue behind the GPU's work instead of waiting for it. A
    conditioner that places its tensors by its weights' device (the `LUTConditioner` of the tiny recipe) keeps
    upstream's copy.

    Args:
        provider: the LM's `ConditioningProvider`.
        attributes: the batch's `ConditioningAttributes` (after CFG and attribute dropout).
        device: where the model runs.
    Returns:
        What `provider.tokenize(attributes)` returns, every tensor on `device`.
    """
    redirected = [c for c in provider.conditioners.values()
                  if isinstance(getattr(c, "device", None), (str, torch.device))]
    saved = [c.device for c in redirected]
    try:
        for conditioner in redirected:
            # a torch.device, not the string: scripts/benchkit.HostReads counts string targets as the config's
            # device (a copy that waits on a GPU); this one is the host's.
            conditioner.device = torch.device("cpu")
        tokenized = provider.tokenize(attributes)
    finally:
        for conditioner, placed in zip(redirected, saved, strict=True):
            conditioner.device = placed
    return {name: to_device(inputs, device) for name, inputs in tokenized.items()}


def to_device(x: tp.Any, device: str | torch.device) -> tp.Any:
    """Every tensor in `x` (nested mappings, named tuples, tuples and lists) copied to `device` without a wait:
    pinned first on CUDA, so that the copy is asynchronous. Mappings are updated in place (a tokenizer's
    `BatchEncoding` keeps its type).

    Args:
        x: a tensor or a container of them (other values are kept).
        device: the target device.
    """
    if isinstance(x, torch.Tensor):
        if x.device.type == "cpu" and torch.device(device).type == "cuda":
            x = x.pin_memory()
        return x.to(device, non_blocking=True)
    if isinstance(x, collections.abc.MutableMapping):
        for key, value in x.items():
            x[key] = to_device(value, device)
        return x
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return type(x)(*(to_device(v, device) for v in x))
    if isinstance(x, (tuple, list)):
        return type(x)(to_device(v, device) for v in x)
    return x
