"""Demo data the tests copy, break or describe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

#: The demo dataset trained from codec tokens.
DEMO_TOKEN_ARGV = ["solver=zalo/tiny", "dset=zalo/demo", "train_from=tokens"]


def copy_demo_clips(demo_source: Path, dest: Path, keys: list[str]) -> Path:
    """Copy the demo clips `keys` into `dest` (created): a folder a test may then break on purpose.

    Args:
        demo_source: the demo JSON (the `demo_source` fixture).
        dest: the folder to fill.
        keys: clip file names.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for k in keys:
        shutil.copy(demo_source.parent / "audio" / k, dest / k)
    return dest


def write_demo_texts(folder: Path, n: int, seed: int) -> Path:
    """A Zalo JSON of `n` demo descriptions (`zalo_music.data.demo.make_specs(n, seed)`) in `folder`.

    Args:
        folder: where `texts.json` goes.
        n: descriptions.
        seed: `make_specs`'s seed.
    """
    from zalo_music.data.demo import make_specs

    path = folder / "texts.json"
    path.write_text(json.dumps({s.key_id: s.description for s in make_specs(n, seed=seed)}))
    return path
