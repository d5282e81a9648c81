"""Token cache: tokenize, resume, stale-cache refusal, audio/token loss equivalence, e2e training from tokens."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import PROJECT
from tests.helpers.data import DEMO_TOKEN_ARGV as TOKEN_ARGV
from tests.helpers.dora import TINY_ARGV, run_dora
from zalo_music.procutil import dora_command


def _solver(argv: list[str]):
    from audiocraft import train as ac_train

    from zalo_music.train import main

    xp = main.get_xp(argv)
    with xp.enter():
        return ac_train.get_solver(xp.cfg)


@pytest.fixture(scope="module")
def token_cache(demo_token_cache: dict) -> dict:
    return demo_token_cache  # one encoding per session (tests/conftest.py)


def test_tokenize_layout_and_resume(token_cache: dict):
    from zalo_music.tokens.encode import tokenize

    cache = Path(token_cache["cache"])
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["key"] == token_cache["key"] and cache.name.startswith("debug_encodec_fitted_32khz-")
    assert meta["key"]["segment"] == {"policy": "whole_clip", "segment_duration": 10.0}
    shard = np.load(cache / "train" / "shard-00000.npy", mmap_mode="r")
    assert shard.dtype == np.int16 and shard.shape[1:] == (4, 250)  # [N, n_q, 10 s x 25 Hz]
    assert 0 <= shard.min() and shard.max() < 400
    rows = json.loads((cache / "train" / "index.json").read_text())["rows"]
    assert len(rows) == shard.shape[0] and Path(rows[0]["sidecar"]).is_file()
    assert sum(s["encoded"] for s in token_cache["splits"].values()) == 64

    mtimes = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")}
    again = tokenize(TOKEN_ARGV, quiet=True)  # resume: nothing left to encode, no file rewritten
    assert all(s["encoded"] == 0 for s in again["splits"].values()), again
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")} == mtimes


def test_loss_from_tokens_equals_loss_from_audio(token_cache: dict):
    """Same clips, offsets, attributes, seed and model: CE through the codec equals CE from the cache."""
    from audiocraft.solvers import builders

    from zalo_music.tokens.dataset import TokenBatch

    # min_segment_ratio=1: audiocraft then never seeks into a 10-s clip, so both paths see whole clips.
    solver = _solver([*TOKEN_ARGV, "dataset.min_segment_ratio=1.0"])
    assert solver.token_cache == Path(token_cache["cache"])
    token_ds = solver.dataloaders["train"].dataset
    audio_ds = builders.get_audio_datasets(solver.cfg, dataset_type=builders.DatasetType.MUSIC)["train"].dataset
    assert solver.cfg.dataset.train.merge_text_p == 0  # text augmentation off in the tiny recipe
    for ds in (token_ds, audio_ds):
        ds.current_epoch = 1
    idx = list(range(8))
    tok_batch = token_ds.collater([token_ds[i] for i in idx])
    wav_batch = audio_ds.collater([audio_ds[i] for i in idx])
    assert isinstance(tok_batch, TokenBatch)
    assert [i.meta.path for i in tok_batch.infos] == [i.meta.path for i in wav_batch[1]]
    assert [i.description for i in tok_batch.infos] == [i.description for i in wav_batch[1]]

    solver.model.eval()
    ces = []
    with torch.no_grad():
        for batch in (wav_batch, tok_batch):
            cond, codes, mask = solver._prepare_tokens_and_attributes(batch)
            out = solver.model.compute_predictions(codes, [], cond)
            ce, _ = solver._compute_cross_entropy(out.logits, codes, mask & out.mask)
            ces.append((ce.item(), codes))
    (ce_audio, codes_audio), (ce_tokens, codes_tokens) = ces
    assert torch.equal(codes_audio, codes_tokens)
    assert ce_tokens == pytest.approx(ce_audio, rel=1e-6, abs=1e-6)
    with torch.no_grad():  # zalo.speed.sync_free: host tokenization and non-blocking copies give the same batch
        want = solver._prepare_tokens_and_attributes(tok_batch)
        solver.cfg.zalo.speed.sync_free = True
        got = solver._prepare_tokens_and_attributes(tok_batch)
    assert all(torch.equal(g, w) for g, w in zip(got[1:], want[1:], strict=True))
    assert all(torch.equal(got[0][k][i], want[0][k][i]) for k in want[0] for i in (0, 1))


def test_token_batches_are_pinned_for_a_gpu(token_cache: dict):
    """On CUDA the loaders pin each batch, so the solver's `non_blocking` copy of the codes never waits for the
    GPU; on a CPU there is nothing to pin."""
    import warnings

    from zalo_music.tokens.dataset import build_token_loaders
    from zalo_music.train import main

    for device, pinned in (("cpu", False), ("cuda", True)):
        cfg = main.get_xp([*TOKEN_ARGV, f"device={device}"]).cfg
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns that no accelerator is there to pin for
            loaders = build_token_loaders(cfg, token_cache["cache"], frame_rate=25, special_token=2048)
        assert {split: loader.pin_memory for split, loader in loaders.items()} == {"train": pinned, "valid": pinned}


@pytest.mark.slow  # tokenizes the demo again with another codec (~30 s)
def test_stale_cache_is_refused(token_cache: dict, work_root: Path):
    from zalo_music import debug_codec
    from zalo_music.tokens.encode import tokenize
    from zalo_music.tokens.key import StaleTokenCacheError

    # A cache written by another debug codec (drawn from seed 1), alone in its own root.
    other_root = work_root / "tokens_seed1"
    codec = debug_codec.write(work_root / "codec_seed1" / "debug_codec" / "debug_encodec_fitted_32khz.th", seed=1)
    other_argv = [*TOKEN_ARGV, f"compression_model_checkpoint=//pretrained/{codec}"]
    other = tokenize(other_argv, out=other_root, quiet=True)
    assert other["key"]["codec"]["state_sha"] != token_cache["key"]["codec"]["state_sha"]
    with pytest.raises(StaleTokenCacheError) as exc:  # explicit path
        _solver([*TOKEN_ARGV, f"zalo.tokens.path={other['cache']}"])
    msg = str(exc.value)
    assert "codec.checkpoint: this XP" in msg and str(codec) in msg and "codec.state_sha" in msg
    assert "`zalo-music tokenize solver=zalo/tiny dset=zalo/demo`" in msg  # train_from= stripped: tokenize reads audio
    from zalo_music.tokens.encode import compose_config, load_codec
    from zalo_music.tokens.resolve import resolve_cache

    cfg = compose_config([*TOKEN_ARGV, f"zalo.tokens.dir={other_root}"])
    with pytest.raises(StaleTokenCacheError, match="other keys"):  # looked up by dataset + codec
        resolve_cache(cfg, load_codec(cfg))
    with pytest.raises(StaleTokenCacheError, match="remove"):  # tokenize into a cache of another policy
        (Path(other["cache"]) / "meta.json").write_text(json.dumps(
            {"key": {**other["key"], "n_q": 8}, "splits": {}}))
        tokenize(other_argv, out=other_root, quiet=True)


def test_damaged_shard_is_encoded_again_on_resume(token_cache: dict, tmp_path: Path):
    """A finished cache whose shard was truncated since: the rerun re-encodes that shard (same codes), only it."""
    import shutil

    from zalo_music.tokens.encode import tokenize

    src = Path(token_cache["cache"])
    root = tmp_path / "tokens"
    copy = root / src.parent.name / src.name
    shutil.copytree(src, copy)
    shard = copy / "train" / "shard-00000.npy"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    again = tokenize(TOKEN_ARGV, out=root, quiet=True)
    assert again["cache"] == str(copy)
    train_rows = json.loads((copy / "train" / "index.json").read_text())["rows"]
    assert again["splits"]["train"]["encoded"] == len(train_rows)  # the damaged (only) train shard
    assert again["splits"]["valid"]["encoded"] == 0
    assert np.array_equal(np.load(shard), np.load(src / "train" / "shard-00000.npy"))


def test_shard_that_does_not_read_back_is_never_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from zalo_music.tokens import store

    real_save = np.save

    def short_save(f, arr):  # a write that loses its tail (disk full, failing device)
        real_save(f, arr)
        f.truncate(f.tell() - 64)

    monkeypatch.setattr(np, "save", short_save)
    codes = [np.arange(40, dtype=np.int64).reshape(4, 10) % 7]
    with pytest.raises(OSError, match="does not read back"):
        store.write_shard(tmp_path, 0, codes, [{"path": "a.flac", "frames": 10}])
    assert list(tmp_path.iterdir()) == []  # neither the shard nor its completion marker


def test_loop_tiling_matches_encoding_the_loop_up_to_seams(token_cache: dict):
    """The 30-s loop in token space (codes tiled 3x) vs encoding the looped audio: differences stay at seams."""
    from zalo_music.tokens.encode import compose_config, load_codec
    from zalo_music.tokens.loop import compare_loop

    codec, split = load_codec(compose_config(TOKEN_ARGV)), Path(token_cache["cache"]) / "valid"
    # +-4 frames: the debug codec's receptive field at its 25-Hz frame rate reaches ~3 frames past a seam
    report = compare_loop(codec, split, n=2, seam_frames=4)
    assert report["agree"] > 0.9, report
    assert report["agree_away_from_seams"] >= report["agree"], report


@pytest.mark.e2e
def test_dora_run_from_tokens_close_to_audio(token_cache: dict, request: pytest.FixtureRequest):
    argv = [*TOKEN_ARGV, *TINY_ARGV[2:]]
    # The token XP runs while the audio XP (the session's `tiny_xp`) is built: their start-up overlaps.
    proc = subprocess.Popen(dora_command("run", *argv), cwd=PROJECT,
                            env=dict(os.environ), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        tiny_xp = request.getfixturevalue("tiny_xp")
    finally:
        log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-6000:]
    assert "training from tokens" in log
    info = run_dora("info", *argv)
    folder = Path(next(ln.split("Folder is", 1)[1].strip() for ln in (info.stdout + info.stderr).splitlines()
                        if "Folder is" in ln))
    history = json.loads((folder / "history.json").read_text())
    ce_tokens, ce_audio = history[-1]["valid"]["ce"], tiny_xp["history"][-1]["valid"]["ce"]
    # Same LM init, same files at each step, same conditioning. The audio run also seeks 0-0.5 s into clips
    # (min_segment_ratio 0.95) and zero-pads the end, the token run takes the whole clip: measured gap
    # 0.011 nats (4.661 vs 4.649) after 8 steps that took train ce from 6.5 to 5.3. 0.1 nats is ~9x that
    # gap and under a tenth of what the 8 steps gain, so a broken token path (wrong codes/conditioning) fails.
    assert abs(ce_tokens - ce_audio) < 0.1, (ce_tokens, ce_audio)
    assert len(history) == len(tiny_xp["history"])
