"""`zalo-music doctor`: what is installed, what is missing or unreachable, and how to fix each."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from . import env


@dataclass
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def _hf_cached(repo_id: str) -> bool:
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
    folder = hub.expanduser() / ("models--" + repo_id.replace("/", "--"))
    return (folder / "snapshots").is_dir() and any((folder / "snapshots").iterdir())


def run_checks(probe_hub: bool = True) -> list[Check]:
    """Collect every check (no side effects beyond a 2-s network probe when `probe_hub`)."""
    checks: list[Check] = []
    py_ok = sys.version_info[:2] == (3, 11)
    checks.append(Check("python", py_ok, sys.version.split()[0], "use Python 3.11 (scripts/setup.sh builds .venv)"))
    for pkg in ("torch", "torchaudio", "xformers", "dora-search", "hydra-core", "flashy", "laion-clap",
                "transformers", "av", "soundfile"):
        v = _version(pkg)
        checks.append(Check(pkg, v is not None, v or "not installed", "run scripts/setup.sh (pins in pyproject.toml)"))
    ac = _version("audiocraft")
    checks.append(Check("audiocraft", ac == "1.3.0", ac or "not installed",
                        "run scripts/setup.sh: installs the audiocraft 1.3.0 release sdist with --no-deps"))
    spec = importlib.util.find_spec("audiocraft")
    conf = Path(spec.origin).resolve().parent.parent / "config" if spec and spec.origin else None
    conf_ok = bool(conf and (conf / "config.yaml").is_file() and (conf / "solver").is_dir())
    checks.append(Check("audiocraft config tree", conf_ok, str(conf) if conf else "audiocraft not found",
                        "install audiocraft from its sdist (the wheel has no config/): scripts/setup.sh"))
    checks.append(Check("zalo-music config", (env.CONFIG_DIR / "solver" / "zalo").is_dir(), str(env.CONFIG_DIR),
                        "install zalo-music editable from its checkout (pip install -e .)"))
    ff = shutil.which("ffmpeg")
    checks.append(Check("ffmpeg", ff is not None, ff or "not on PATH",
                        "apt-get install ffmpeg (audiocraft's audio_write pipes every format through it)"))
    dora_dir = env.dora_dir()
    writable = os.access(dora_dir if dora_dir.exists() else dora_dir.parent, os.W_OK)
    checks.append(Check("XP folder", writable, str(dora_dir), "set ZALO_MUSIC_DORA_DIR to a writable folder"))
    try:
        import torch

        gpu = torch.cuda.is_available()
        detail = f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}" if gpu else "none (CPU only)"
    except Exception as exc:  # noqa: BLE001
        gpu, detail = False, f"torch failed: {exc}"
    checks.append(Check("GPU", gpu, detail, "the real recipe needs a CUDA GPU; the tiny one runs on CPU",
                        required=False))
    auto = os.environ.get("ZALO_MUSIC_AUTO_OFFLINE") == "1"
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" and not auto
    hub = env.hub_reachable() if probe_hub and not offline else False
    checks.append(Check("Hugging Face hub", hub, "reachable" if hub else (
        "offline (HF_HUB_OFFLINE=1 set by you)" if offline else
        "unreachable (offline mode switched on automatically)"),
        "needed once for facebook/musicgen-small, t5-base and the CLAP tokenizers; then HF_HUB_OFFLINE=1",
        required=False))
    for repo in ("facebook/musicgen-small", "facebook/encodec_32khz", "t5-base", "roberta-base"):
        cached = _hf_cached(repo)
        checks.append(Check(f"HF cache: {repo}", cached, "cached" if cached else "not cached",
                            f"with hub access: python -c \"from huggingface_hub import snapshot_download; "
                            f"snapshot_download('{repo}')\"", required=False))
    checks.append(clap_check())
    return checks


def clap_check() -> Check:
    """Find, load (safe loader) and hash the CLAP checkpoint that `score` and the evaluate stage would use.

    The file is `$ZALO_MUSIC_CLAP_CHECKPOINT` if set, else `//reference/clap/music_audioset_epoch_15_esc_90.14.pt`.
    Loading the 2.35 GB official file and hashing it takes a few seconds; the hash is remembered by (path, size,
    mtime), so `score` does not hash it again.
    """
    from .metrics.clap import CHECKPOINT_ENV, DEFAULT_CHECKPOINT_NAME, HUB_REPO

    value = os.environ.get(CHECKPOINT_ENV) or f"//reference/clap/{DEFAULT_CHECKPOINT_NAME}"
    path = (env.reference_dir() / value[len("//reference"):].lstrip("/") if value.startswith("//reference")
            else Path(value).expanduser())
    fix = (f"download {DEFAULT_CHECKPOINT_NAME} from huggingface.co/{HUB_REPO} into {path.parent} (or set "
           f"ZALO_MUSIC_REFERENCE_DIR, or {CHECKPOINT_ENV} to a laion-clap checkpoint)")
    if not path.is_file():
        return Check("CLAP checkpoint", False, f"{path}: not found", fix, required=False)
    try:
        from .metrics.clap import checkpoint_info

        info = checkpoint_info(path)
    except Exception as exc:  # noqa: BLE001 - any load failure is this check's finding
        return Check("CLAP checkpoint", False, f"{path}: does not load: {exc}", fix, required=False)
    which = (f"the official {info['official']}" if info["official"] else
             "NOT the official music checkpoint: scores are not comparable with published ones")
    return Check("CLAP checkpoint", True, f"{path}: loads (safe loader, {info['n_tensors']} tensors), "
                 f"sha256 {info['sha256']}, {which}", required=False)


def main(probe_hub: bool = True) -> int:
    """Print the report; return 1 if a required check failed.

    Args:
        probe_hub: also try to reach huggingface.co (2-s timeout).
    """
    checks = run_checks(probe_hub)
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
        line = f"[{mark}] {c.name:<{width}}  {c.detail}"
        if not c.ok and c.fix:
            line += f"\n       {'':<{width}}  fix: {c.fix}"
        print(line)
    failed = [c for c in checks if c.required and not c.ok]
    warned = [c for c in checks if not c.required and not c.ok]
    print(f"doctor: {len(checks) - len(failed) - len(warned)} ok, {len(warned)} warnings, {len(failed)} failures"
          f" (XPs in {env.dora_dir()})")
    return 1 if failed else 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    return main(probe_hub=not args.no_hub)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `doctor` to the `zalo-music` parser.

    Args:
        subparsers: what `ArgumentParser.add_subparsers()` returned.
    """
    from .helpfmt import HelpFormatter as fmt

    d = subparsers.add_parser("doctor", formatter_class=fmt, help="check the installation and say how to fix it")
    d.add_argument("--no-hub", action="store_true", help="skip the 2-s Hugging Face hub reachability probe")
    d.set_defaults(func=_cmd_doctor)
