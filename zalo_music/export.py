"""`zalo-music export`: an XP -> a folder that `MusicGen.get_pretrained(folder)` loads.

The folder holds `state_dict.bin` (the LM's best state + the XP config, no optimizer: audiocraft's own
`export_lm`'s layout), `compression_state_dict.bin` (a reference to a hub codec, or the full state of the codec the
XP used when it is not on the hub) and `zalo_export.json` (provenance: signature, epoch, metrics).

Memory: the XP checkpoint is opened memory-mapped (`torch.load(mmap=True, weights_only=True)`), so only the
best state is ever read from disk; the current weights and the optimizer state (AdamW: two more copies of the
model) stay in the file. Peak RAM is about the size of the LM's best state plus the Python/torch baseline.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from . import env
from .fileio import atomic_dir, atomic_path


def resolve_xp_folder(ref: str | Path) -> Path:
    """XP folder from a signature (`abcd1234` or `//sig/abcd1234`) or a folder path.

    A signature is looked up through Dora (`main.get_xp_from_sig`), as `dora run -f SIG` does.

    Args:
        ref: signature or folder.
    Raises:
        FileNotFoundError: naming what was looked for.
    """
    text = str(ref)
    if text.startswith("//sig/"):
        text = text[len("//sig/"):]
    path = Path(text)
    if path.is_dir():
        folder = path
    else:
        from .train import main

        try:
            xp = main.get_xp_from_sig(text)
        except RuntimeError as exc:  # Dora's "Could not find experiment with signature ..."
            raise FileNotFoundError(f"{text}: not an XP folder, nor the signature of an XP in {main.dora.dir} "
                                    f"({exc}); run it first (`dora run ...`), or give its folder "
                                    "(set ZALO_MUSIC_DORA_DIR when XPs live elsewhere)") from exc
        if xp.sig != text:  # its overrides now compose another config (a default changed since it ran)
            raise FileNotFoundError(f"XP {text}: its overrides now give signature {xp.sig} (the config changed "
                                    f"since it ran); export it by folder: {xp.folder.parent / text}")
        folder = xp.folder
    if not (folder / "checkpoint.th").is_file():
        raise FileNotFoundError(f"no checkpoint.th in {folder}: train the XP first, or give its folder "
                                f"(XPs live in {env.dora_dir() / 'xps'}; set ZALO_MUSIC_DORA_DIR)")
    return folder


def _export_codec(cfg, out_file: Path) -> None:
    from audiocraft.utils.export import export_pretrained_compression_model

    from . import debug_codec
    from .tokens.key import is_debug_codec

    ref = str(cfg.compression_model_checkpoint)
    if is_debug_codec(ref):
        raise ValueError(f"compression_model_checkpoint={ref}: audiocraft draws that codec anew at every build, so "
                         "the one the LM was trained with cannot be exported; train with a persisted codec "
                         "(solver=zalo/tiny names one: zalo_music/debug_codec.py)")
    debug_codec.ensure(ref)
    name = ref[len("//pretrained/"):] if ref.startswith("//pretrained/") else ref
    export_pretrained_compression_model(name, out_file)  # a file is copied whole, a hub name is referenced


def open_checkpoint(path: str | Path) -> dict:
    """An XP checkpoint whose tensors stay on disk until read (memory-mapped, safe loader).

    Args:
        path: `checkpoint.th` of an XP (torch's zip format, which every audiocraft checkpoint is).
    Raises:
        ValueError: the file is not in torch's zip format (cannot be memory-mapped), naming it.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        raise ValueError(f"{path} cannot be memory-mapped ({exc}): it was not written by torch.save's zip "
                         "format; re-save it with torch.save(torch.load(path), path)") from exc


