"""Checkpoints load with torch's weights_only loader: audiocraft's own state yes, arbitrary objects no."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from omegaconf import OmegaConf

from zalo_music.runtime import prepare

prepare()  # the allow-list and safe loading under test (conftest ran it already; idempotent)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['ZALO_MUSIC_DATA_DIR']}/pwned",))


def test_audiocraft_checkpoint_round_trips_with_safe_loader(tmp_path):
    from audiocraft.utils.checkpoint import load_checkpoint, save_checkpoint

    cfg = OmegaConf.create({"solver": "zalo_musicgen", "optim": {"lr": 1e-4, "betas": [0.9, 0.95]},
                            "continue_from": None})
    state = {"xp.cfg": cfg, "xp.sig": "abcd1234", "model": {"w": torch.randn(3)}, "epoch": 2,
             "history": [{"train": {"ce": 3.2}}]}
    path = tmp_path / "checkpoint.th"
    save_checkpoint(state, path)
    loaded = load_checkpoint(path)
    assert loaded["xp.cfg"] == cfg and torch.equal(loaded["model"]["w"], state["model"]["w"])
    torch.load(path, weights_only=True)  # explicitly the safe loader


def test_arbitrary_pickled_object_is_refused(tmp_path):
    from audiocraft.utils.checkpoint import load_checkpoint

    path = tmp_path / "evil.th"
    torch.save({"model": {}, "payload": _Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)
    assert not os.path.exists(os.path.join(os.environ["ZALO_MUSIC_DATA_DIR"], "pwned"))


def test_safe_loader_is_not_disabled_globally():
    assert os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") in (None, "0", "")


@pytest.mark.e2e
def test_real_xp_checkpoint_loads_safely(tiny_xp):
    state = torch.load(tiny_xp["folder"] / "checkpoint.th", weights_only=True)
    assert state["xp.sig"] == tiny_xp["sig"]
    assert "model" in state and "best_state" in state
