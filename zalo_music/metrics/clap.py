"""CLAP score with LAION-CLAP's own model code (`laion_clap.CLAP_Module`).

CLAP score = mean over items of cos(text_embedding(description), audio_embedding(clip)). Both embeddings come
from `CLAP_Module.get_text_embedding` / `get_audio_embedding_from_data`; the audio is handed over as
deterministic 48 kHz 10-s windows (`zalo_music.metrics.audio`), so laion-clap's random crop never runs.

The checkpoint is loaded by us with `torch.load(weights_only=True)` (laion-clap's `load_ckpt` uses
`weights_only=False`, which would let a checkpoint run code), then given the same treatment as laion-clap's
`clap_module.factory.load_state_dict`: `state_dict` unwrapped, `module.` prefixes and the
`text_branch.embeddings.position_ids` buffer (not a parameter in transformers >= 4.31) dropped.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import typing as tp
from pathlib import Path

import numpy as np
import torch

from .errors import MetricUnavailableError

logger = logging.getLogger(__name__)

#: The music CLAP (HTSAT-base) that audiocraft also uses for text consistency; CC0, lukewys/laion_clap on the hub.
DEFAULT_CHECKPOINT_NAME = "music_audioset_epoch_15_esc_90.14.pt"
DEFAULT_CHECKPOINT = f"//reference/clap/{DEFAULT_CHECKPOINT_NAME}"
HUB_REPO = "lukewys/laion_clap"
CHECKPOINT_ENV = "ZALO_MUSIC_CLAP_CHECKPOINT"
#: Bumped when the embedding recipe changes, so cached reference statistics are recomputed.
EMBED_VERSION = "zalo-clap-v1:48k-mono-first10s-repeatpad"


@dataclasses.dataclass(frozen=True)
class ClapSpec:
    """Which CLAP to use.

    Args:
        checkpoint: file path, `//reference/...`, or None for `$ZALO_MUSIC_CLAP_CHECKPOINT`, else the default
            music checkpoint under `//reference/clap/`.
        amodel: laion-clap audio tower matching the checkpoint (`HTSAT-base` for the music checkpoint).
        tmodel: laion-clap text tower.
        device: torch device (None: cuda if available).
        batch_size: clips or texts per forward pass.
        download: fetch the default checkpoint from the hub when it is missing and the hub is reachable.
    """

    checkpoint: str | None = None
    amodel: str = "HTSAT-base"
    tmodel: str = "roberta"
    device: str | None = None
    batch_size: int = 16
    download: bool = True


def _missing(path: Path, spec_value: str) -> MetricUnavailableError:
    return MetricUnavailableError(
        f"CLAP checkpoint not found: {path} (from {spec_value!r}). Fix: download {DEFAULT_CHECKPOINT_NAME} "
        f"from https://huggingface.co/{HUB_REPO} into {path.parent}/ (or the ZALO_MUSIC_REFERENCE_DIR/clap/ "
        f"folder), or point {CHECKPOINT_ENV} / zalo.eval.clap_checkpoint at a local laion-clap checkpoint "
        "(with zalo.eval.clap_model matching its audio tower).")


def resolve_checkpoint(spec: ClapSpec) -> Path:
    """The local CLAP checkpoint file for `spec`, downloading the default one when allowed and possible.

    Args:
        spec: the CLAP choice.
    Returns:
        An existing file.
    Raises:
        MetricUnavailableError: naming the missing file and the ways to provide it.
    """
    value = spec.checkpoint or os.environ.get(CHECKPOINT_ENV) or DEFAULT_CHECKPOINT
    path = resolve_reference(value)
    if path.is_file():
        return path
    if (spec.download and path.name == DEFAULT_CHECKPOINT_NAME
            and os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false")):
        try:
            from huggingface_hub import hf_hub_download

            logger.info("CLAP checkpoint %s missing: downloading it from the hub (%s)", path, HUB_REPO)
            return Path(hf_hub_download(HUB_REPO, DEFAULT_CHECKPOINT_NAME))
        except Exception as exc:  # noqa: BLE001 - any hub failure means "not available", reported below
            raise _missing(path, value) from exc
    raise _missing(path, value)


def resolve_reference(value: str | os.PathLike, create: bool = False) -> Path:
    """A path that may start with `//reference`, resolved like audiocraft does.

    Args:
        value: path or `//reference/...` (the reference folder: $AUDIOCRAFT_REFERENCE_DIR, which zalo-music
            sets from ZALO_MUSIC_REFERENCE_DIR, default `<project>/reference`).
        create: create the reference folder when missing (for caches).
    """
    value = str(value)
    if not value.startswith("//reference"):
        return Path(value).expanduser()
    from audiocraft.environment import AudioCraftEnvironment

    ref = AudioCraftEnvironment.get_reference_dir()
    if create:
        ref.mkdir(parents=True, exist_ok=True)
    if ref.is_dir():
        return AudioCraftEnvironment.resolve_reference_path(value)
    # audiocraft asserts the folder exists; we want the file's would-be path in the error instead.
    return ref / value[len("//reference"):].lstrip("/")


def checkpoint_identity(path: Path) -> str:
    """A cheap content identity for a (possibly 2 GB) checkpoint: name, size and hashes of its ends.

    Args:
        path: the checkpoint file.
    """
    size = path.stat().st_size
    h = hashlib.sha256(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read())
    return h.hexdigest()[:16]


def load_clap_state(path: Path) -> dict:
    """Load a laion-clap checkpoint with torch's safe loader.

    Args:
        path: checkpoint file (a state dict, or a dict holding one under `state_dict`).
    Raises:
        MetricUnavailableError: when the file is not a loadable checkpoint.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report which file and why
        raise MetricUnavailableError(f"cannot load CLAP checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    state = ckpt["state_dict"] if isinstance(ckpt, dict) and "state_dict" in ckpt else ckpt
    if not isinstance(state, dict) or not state:
        raise MetricUnavailableError(f"CLAP checkpoint {path} holds no state dict")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    state.pop("text_branch.embeddings.position_ids", None)
    return state


class ClapEmbedder:
    """Text and audio embeddings from one LAION-CLAP model, in batches.

    Args:
        spec: which checkpoint and towers.
    Raises:
        MetricUnavailableError: missing/unloadable checkpoint, or laion_clap unusable (tokenizers not cached).
    """

    def __init__(self, spec: ClapSpec):
        self.spec = spec
        self.checkpoint = resolve_checkpoint(spec)
        self.identity = f"{spec.amodel}/{spec.tmodel}/{checkpoint_identity(self.checkpoint)}/{EMBED_VERSION}"
        try:
            import laion_clap
        except ImportError as exc:
            raise MetricUnavailableError(f"CLAP unavailable: {exc}") from exc
        device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.module = laion_clap.CLAP_Module(enable_fusion=False, amodel=spec.amodel, tmodel=spec.tmodel,
                                                 device=device)
        except OSError as exc:
            raise MetricUnavailableError(f"CLAP text tower unavailable ({spec.tmodel}): {exc}") from exc
        state = load_clap_state(self.checkpoint)
        try:
            self.module.model.load_state_dict(state)
        except RuntimeError as exc:
            raise MetricUnavailableError(
                f"CLAP checkpoint {self.checkpoint} does not fit amodel={spec.amodel} tmodel={spec.tmodel} "
                f"(set zalo.eval.clap_model / --clap-model to the checkpoint's audio tower): {exc}") from exc
        self.module.eval()
        logger.info("CLAP %s loaded from %s", spec.amodel, self.checkpoint)

    @torch.no_grad()
    def embed_text(self, texts: tp.Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """L2-normalised `[N, 512]` text embeddings.

        Args:
            texts: descriptions.
            batch_size: texts per forward pass (default: the spec's).
        """
        bs = batch_size or self.spec.batch_size
        texts = [str(t) for t in texts]
        out = [self.module.get_text_embedding(texts[i:i + bs]) for i in range(0, len(texts), bs)]
        return _normalise(np.concatenate(out) if out else np.zeros((0, 512), np.float32))

    @torch.no_grad()
    def embed_windows(self, windows: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """L2-normalised `[N, 512]` audio embeddings of `clap_window` outputs.

        Args:
            windows: `[N, WINDOW]` float32 windows (exactly 10 s at 48 kHz, so no random crop happens).
            batch_size: clips per forward pass (default: the spec's).
        """
        from .audio import WINDOW

        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim != 2 or (windows.shape[0] and windows.shape[1] != WINDOW):
            raise ValueError(f"expected [N, {WINDOW}] windows, got {windows.shape}")
        bs = batch_size or self.spec.batch_size
        out = [self.module.get_audio_embedding_from_data(windows[i:i + bs])
               for i in range(0, windows.shape[0], bs)]
        return _normalise(np.concatenate(out) if out else np.zeros((0, 512), np.float32))


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def clap_cosines(text_emb: np.ndarray, audio_emb: np.ndarray) -> np.ndarray:
    """Per-item cosine between matching rows of text and audio embeddings.

    Args:
        text_emb: `[N, D]`.
        audio_emb: `[N, D]`.
    """
    if text_emb.shape != audio_emb.shape:
        raise ValueError(f"text/audio embedding shapes differ: {text_emb.shape} vs {audio_emb.shape}")
    return (_normalise(text_emb) * _normalise(audio_emb)).sum(axis=-1)


@functools.lru_cache(maxsize=2)
def get_embedder(spec: ClapSpec) -> ClapEmbedder:
    """A process-wide `ClapEmbedder` per spec (loading CLAP takes seconds and ~1 GB).

    Args:
        spec: which CLAP.
    """
    return ClapEmbedder(spec)