def export_lm_state(pkg: dict, out_file: str | Path, source: str | Path = "checkpoint") -> Path:
    """Write the LM release package of an opened XP checkpoint, atomically.

    Same package as audiocraft's `audiocraft/utils/export.py:export_lm` (`best_state` = the best model state,
    `xp.cfg` as YAML, `version`, `exported`), which `MusicGen.get_pretrained` reads; `export_lm` itself
    `torch.load`s the whole training checkpoint (optimizer state included) into RAM, this reads only the best
    state from `pkg` (from `open_checkpoint`). `tests/test_export_memory.py` checks both give the same package.

    Args:
        pkg: the checkpoint, as `open_checkpoint` returns it.
        out_file: destination (`state_dict.bin`).
        source: the checkpoint's path, for error messages.
    Raises:
        ValueError: the checkpoint has no best model state.
    """
    from audiocraft import __version__

    best = pkg.get("fsdp_best_state") or pkg.get("best_state")
    if not best or "model" not in best:
        raise ValueError(f"{source} has no best model state (best_state.model): it is not a finished training "
                         "checkpoint of a MusicGen XP; train at least one epoch, then export")
    from .solvers.lora import is_lora_checkpoint, merged_lm_state

    # A LoRA XP's best state holds adapters only: export the base (its continue_from) with them merged in.
    state = merged_lm_state(pkg) if is_lora_checkpoint(pkg) else best["model"]
    new_pkg = {"best_state": state, "xp.cfg": OmegaConf.to_yaml(pkg["xp.cfg"]),
               "version": __version__, "exported": True}
    with atomic_path(out_file) as tmp:
        torch.save(new_pkg, tmp)
    return Path(out_file)


def export_xp(ref: str | Path, out_dir: str | Path, force: bool = False, keep_adapters: bool = False) -> Path:
    """Export an XP's best state into `out_dir`, atomically.

    Args:
        ref: signature, `//sig/<S>` or XP folder.
        out_dir: destination folder (created; refused if it exists and holds another export, unless `force`).
        force: replace an existing export.
        keep_adapters: for a LoRA XP, also write its adapters alone (`lora_adapters.pt`, a few MB) beside the
            merged LM.
    Returns:
        The export folder.
    """
    folder = resolve_xp_folder(ref)
    out = Path(out_dir)
    stat = (folder / "checkpoint.th").stat()
    checkpoint_id = f"{stat.st_size}-{stat.st_mtime_ns}"  # a rerun of the XP (same sig) writes a new one
    if out.exists() and any(out.iterdir()) and not force:
        meta_file = out / "zalo_export.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        if meta.get("sig") == folder.name and meta.get("checkpoint") == checkpoint_id:
            return out  # already exported: exports are immutable snapshots of a finished best state
        if meta.get("sig") != folder.name:  # (an export of an earlier checkpoint of this XP is replaced)
            raise FileExistsError(f"{out} exists and is not an export of {folder.name}: pick another folder or "
                                  "--force")
    # Memory-mapped: the optimizer state and the current weights are never read (see the module docstring).
    pkg = open_checkpoint(folder / "checkpoint.th")
    cfg = pkg["xp.cfg"]
    history = pkg.get("history", [])
    with atomic_dir(out) as tmp:
        export_lm_state(pkg, tmp / "state_dict.bin", folder / "checkpoint.th")
        _export_codec(cfg, tmp / "compression_state_dict.bin")
        if keep_adapters:
            from .solvers.lora import is_lora_checkpoint, save_adapters

            if not is_lora_checkpoint(pkg):
                raise ValueError(f"--keep-adapters: {folder.name} is not a LoRA XP (zalo.lora.rank is 0)")
            save_adapters(pkg, tmp / "lora_adapters.pt")
        valid = [h.get("valid", {}) for h in history if "valid" in h]
        scored = [h["evaluate"] for h in history if "evaluate" in h]
        argv_file = folder / ".argv.json"  # Dora's record of the XP's overrides
        meta = {"sig": folder.name, "xp_folder": str(folder), "checkpoint": checkpoint_id, "epochs": len(history),
                "best_valid_ce": min((v["ce"] for v in valid if "ce" in v), default=None),
                "evaluate": scored[-1] if scored else None,
                "overrides": json.loads(argv_file.read_text()) if argv_file.is_file() else None,
                "dset": str(cfg.get("dset")),
                "solver": str(cfg.solver), "compression_model": str(cfg.compression_model_checkpoint),
                "sample_rate": int(cfg.sample_rate), "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (tmp / "zalo_export.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out
