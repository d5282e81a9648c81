"""Every workaround for an upstream problem lives here, each naming the upstream file and why.

`apply()` is idempotent and runs when `zalo_music` is imported, before audiocraft is.
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


def apply() -> None:
    """Apply every patch once (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    _guard_laion_clap_import()
    _allow_audiocraft_checkpoints()
    _APPLIED = True
