"""Two processes on CPU (gloo): Dora's own launcher (`dora run -d --ddp_workers 2`) and the token loaders.

One 2-rank `dora run` of the tiny recipe covers the distributed claims of the README at once: it trains from the
token cache with `zalo.grad_acc=2` and runs the CLAS evaluate stage (stand-in CLAP, `tests/helpers/clap_fixture.py`).
Checked from the per-rank logs (`solver.log.<rank>`): every rank ends the epoch with the same weights (the
fingerprint `ZaloMusicGenSolver` logs per rank, equal to the saved checkpoint's), every rank reports the same
CLAS metrics on the whole evaluate split (all-gathered), and the ranks trained on different batches.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch

from tests.helpers import clap_fixture  # noqa: F401  (points HF_HOME / //reference at temp folders: import first)
from tests.helpers.data import DEMO_TOKEN_ARGV as TOKEN_ARGV
from tests.helpers.dora import run_dora

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# dora's launcher on a CPU-only machine before train.py picks the gloo backend (change request to helper C).


@pytest.fixture(scope="module")
def token_cache(demo_token_cache: dict) -> dict:
    return demo_token_cache  # one encoding per session (tests/conftest.py)


@pytest.fixture(scope="module")
def clap_checkpoint() -> Path:
    path = clap_fixture.HF_ROOT / "ckpt" / "clap_tiny_random.pt"  # the file test_metrics builds, if it did
    return path if path.is_file() else clap_fixture.build_clap_checkpoint(path)


def _rank_log(folder: Path, rank: int) -> str:
    return ANSI.sub("", (folder / f"solver.log.{rank}").read_text())


def _one(pattern: str, text: str, what: str) -> re.Match:
    found = list(re.finditer(pattern, text))
    assert len(found) == 1, f"expected one {what} line, found {len(found)}"
    return found[0]


@pytest.mark.e2e
@pytest.mark.slow
def test_two_ranks_train_from_tokens_with_grad_acc_and_agree_on_clas(token_cache, clap_checkpoint):
    from zalo_music.runtime import prepare

    prepare()  # the safe-load allow-list for the checkpoint's DictConfig
    from zalo_music.solvers.classic_options import weights_fingerprint
    from zalo_music.train import main

    n_eval = 4
    argv = ["solver=zalo/tiny", "dset=zalo/demo", "train_from=tokens", "zalo.eval.clas=true", "optim.epochs=1", "optim.updates_per_epoch=4",
            "zalo.grad_acc=2", f"zalo.eval.clap_checkpoint={clap_checkpoint}", "zalo.eval.clap_model=HTSAT-tiny",
            f"dataset.evaluate.num_samples={n_eval}", "evaluate.fixed_generation_duration=1",
            "zalo.eval.reference_max=4", "dataset.generate.num_samples=2", "generate.lm.gen_duration=1"]
    proc = run_dora("run", "-d", "--ddp_workers", "2", *argv, check=False)
    out = proc.stdout + proc.stderr
    folder = Path(main.dora.dir) / "xps" / main.get_xp(argv).sig
    assert proc.returncode == 0, out[-6000:]
    logs = [_rank_log(folder, r) for r in (0, 1)]

    # Token loaders: each rank draws its own share of the train indices (DistributedSampler), half the valid set.
    for rank, log in enumerate(logs):
        assert f"token loaders of rank {rank}/2: train DistributedSampler over 64 items, valid 8 of 16" in log
    # Same initial weights (seeded build), different batches: the first step's ce differs between the ranks.
    first_ce = [float(_one(r"Train \| Epoch 1 \| 1/4 \|.*?\| ce ([0-9.]+)", log, "first train step").group(1))
                for log in logs]
    assert first_ce[0] != first_ce[1], first_ce

    # grad_acc=2 over 4 micro-batches: 2 optimizer steps whose gradients are averaged across ranks.
    prints = [_one(rf"rank {r}/2 weights fingerprint after train epoch 1: ([0-9a-f]+)", log, "fingerprint").group(1)
              for r, log in enumerate(logs)]
    assert prints[0] == prints[1]
    ckpt = torch.load(folder / "checkpoint.th", map_location="cpu", weights_only=True, mmap=True)
    assert weights_fingerprint(ckpt["model"]) == prints[0]  # the logged weights are the trained, saved ones

    # CLAS: every rank embeds its shard, all-gathers, and scores the whole evaluate split.
    scores = [ast.literal_eval(_one(r"CLAS evaluation on \d+ items .*?: (\{.*\})", log, "CLAS").group(1))
              for log in logs]
    assert scores[0] == scores[1]
    assert scores[0]["n_items"] == n_eval
    history = json.loads((folder / "history.json").read_text())
    assert history[-1]["evaluate"]["clas"] == pytest.approx(scores[0]["clas"])


def _sharding_worker(rank: int, world: int, init_file: str, cache: str, out: str) -> None:
    from zalo_music.runtime import prepare

    prepare()  # a spawned process is an entry point: the environment and patches before audiocraft
    from zalo_music.tokens.dataset import build_token_loaders
    from zalo_music.tokens.encode import compose_config

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cfg = compose_config(TOKEN_ARGV)
        loaders = build_token_loaders(cfg, cache, frame_rate=25, special_token=int(cfg.transformer_lm.card))
        train = loaders["train"]
        train.sampler.set_epoch(3)  # as audiocraft's solver does at each epoch
        seen = [f"{info.meta.path}@{info.seek_time}" for batch in train for info in batch.infos]
        result = {"train_indices": list(train.sampler), "train_items": seen,
                  "valid_indices": list(loaders["valid"].dataset.indices),
                  "valid_len": len(loaders["valid"].dataset.dataset)}
        Path(out, f"{rank}.json").write_text(json.dumps(result))
    finally:
        torch.distributed.destroy_process_group()


def test_token_loaders_shard_across_two_ranks(token_cache, tmp_path):
    """Each of 2 gloo ranks draws different train indices and reads its own slice of the valid split."""
    import torch.multiprocessing as mp

    mp.spawn(_sharding_worker, args=(2, str(tmp_path / "rendezvous"), token_cache["cache"], str(tmp_path)),
             nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    train = [set(r["train_indices"]) for r in ranks]
    assert len(ranks[0]["train_indices"]) == len(ranks[1]["train_indices"]) == 32  # 64 samples / 2 ranks
    assert not train[0] & train[1] and train[0] | train[1] == set(range(64))
    assert ranks[0]["train_items"] != ranks[1]["train_items"]
    assert len(ranks[0]["train_items"]) == 32
    valid = [set(r["valid_indices"]) for r in ranks]
    assert not valid[0] & valid[1] and valid[0] | valid[1] == set(range(ranks[0]["valid_len"]))


@pytest.mark.e2e
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine `dora run -d` would start training")
def test_dora_run_d_without_gpus_fails_clearly(demo_manifests):
    proc = run_dora("run", "-d", *TOKEN_ARGV, check=False, timeout=300)
    assert proc.returncode != 0
    assert "DDP is only available on GPU" in proc.stdout + proc.stderr

