"""Every workaround for an upstream problem lives here, each naming the upstream file and why.

`apply()` is idempotent and runs from `zalo_music.runtime.prepare()`, before audiocraft is imported (never at
import of `zalo_music`). The torch patches
(checkpoint allow-list, safe loading) are applied as soon as torch is imported, not before: importing torch
costs ~600 MB of RSS that data commands do not need.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import typing as tp

_APPLIED = False


class _LaionClapImportGuard(importlib.abc.MetaPathFinder):
    """Turn a failing `import laion_clap` into an ImportError.

    Upstream: `laion_clap/training/data.py` loads the bert/roberta/bart tokenizers from the Hugging Face hub at
    module level, so offline with an empty cache the import raises OSError/TypeError. audiocraft
    (`audiocraft/metrics/clap_consistency.py`, `audiocraft/modules/conditioners.py`) guards that import with
    `except ImportError` only, so without this guard *any* `import audiocraft` dies offline. With it, audiocraft
    sees "laion_clap not installed" and our CLAP code reports the real cause when CLAP is actually needed.
    """

    def find_spec(self, fullname: str, path: tp.Any = None, target: tp.Any = None):
        if fullname != "laion_clap":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _GuardedLoader(spec.loader)
                return spec
        return None


class _GuardedLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec):
        return self._inner.create_module(spec)

    def __getattr__(self, name: str) -> tp.Any:  # get_data, get_resource_reader, get_source...: the real loader's
        return getattr(self._inner, name)

    def exec_module(self, module) -> None:
        try:
            self._inner.exec_module(module)  # type: ignore[attr-defined]
        except ImportError:
            raise
        except Exception as exc:  # noqa: BLE001 - any hub failure means "unusable here"
            raise ImportError(
                "laion_clap is installed but could not load its tokenizers (bert-base-uncased, roberta-base, "
                f"facebook/bart-base) from the Hugging Face cache: {type(exc).__name__}: {exc}. "
                "Run once with hub access, or point HF_HOME at a cache that has them "
                "(`zalo-music doctor` checks this)."
            ) from exc


class _AfterImport(importlib.abc.MetaPathFinder):
    """Run `callback()` right after module `name` is first imported (its import is left untouched otherwise).

    Used for torch: the safe-loading patches need torch, but importing torch costs ~600 MB of RSS, which
    commands that never load a checkpoint (prepare's workers, validate-submission) should not pay.
    """

    def __init__(self, name: str, callback: tp.Callable[[], None]) -> None:
        self.name = name
        self.callback = callback

    def find_spec(self, fullname: str, path: tp.Any = None, target: tp.Any = None):
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _CallbackLoader(spec.loader, self.callback)
                return spec
        return None


class _CallbackLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, callback: tp.Callable[[], None]) -> None:
        self._inner = inner
        self._callback = callback

    def create_module(self, spec: importlib.machinery.ModuleSpec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        self._inner.exec_module(module)  # type: ignore[attr-defined]
        sys.modules[module.__name__] = module  # the callback imports submodules of it
        self._callback()

    def __getattr__(self, name: str) -> tp.Any:  # get_data, get_resource_reader, get_source...: the real loader's
        return getattr(self._inner, name)


def _torch_patches() -> None:
    _allow_audiocraft_checkpoints()
    _always_weights_only()


def _when_torch_is_imported() -> None:
    if "torch" in sys.modules:
        _torch_patches()
    elif not any(isinstance(f, _AfterImport) and f.name == "torch" for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport("torch", _torch_patches))


def _guard_laion_clap_import() -> None:
    if not any(isinstance(f, _LaionClapImportGuard) for f in sys.meta_path):
        sys.meta_path.insert(0, _LaionClapImportGuard())


def safe_globals() -> list:
    """Types that audiocraft checkpoints pickle, allow-listed for torch's `weights_only` loader.

    Upstream: `audiocraft/utils/checkpoint.py` saves the XP config as an omegaconf `DictConfig` (plus the
    containers and metadata it is built from). torch >= 2.6 loads with `weights_only=True` by default and refuses
    them; we keep that safe loader on and allow exactly these classes instead of disabling it.
    """
    import collections
    import typing

    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import Container, ContainerMetadata, Metadata, Node
    from omegaconf.nodes import (
        AnyNode,
        BooleanNode,
        BytesNode,
        EnumNode,
        FloatNode,
        IntegerNode,
        PathNode,
        StringNode,
        ValueNode,
    )

    return [
        DictConfig, ListConfig, Container, ContainerMetadata, Metadata, Node, ValueNode, AnyNode, StringNode,
        IntegerNode, FloatNode, BooleanNode, BytesNode, EnumNode, PathNode,
        typing.Any, collections.defaultdict, dict, list, int, float, str, bool, tuple,
    ]


def _allow_audiocraft_checkpoints() -> None:
    import torch.serialization

    torch.serialization.add_safe_globals(safe_globals())


def _always_weights_only() -> None:
    """Make every `torch.load` in the process use the safe loader unless the caller explicitly says otherwise.

    Upstream: audiocraft's loaders (`audiocraft/models/loaders.py`, `utils/checkpoint.py`, `utils/export.py`,
    `utils/cache.py`) call `torch.load(path, 'cpu')` without `weights_only`. torch >= 2.6 then uses the safe
    loader by default, but `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` turns it off for exactly those call sites
    (torch/serialization.py: the variable only overrides calls that did not pass `weights_only`), so a model
    folder carrying a malicious pickle would run code. Passing `weights_only=True` on their behalf keeps the
    safe loader whatever the environment says; the allow-list above makes audiocraft's own files load.
    """
    import torch

    if getattr(torch.load, "_zalo_patched", False):
        return
    original = torch.load

    def load(*args: tp.Any, **kwargs: tp.Any) -> tp.Any:
        kwargs.setdefault("weights_only", True)
        return original(*args, **kwargs)

    load._zalo_patched = True  # type: ignore[attr-defined]
    load.__wrapped__ = original  # type: ignore[attr-defined]
    load.__doc__ = original.__doc__
    torch.load = load  # type: ignore[assignment]


def check_safe_loading() -> None:
    """Make sure checkpoint loading is safe before any model file is read (re-applies the patch if needed).

    Raises:
        RuntimeError: if `torch.load` was replaced by something that does not default to the safe loader.
    """
    import torch

    _always_weights_only()
    if not getattr(torch.load, "_zalo_patched", False):
        raise RuntimeError("torch.load was replaced after zalo_music's safe-loading patch: refusing to load "
                           "model files that could run code")


def workers_die_with_parent() -> None:
    """Give every torch DataLoader worker a parent-death signal (see `zalo_music.procutil`).

    Upstream: torch's DataLoader workers (`torch/utils/data/_utils/worker.py`) watch their *parent*, which
    under audiocraft's `mp_start_method: forkserver` is the fork server, not `dora run`; the fork server was
    seen outliving a killed `dora run`, so its workers stayed behind, each holding its copy of the dataset
    (~1 GB each with audiocraft's loaders). audiocraft builds its loaders itself
    (`audiocraft/data/audio_dataset.py`), so the worker_init_fn is wrapped at the DataLoader class.
    """
    import functools
    import os

    from torch.utils.data import DataLoader

    from .procutil import dataloader_worker_init

    init = DataLoader.__init__
    if getattr(init, "_zalo_patched", False):
        return

    @functools.wraps(init)
    def __init__(self, *args: tp.Any, **kwargs: tp.Any) -> None:
        owner = os.getpid()
        if len(args) > 10:  # worker_init_fn given positionally (after dataset ... timeout)
            args = (*args[:10], functools.partial(dataloader_worker_init, args[10], owner), *args[11:])
        else:
            kwargs["worker_init_fn"] = functools.partial(dataloader_worker_init, kwargs.get("worker_init_fn"),
                                                         owner)
        init(self, *args, **kwargs)

    __init__._zalo_patched = True  # type: ignore[attr-defined]
    DataLoader.__init__ = __init__  # type: ignore[method-assign]


def allow_short_segment_musicgen() -> None:
    """Let `MusicGen` load models trained on segments of 18 s or less (our 10-s fine-tunes).

    Upstream: `audiocraft/models/musicgen.py` `MusicGen.__init__` calls `set_generation_params(duration=15)`
    whose default `extend_stride=18` is asserted to be below `max_duration` (the training segment length), so
    constructing a MusicGen from a 10-s checkpoint raises. We clamp the stride to half the max duration when the
    caller did not choose one. Imports audiocraft, so it runs on first use (generation), not at import.
    """
    from audiocraft.models.musicgen import MusicGen

    original = MusicGen.set_generation_params
    if getattr(original, "_zalo_patched", False):
        return

    def set_generation_params(self, *args, extend_stride: float | None = None, **kwargs):
        if extend_stride is None:
            extend_stride = min(18.0, self.max_duration / 2)
        return original(self, *args, extend_stride=extend_stride, **kwargs)

    set_generation_params._zalo_patched = True  # type: ignore[attr-defined]
    MusicGen.set_generation_params = set_generation_params  # type: ignore[method-assign]


def cosine_schedule_without_decay_steps() -> None:
    """Let audiocraft's cosine schedule end on its warmup (total steps == warmup steps).

    Upstream: `audiocraft/optim/cosine_lr_scheduler.py` `CosineLRScheduler._get_sched_lr` divides by
    `total_steps - warmup_steps` at the last step, so a run whose updates equal the warmup (e.g. `optim.epochs=1
    optim.updates_per_epoch=200` on the real recipe's 200-step warmup, or a one-epoch smoke test) dies with
    ZeroDivisionError on its last optimizer step. There is no decay phase then: the last step gets the schedule's
    final value (`lr_min_ratio`), as the decay phase would end. Imports audiocraft: run by the solver registry.
    """
    from audiocraft.optim.cosine_lr_scheduler import CosineLRScheduler

    original = CosineLRScheduler._get_sched_lr
    if getattr(original, "_zalo_patched", False):
        return

    def _get_sched_lr(self, lr: float, step: int):
        if self.total_steps == self.warmup_steps and step >= self.warmup_steps:
            return self.lr_min_ratio * lr
        return original(self, lr, step)

    _get_sched_lr._zalo_patched = True  # type: ignore[attr-defined]
    CosineLRScheduler._get_sched_lr = _get_sched_lr  # type: ignore[method-assign]


#: `tokenizer:` value of audiocraft's LUT conditioner that `offline_word_tokenizer` adds.
WORDS_TOKENIZER = "words"


def offline_word_tokenizer() -> None:
    """Add `tokenizer: words` to audiocraft's LUT text conditioner: one hashed token per word, nothing downloaded.

    Upstream: `audiocraft/modules/conditioners.py` `LUTConditioner` accepts `whitespace` (one token per word) or
    `noop` (the whole string hashed to one token). `whitespace`'s `WhiteSpaceTokenizer` loads spaCy's
    `en_core_web_sm` and calls `spacy.cli.download` when it is missing, which fails offline (CI, clusters without
    egress). With `noop` every description is its own bucket, so a description never seen in training reaches the
    LM as an untrained random vector: nothing it learned from words carries over. `words` is audiocraft's own
    `WhiteSpaceTokenizer` (numbers spelled out, punctuation dropped, words hashed into the table) on spaCy's blank
    English pipeline, which ships with spaCy: lower-cased ("Piano" is "piano"), no lemmas (blank English has no
    lemmatizer) and stop words kept ("no drums" must not read as "drums"). Runs when
    `audiocraft.modules.conditioners` is first imported.
    """
    conditioners = sys.modules.get("audiocraft.modules.conditioners")
    if conditioners is None:
        import audiocraft.modules.conditioners as conditioners
    lut = conditioners.LUTConditioner
    if getattr(lut.__init__, "_zalo_patched", False):
        return
    original = lut.__init__

    class BlankEnglishWordTokenizer(conditioners.WhiteSpaceTokenizer):
        def __init__(self, n_bins: int, pad_idx: int = 0) -> None:
            import spacy

            self.n_bins, self.pad_idx = n_bins, pad_idx
            self.lemma, self.stopwords = False, False
            self.nlp = spacy.blank("en")

        def __call__(self, texts, return_text: bool = False):
            return super().__call__([t.lower() if t is not None else None for t in texts], return_text)

    def __init__(self, n_bins: int, dim: int, output_dim: int, tokenizer: str, pad_idx: int = 0):
        words = tokenizer == WORDS_TOKENIZER
        original(self, n_bins, dim, output_dim, "noop" if words else tokenizer, pad_idx=pad_idx)
        if words:
            self.tokenizer = BlankEnglishWordTokenizer(n_bins, pad_idx=pad_idx)

    __init__._zalo_patched = True  # type: ignore[attr-defined]
    lut.__init__ = __init__  # type: ignore[method-assign]


def _when_conditioners_are_imported() -> None:
    name = "audiocraft.modules.conditioners"
    if name in sys.modules:
        offline_word_tokenizer()
    elif not any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, offline_word_tokenizer))


def apply() -> None:
    """Apply every patch once (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    _guard_laion_clap_import()
    _when_torch_is_imported()
    _when_conditioners_are_imported()
    _APPLIED = True
