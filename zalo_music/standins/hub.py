"""Hugging Face cache layout for stand-ins: `HF_HOME/hub/models--<org>--<name>/{refs/main,snapshots/<rev>/}`.

huggingface_hub resolves a repo id offline (`HF_HUB_OFFLINE=1`) by reading `refs/main` and opening the files of
that snapshot; nothing else (blobs, lock files) is needed. Each repo is written into a temporary folder beside
the cache and renamed into place with `refs/main` already inside, so a repo folder that exists is complete and
a killed build leaves nothing half-written where the hub would look.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

#: File in every stand-in snapshot saying what it is (and that its weights are random).
MARKER = "zalo_standin.json"


def repo_folder(hf_home: Path, repo_id: str) -> Path:
    """The cache folder of `repo_id` under `hf_home` (HF_HOME layout).

    Args:
        hf_home: the HF_HOME folder.
        repo_id: e.g. `facebook/musicgen-small` or `t5-base`.
    """
    return Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))


def revision(repo_id: str, seed: int, depth: int | None) -> str:
    """A 40-hex revision that names the stand-in: the same recipe gives the same snapshot folder."""
    key = f"zalo-music-standin:{repo_id}:seed={seed}:depth={depth}"
    return hashlib.sha1(key.encode()).hexdigest()


def is_complete(hf_home: Path, repo_id: str) -> bool:
    """Whether the repo has been written completely (it is renamed into place only when done)."""
    folder = repo_folder(hf_home, repo_id)
    if not (folder / "refs" / "main").is_file():
        return False
    snap = folder / "snapshots" / (folder / "refs" / "main").read_text().strip()
    return (snap / MARKER).is_file()


def is_standin(folder: Path) -> bool:
    """Whether a repo folder was written by `write_repo` (one of its snapshots has the marker)."""
    return any((snap / MARKER).is_file() for snap in (Path(folder) / "snapshots").glob("*"))


def write_repo(hf_home: Path, repo_id: str, seed: int, depth: int | None,
               fill: Callable[[Path], dict | None]) -> Path:
    """Write one repo atomically: `fill(snapshot_dir)` writes its files into a temporary snapshot.

    Args:
        hf_home: the HF_HOME folder.
        repo_id: repo to write.
        seed, depth: recorded in the marker and the revision name.
        fill: writes the files; may return extra facts for the marker (e.g. parameter counts).
    Returns:
        The final snapshot folder.
    """
    final = repo_folder(hf_home, repo_id)
    if final.exists() and not is_standin(final):
        raise FileExistsError(f"{final} holds a repo that is not a zalo-music stand-in (a real download?): "
                              "refusing to replace it. Give `zalo-music standins` another --out folder.")
    rev = revision(repo_id, seed, depth)
    tmp_root = Path(hf_home) / ".building"
    tmp = tmp_root / final.name
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed build
    snap = tmp / "snapshots" / rev
    snap.mkdir(parents=True)
    facts = fill(snap) or {}
    (snap / MARKER).write_text(json.dumps({
        "repo_id": repo_id, "seed": seed, "depth": depth, "weights": "random (zalo-music stand-in)",
        "note": "same architecture, config and file format as the real repo; scores computed with it mean nothing",
        **facts}, indent=1, sort_keys=True))
    (tmp / "refs").mkdir()
    (tmp / "refs" / "main").write_text(rev)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # an older, incomplete or differently-seeded copy: replaced whole
        shutil.rmtree(final)
    tmp.rename(final)
    try:
        tmp_root.rmdir()
    except OSError:
        pass
    return final / "snapshots" / rev


def snapshot_dir(hf_home: Path, repo_id: str) -> Path:
    """The snapshot folder `refs/main` points at (the repo must be complete)."""
    folder = repo_folder(hf_home, repo_id)
    return folder / "snapshots" / (folder / "refs" / "main").read_text().strip()


def read_marker(hf_home: Path, repo_id: str) -> dict:
    """The marker of a complete repo (seed, depth, facts)."""
    return json.loads((snapshot_dir(hf_home, repo_id) / MARKER).read_text())
