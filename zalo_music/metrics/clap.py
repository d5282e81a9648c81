"""CLAP score with LAION-CLAP's own model code (`laion_clap.CLAP_Module`).

CLAP score = mean over items of cos(text_embedding(description), audio_embedding(clip)). Both embeddings come
from `CLAP_Module.get_text_embedding` / `get_audio_embedding_from_data`; the audio is prepared as laion-clap's
`get_audio_embedding_from_filelist` prepares it, except that a clip longer than 10 s gives its first 10 s
instead of a random crop (`zalo_music.metrics.audio`).

The checkpoint is loaded by us with `torch.load(weights_only=True)` (laion-clap's `load_ckpt` uses
`weights_only=False`, which would let a checkpoint run code), with laion's numpy optimizer scalars allowed for
that one call (`load_clap_checkpoint`), then given the same treatment as laion-clap's
`clap_module.factory.load_state_dict`: `state_dict` unwrapped, `module.` prefixes and the
`text_branch.embeddings.position_ids` buffer (not a parameter in transformers >= 4.31) dropped.

torch is imported inside the functions that use it: `zalo-music score --help` (whose options name this module's
constants) and `zalo-music --help` stay free of torch (tests/test_cli_help.py).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import typing as tp
from pathlib import Path

import numpy as np

from .errors import MetricUnavailableError

logger = logging.getLogger(__name__)

#: The music CLAP (HTSAT-base) that audiocraft also uses for text consistency; CC0, lukewys/laion_clap on the hub.
DEFAULT_CHECKPOINT_NAME = "music_audioset_epoch_15_esc_90.14.pt"
DEFAULT_CHECKPOINT = f"//reference/clap/{DEFAULT_CHECKPOINT_NAME}"
HUB_REPO = "lukewys/laion_clap"
CHECKPOINT_ENV = "ZALO_MUSIC_CLAP_CHECKPOINT"
#: Bumped when the embedding recipe changes, so cached reference statistics are recomputed (the audio
#: preparation has its own version, `audio.PREP_VERSION`, also part of the identity).
EMBED_VERSION = "zalo-clap-v2"
#: Precisions of the audio tower (`ClapEmbedder.embed_windows`); scores and reference statistics use float32.
AUDIO_DTYPES = ("float32", "bfloat16")


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
    from zalo_music.runtime import prepare

    prepare()  # AUDIOCRAFT_REFERENCE_DIR from ZALO_MUSIC_REFERENCE_DIR, before audiocraft reads it (notebooks)
    from audiocraft.environment import AudioCraftEnvironment

    ref = AudioCraftEnvironment.get_reference_dir()
    if create:
        ref.mkdir(parents=True, exist_ok=True)
    if ref.is_dir():
        return AudioCraftEnvironment.resolve_reference_path(value)
    # audiocraft asserts the folder exists; we want the file's would-be path in the error instead.
    return ref / value[len("//reference"):].lstrip("/")


#: sha256 of official LAION-CLAP checkpoints that may be fully unpickled when torch's safe loader cannot read them
#: (e.g. pickle protocol 4, "Unsupported operand 149"). Only files whose bytes hash to one of these are ever
#: loaded with `weights_only=False`; every other file stays refused. Value: (file name, size in bytes).
OFFICIAL_CHECKPOINTS: dict[str, tuple[str, int]] = {
    # huggingface.co/lukewys/laion_clap, music_audioset_epoch_15_esc_90.14.pt (HTSAT-base, CC0)
    "fae3e9c087f2909c28a09dc31c8dfcdacbc42ba44c70e972b58c1bd1caf6dedd": (DEFAULT_CHECKPOINT_NAME, 2_352_471_003),
}
_HASH_CACHE_NAME = "file_sha256.json"


def _hash_cache_path() -> Path:
    from zalo_music import env

    return env.reference_dir() / "cache" / _HASH_CACHE_NAME


def file_sha256(path: str | os.PathLike, use_cache: bool = True) -> str:
    """sha256 of a file's bytes, remembered by (absolute path, size, mtime_ns) so a 2.35 GB checkpoint is hashed once.

    The memo lives in `//reference/cache/file_sha256.json`; a file rewritten in place gets a new mtime (or size)
    and is hashed again. Failing to write the memo (read-only folder) only costs a re-hash next time.

    Args:
        path: the file.
        use_cache: read and update the memo (False: always hash).
    Returns:
        The hex digest.
    """
    from zalo_music.fileio import write_json

    path = Path(path).resolve()
    st = path.stat()
    key = str(path)
    stamp = [st.st_size, st.st_mtime_ns]
    memo_path = _hash_cache_path()
    memo: dict = {}
    if use_cache and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
            hit = memo.get(key)
            if isinstance(hit, dict) and hit.get("stamp") == stamp and isinstance(hit.get("sha256"), str):
                return hit["sha256"]
        except (OSError, ValueError, AttributeError):
            memo = {}  # unreadable memo: recompute and rewrite it
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if use_cache:
        memo = memo if isinstance(memo, dict) else {}
        memo[key] = {"stamp": stamp, "sha256": digest}
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            write_json(memo_path, memo)
        except OSError as exc:
            logger.info("could not remember the sha256 of %s in %s: %s", path, memo_path, exc)
    return digest


def _numpy_safe_globals() -> list:
    """numpy types that laion-clap's training checkpoints pickle, for torch's `weights_only` loader.

    Upstream: laion-clap's cosine scheduler (`laion_clap/training/scheduler.py`) stores `np.cos(...)` results,
    numpy float64 scalars, as the optimizer's `lr`, and its training script saves the optimizer state in the
    checkpoint. Unpickling one numpy scalar needs `numpy.core.multiarray.scalar` (numpy 2:
    `numpy._core.multiarray.scalar`, still written as the numpy 1 name by old files), `numpy.dtype` and the
    dtype's class (`numpy.dtypes.Float64DType`). These reconstruct plain numbers and dtypes, nothing callable.
    Allow-listed only inside `load_clap_checkpoint` (a context manager), never globally.
    """
    import numpy as np

    out: list = [np.dtype]
    try:  # numpy >= 2: the implementation moved; old pickles still name numpy.core.multiarray.scalar
        from numpy._core.multiarray import scalar as _scalar  # type: ignore[attr-defined]
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar as _scalar  # type: ignore[attr-defined]
    module = getattr(_scalar, "__module__", "") or ""
    out.append(_scalar)
    for name in ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"):
        if name != f"{module}.scalar":
            out.append((_scalar, name))
    dtypes = getattr(np, "dtypes", None)
    for cls in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
        if dtypes is not None and hasattr(dtypes, cls):
            out.append(getattr(dtypes, cls))
    return out


def load_clap_checkpoint(path: str | os.PathLike) -> tp.Any:
    """Load a laion-clap checkpoint file with torch's safe loader, as laion-clap's training script wrote it.

    `weights_only=True` is passed explicitly (so `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` cannot switch it off), with
    the numpy scalar/dtype types of `_numpy_safe_globals` allowed for this call only. A file the safe loader
    cannot read is fully unpickled only when its sha256 is one of `OFFICIAL_CHECKPOINTS` (logged); any other
    file is refused.

    Args:
        path: the checkpoint file.
    Returns:
        Whatever the file holds (laion's layout: `{"epoch", "name", "state_dict", "optimizer"}`).
    Raises:
        MetricUnavailableError: the file is not a checkpoint the safe loader accepts and is not pinned.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = f"{type(exc).__name__}: {first_line[:300]}"
        safe_exc = exc
    # Hash the bytes now, not from the (path, size, mtime) memo: a file swapped in place with the same size and
    # mtime must not inherit the official file's trust.
    digest = file_sha256(path, use_cache=False)
    if digest in OFFICIAL_CHECKPOINTS:
        logger.warning("CLAP checkpoint %s is the official %s (sha256 %s, pinned) but torch's safe loader refuses "
                       "it (%s): loading it with a full unpickle because its hash is pinned", path,
                       OFFICIAL_CHECKPOINTS[digest][0], digest, reason)
        return torch.load(path, map_location="cpu", weights_only=False)
    raise MetricUnavailableError(
        f"refusing CLAP checkpoint {path}: torch's safe loader (weights_only=True) rejects it ({reason}) and its "
        f"sha256 {digest} is not a pinned official LAION checkpoint, so it is never fully unpickled (that could "
        f"run code). Fix: use the official {DEFAULT_CHECKPOINT_NAME} from https://huggingface.co/{HUB_REPO}, or "
        "re-save your checkpoint's state dict with torch.save from a trusted session.") from safe_exc


def checkpoint_info(path: str | os.PathLike) -> dict:
    """What `zalo-music doctor` reports about a CLAP checkpoint: it is loaded, hashed and identified.

    Args:
        path: the checkpoint file.
    Returns:
        `{"sha256", "official" (name or None), "size", "n_tensors", "keys"}`.
    Raises:
        MetricUnavailableError: unloadable or refused (see `load_clap_checkpoint`).
    """
    path = Path(path)
    ckpt = load_clap_checkpoint(path)
    state = _state_dict(ckpt, path)
    digest = file_sha256(path)
    official = OFFICIAL_CHECKPOINTS.get(digest)
    return {"sha256": digest, "official": official[0] if official else None, "size": path.stat().st_size,
            "n_tensors": len(state), "keys": sorted(ckpt) if isinstance(ckpt, dict) else []}


def _state_dict(ckpt: tp.Any, path: Path) -> dict:
    import torch

    state = ckpt["state_dict"] if isinstance(ckpt, dict) and "state_dict" in ckpt else ckpt
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MetricUnavailableError(f"CLAP checkpoint {path} holds no state dict of tensors (keys: "
                                     f"{sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__})")
    return state


def load_clap_state(path: Path) -> dict:
    """The model state dict of a laion-clap checkpoint, loaded safely and prepared as laion-clap does.

    Same treatment as laion-clap's `clap_module.factory.load_state_dict`: `state_dict` unwrapped, `module.`
    prefixes dropped, and the `text_branch.embeddings.position_ids` buffer removed (not a parameter in
    transformers >= 4.31). The optimizer state and the rest are discarded.

    Args:
        path: checkpoint file (a state dict, or a dict holding one under `state_dict`).
    Raises:
        MetricUnavailableError: when the file is not a loadable checkpoint.
    """
    path = Path(path)
    try:
        ckpt = load_clap_checkpoint(path)
    except MetricUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated zip, I/O error, ...: report which file and why
        raise MetricUnavailableError(f"cannot load CLAP checkpoint {path}: {type(exc).__name__}: {exc}. Fix: "
                                     "download it again (the file may be truncated).") from exc
    state = _state_dict(ckpt, path)
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    state.pop("text_branch.embeddings.position_ids", None)
    return state


def laion_clap_version() -> str:
    """Installed laion-clap version ("unknown" when not installed): part of the reference cache key."""
    import importlib.metadata as md

    try:
        return md.version("laion-clap")
    except md.PackageNotFoundError:
        return "unknown"


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
        from .audio import PREP_VERSION

        #: Everything the embeddings depend on: towers, checkpoint bytes, laion-clap's code, our preparation.
        self.checkpoint_sha256 = file_sha256(self.checkpoint)
        self.identity = (f"{spec.amodel}/{spec.tmodel}/sha256:{self.checkpoint_sha256}/"
                         f"laion-clap-{laion_clap_version()}/{EMBED_VERSION}/{PREP_VERSION}")
        import torch

        from zalo_music.runtime import prepare

        prepare()  # laion_clap's import guard (tokenizers from the hub at import), also when used from a notebook
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
        _front_end_in_float32(self.module.model.audio_branch)
        logger.info("CLAP %s loaded from %s", spec.amodel, self.checkpoint)

    def embed_text(self, texts: tp.Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """L2-normalised `[N, 512]` text embeddings.

        Args:
            texts: descriptions.
            batch_size: texts per forward pass (default: the spec's).
        """
        import torch

        bs = batch_size or self.spec.batch_size
        texts = [str(t) for t in texts]
        with torch.no_grad():
            out = [self.module.get_text_embedding(texts[i:i + bs]) for i in range(0, len(texts), bs)]
        return _normalise(np.concatenate(out) if out else np.zeros((0, 512), np.float32))

    def embed_windows(self, windows: np.ndarray, batch_size: int | None = None, dtype: str = "float32") -> np.ndarray:
        """L2-normalised `[N, 512]` audio embeddings of `clap_window` outputs.

        Args:
            windows: `[N, WINDOW]` float32 windows (exactly 10 s at 48 kHz, so no random crop happens).
            batch_size: clips per forward pass (default: the spec's).
            dtype: the audio tower's precision: "float32" (the judge's) or "bfloat16" (torch autocast, the
                STFT and log-mel kept in float32: embeddings within ~1e-4 cosine of float32's; best-of-N's
                reranking on a GPU).
        """
        from .audio import WINDOW

        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim != 2 or (windows.shape[0] and windows.shape[1] != WINDOW):
            raise ValueError(f"expected [N, {WINDOW}] windows, got {windows.shape}")
        if dtype not in AUDIO_DTYPES:
            raise ValueError(f"CLAP audio dtype {dtype!r}: one of {', '.join(AUDIO_DTYPES)}")
        import torch
        from laion_clap.training.data import float32_to_int16, int16_to_float32

        bs = batch_size or self.spec.batch_size
        device = next(self.module.model.parameters()).device
        out = []
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            for i in range(0, windows.shape[0], bs):
                # laion's own int16 round trip (what `get_audio_embedding_from_data` does to numpy input), so
                # its tensor path, which keeps the tower's output dtype, gives the numpy path's embeddings.
                part = torch.from_numpy(int16_to_float32(float32_to_int16(windows[i:i + bs])))
                emb = self.module.get_audio_embedding_from_data(part, use_tensor=True)
                out.append(emb.float().cpu().numpy())
        return _normalise(np.concatenate(out) if out else np.zeros((0, 512), np.float32))


def _front_end_in_float32(audio_branch: tp.Any) -> None:
    """Keep the audio tower's STFT and log-mel in float32 under a bfloat16 autocast.

    laion_clap/clap_module/htsat.py (and pann_model.py) compute the spectrogram inside the tower, as a conv1d
    that autocast would run in bfloat16: its 8-bit mantissa leaves the quiet bins of a loud clip at the level of
    the loud bins' rounding error, and the log-mel then shows that noise. The transformer layers after it are
    what bfloat16 speeds up. Without autocast (float32) the wrapper changes nothing.

    Args:
        audio_branch: laion's audio tower (`CLAP.audio_branch`).
    """
    import torch

    for name in ("spectrogram_extractor", "logmel_extractor"):
        module = getattr(audio_branch, name, None)
        if module is None:
            continue

        def forward(x, _forward=module.forward):
            with torch.autocast(x.device.type, enabled=False):
                return _forward(x.float())

        module.forward = forward


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
