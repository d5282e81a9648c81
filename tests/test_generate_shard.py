"""`generate --shard i/n` splits a run by whole batches: the union of the shards is byte-identical to one run.

Each batch is seeded from (seed, its ids), so sharding *items* (the old `items[i::n]`) regrouped them into other
batches with other seeds and other bytes. The LM is the tiny recipe's (random weights, debug codec), as in
`tests/test_best_of_n.py`: the audio means nothing, the bytes are what is compared.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import clap_fixture  # noqa: F401  (points HF_HOME at the stand-in cache: import first)
from tests.helpers.data import write_demo_texts

SEED, BATCH, DURATION, N_ITEMS, N_SHARDS = 3, 4, 1.0, 10, 3


@pytest.fixture(scope="module")
def model(tiny_random_musicgen):
    return tiny_random_musicgen


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    return write_demo_texts(tmp_path_factory.mktemp("shard"), N_ITEMS, seed=7)


def _gen():
    from zalo_music.generate import GenerationConfig

    return GenerationConfig(seed=SEED, batch_size=BATCH, duration=DURATION)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix == ".mp3"}


def test_shard_assigns_whole_batches_round_robin():
    """Batch k goes to shard k mod n; shards are disjoint, cover every batch, and keep batches whole."""
    from zalo_music.batches import make_batches, shard

    items = [(f"{k:02d}.mp3", "t", Path(f"{k:02d}.mp3")) for k in range(N_ITEMS)]
    batches = make_batches(items, BATCH)
    shards = [shard(batches, f"{i}/{N_SHARDS}") for i in range(N_SHARDS)]
    assert shards == [[batches[0]], [batches[1]], [batches[2]]]
    ids = [it[0] for s in shards for b in s for it in b]
    assert sorted(ids) == [it[0] for it in items] and len(set(ids)) == len(ids)
    assert shard(batches, None) == batches
    assert [len(s) for s in (shard(batches, "0/2"), shard(batches, "1/2"))] == [2, 1]
    assert shard(batches, "4/5") == []  # more shards than batches: the extra shards have nothing to do


def test_shards_union_is_byte_identical_to_unsharded_run(model, texts, tmp_path):
    """Shards 0/3, 1/3, 2/3 into one folder and into separate folders: disjoint, complete, same bytes."""
    from zalo_music.generate import generate

    summary = generate("tiny", texts, tmp_path / "full", _gen(), model=model, quiet=True)
    full = _files(tmp_path / "full")
    assert len(full) == N_ITEMS and summary["written"] == N_ITEMS

    parts: list[dict[str, bytes]] = []
    for i in range(N_SHARDS):
        generate("tiny", texts, tmp_path / f"part{i}", _gen(), shard_spec=f"{i}/{N_SHARDS}", model=model,
                 quiet=True)
        parts.append(_files(tmp_path / f"part{i}"))
    names = [n for p in parts for n in p]
    assert len(names) == len(set(names)), "shards overlap"
    assert sorted(names) == sorted(full), "shards do not cover every id"
    for p in parts:
        for name, data in p.items():
            assert data == full[name], f"{name}: sharded bytes differ from the unsharded run"
    assert [len(p) for p in parts] == [BATCH, BATCH, N_ITEMS - 2 * BATCH]  # whole batches, round-robin

    # Into one folder: each shard writes only its batches; together they are the unsharded run, and a rerun
    # of any shard (or of the whole run) on that folder resumes with nothing left to do.
    for i in range(N_SHARDS):
        s = generate("tiny", texts, tmp_path / "one", _gen(), shard_spec=f"{i}/{N_SHARDS}", model=model,
                     quiet=True)
        assert s["written"] == len(parts[i]) and s["skipped_existing"] == 0
    assert _files(tmp_path / "one") == full
    again = generate("tiny", texts, tmp_path / "one", _gen(), shard_spec=f"1/{N_SHARDS}", model=model, quiet=True)
    assert again["written"] == 0 and again["skipped_existing"] == len(parts[1])
    whole = generate("tiny", texts, tmp_path / "one", _gen(), model=model, quiet=True)
    assert whole["written"] == 0 and whole["skipped_existing"] == N_ITEMS
