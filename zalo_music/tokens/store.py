"""On-disk token cache: int16 `.npy` shards `[N, K, T]` (memory-mapped on read) + JSON indexes.

Layout of one cache (`<root>/<dataset>/<codec-slug>-<key-hash>/`):

    meta.json                     cache key + dataset + per-split summary (written first: a partial cache is
                                  still recognised, and refused, as belonging to its codec)
    <split>/shard-00000.npy       int16 codes [rows, K, T_max], -1 beyond each row's `frames`
    <split>/shard-00000.json      the shard's rows (its completion marker: written after the .npy)
    <split>/index.json            every row of the split, in manifest order (written once all shards exist)

Every file is written atomically (temporary file + rename), so an interrupted `tokenize` leaves only whole
shards behind, and a rerun skips them. A shard is read back and compared before its rename (a full disk or a
failing write never becomes a committed shard), and a rerun re-checks every existing shard cheaply (header,
shape, file size against its rows) and encodes a damaged one again.
"""

from __future__ import annotations

import json
import logging
import typing as tp
from pathlib import Path

import numpy as np

from ..fileio import atomic_path, write_json

logger = logging.getLogger(__name__)
PAD = -1  # int16 filler beyond a row's frames (never a code: codes are in [0, cardinality))


def shard_name(i: int) -> str:
    """File stem of shard `i`."""
    return f"shard-{i:05d}"


def write_shard(folder: Path, i: int, codes: list[np.ndarray], rows: list[dict]) -> None:
    """Write one shard atomically: the codes first, then the row file that marks it complete.

    Args:
        folder: the split folder.
        i: shard number.
        codes: one int array [K, T_i] per row.
        rows: one index row per code array (path, duration, ..., frames).
    """
    k = codes[0].shape[0]
    t_max = max(c.shape[-1] for c in codes)
    arr = np.full((len(codes), k, t_max), PAD, dtype=np.int16)
    for j, c in enumerate(codes):
        if int(c.max()) >= 2**15:
            raise ValueError(f"code {int(c.max())} does not fit int16 (codebook larger than 32767 entries)")
        arr[j, :, :c.shape[-1]] = c
    with atomic_path(folder / f"{shard_name(i)}.npy", verify=lambda p: _verify_written(p, arr)) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    write_json(folder / f"{shard_name(i)}.json", {"rows": rows}, indent=None)


def _verify_written(path: Path, arr: np.ndarray) -> None:
    # Before the rename: the file must read back as exactly the codes (shards are a few MB: a full compare).
    try:
        back = np.load(path, mmap_mode="r")
        same = back.dtype == arr.dtype and back.shape == arr.shape and np.array_equal(back, arr)
    except (OSError, ValueError) as exc:
        raise OSError(f"token shard {path} does not read back ({exc}): disk full or failing? Free space and rerun "
                      "`zalo-music tokenize`; finished shards are kept") from exc
    if not same:
        raise OSError(f"token shard {path} reads back different codes than were written: check the disk, then "
                      "rerun `zalo-music tokenize`; finished shards are kept")


def shard_problem(folder: Path, i: int, rows: list[dict]) -> str | None:
    """Why committed shard `i` cannot serve `rows` (None when it can): cheap checks, no code is read.

    The `.npy` header must parse, the file must be as long as its header says (a memory map of a truncated file
    fails), dtype int16, one row per index row, and room for each row's `frames`.

    Args:
        folder: the split folder.
        i: shard number.
        rows: the shard's index rows (with `frames`).
    """
    path = folder / f"{shard_name(i)}.npy"
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        return f"{path.name} is unreadable ({exc})"
    if arr.dtype != np.int16 or arr.ndim != 3 or arr.shape[0] != len(rows):
        return f"{path.name} holds {arr.dtype} {tuple(arr.shape)}, expected int16 [{len(rows)}, K, T]"
    longest = max((int(r["frames"]) for r in rows), default=0)
    if longest > arr.shape[2]:
        return f"{path.name} has {arr.shape[2]} frames per row, its index says {longest}"
    return None


def shard_done(folder: Path, i: int, paths: list[str]) -> bool:
    """Whether shard `i` exists, is complete and undamaged, and holds exactly these audio paths (in order).

    A damaged shard (see `shard_problem`) is logged and reported as not done, so `tokenize` encodes it again.
    """
    marker = folder / f"{shard_name(i)}.json"
    if not marker.is_file() or not (folder / f"{shard_name(i)}.npy").is_file():
        return False
    try:
        rows = json.loads(marker.read_text())["rows"]
    except (ValueError, KeyError):
        return False
    if [r["path"] for r in rows] != paths:
        return False
    problem = shard_problem(folder, i, rows)
    if problem:
        logger.warning("token cache %s: %s; encoding shard %d again", folder, problem, i)
        return False
    return True


def split_problems(folder: Path, rows: list[dict]) -> list[str]:
    """`shard_problem` of every shard of a finished split (`rows` from its `index.json`)."""
    by_shard: dict[int, list[dict]] = {}
    for r in rows:
        by_shard.setdefault(int(r["shard"]), []).append(r)
    return [p for i, rs in sorted(by_shard.items()) if (p := shard_problem(folder, i, rs))]


def read_index(folder: Path) -> list[dict] | None:
    """Rows of a finished split (`index.json`), or None when the split is not complete."""
    path = folder / "index.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data["rows"] if data.get("complete") else None


def write_index(folder: Path, n_shards: int) -> list[dict]:
    """Concatenate the shard row files into `index.json` (row -> shard, position in shard)."""
    rows: list[dict] = []
    for i in range(n_shards):
        for j, r in enumerate(json.loads((folder / f"{shard_name(i)}.json").read_text())["rows"]):
            rows.append({**r, "shard": i, "row": j})
    write_json(folder / "index.json", {"complete": True, "rows": rows}, indent=None)
    return rows


class SplitCodes:
    """Read side of one split: row `i` -> int16 codes [K, frames], shards memory-mapped on first use.

    Args:
        folder: the split folder (`<cache>/<split>`).
    Raises:
        FileNotFoundError: when the split has no complete `index.json`.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        rows = read_index(self.folder)
        if rows is None:
            raise FileNotFoundError(f"token cache split {self.folder} is incomplete (no index.json): "
                                    "rerun `zalo-music tokenize` with the same overrides to finish it")
        self.rows: list[dict] = rows
        self._shards: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def codes(self, i: int) -> np.ndarray:
        """Codes of row `i`, int16 [K, frames] (a view into the memory map: copy before writing)."""
        row = self.rows[i]
        shard = self._shards.get(row["shard"])
        if shard is None:
            # mmap: only the pages of the rows actually sampled are read; the OS page cache keeps them.
            shard = np.load(self.folder / f"{shard_name(row['shard'])}.npy", mmap_mode="r")
            self._shards[row["shard"]] = shard
        return shard[row["row"], :, :row["frames"]]

    def __getstate__(self) -> dict:
        # DataLoader workers re-open the memory maps instead of pickling them.
        return {"folder": self.folder, "rows": self.rows, "_shards": {}}


def read_meta(cache: str | Path) -> dict:
    """`meta.json` of a cache folder.

    Raises:
        FileNotFoundError: naming the folder and how to build it.
    """
    path = Path(cache) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"no token cache at {cache} (missing meta.json): build it with `zalo-music tokenize`")
    return json.loads(path.read_text())


def existing_caches(dataset_root: Path) -> list[tuple[Path, dict]]:
    """Every cache (folder, meta) under `<root>/<dataset>/`."""
    out = []
    for meta in sorted(dataset_root.glob("*/meta.json")):
        try:
            out.append((meta.parent, json.loads(meta.read_text())))
        except ValueError:
            continue
    return out


def as_rows(manifest_rows: tp.Iterable[dict]) -> list[dict]:
    """Index rows (without codes) from manifest rows: the fields the token dataset needs to sample files."""
    out = []
    for m in manifest_rows:
        path = str(Path(m["path"]).resolve())
        out.append({"path": path, "duration": float(m["duration"]), "sample_rate": int(m["sample_rate"]),
                    "amplitude": m.get("amplitude"), "weight": m.get("weight"),
                    # audiocraft's MusicDataset reads the sidecar beside the audio (`<stem>.json`)
                    "sidecar": str(Path(path).with_suffix(".json"))})
    return out
