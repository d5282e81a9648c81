"""Compose the real configs through the Dora main (as `dora run` would) and check what they say."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT


@pytest.fixture(scope="module")
def main():
    from zalo_music.train import main

    return main


def test_tiny_recipe_composes_on_audiocraft_defaults(main):
    cfg = main.get_xp(["solver=zalo/tiny"]).cfg
    assert cfg.solver == "zalo_musicgen"
    assert cfg.device == "cpu" and cfg.autocast is False
    assert cfg.compression_model_checkpoint == "//pretrained/debug_compression_model"
    assert cfg.conditioners.description.model == "lut"
    assert cfg.conditioners.description.lut.tokenizer == "noop"
    assert cfg.transformer_lm.dim == 64  # audiocraft's xsmall scale
    assert cfg.transformer_lm.card == 400
    assert cfg.dataset.segment_duration == 10
    # a key that only audiocraft's config.yaml defines: the base config really is audiocraft's
    assert cfg.efficient_attention_backend == "torch"
    assert cfg.datasource.train.endswith("/demo/train")
    assert cfg.datasource.train.startswith(os.environ["ZALO_MUSIC_MANIFEST_DIR"])


def test_finetune_recipe(main):
    cfg = main.get_xp(["solver=zalo/musicgen_small_ft", "dset=zalo/prepared"]).cfg
    assert cfg.continue_from == "//pretrained/facebook/musicgen-small"
    assert cfg.compression_model_checkpoint == "//pretrained/facebook/encodec_32khz"
    assert cfg.transformer_lm.dim == 1024 and cfg.transformer_lm.num_layers == 24  # musicgen-small
    assert cfg.transformer_lm.card == 2048 and cfg.transformer_lm.n_q == 4
    assert cfg.conditioners.description.model == "t5"
    assert cfg.conditioners.description.t5.name == "t5-base"
    assert cfg.fuser.cross == ["description"]
    assert cfg.optim.optimizer == "adamw" and cfg.optim.lr < 1e-3
    assert cfg.schedule.lr_scheduler == "cosine" and cfg.schedule.cosine.warmup <= 500
    assert cfg.autocast is True and cfg.device == "cuda"
    assert cfg.autocast_dtype == "bfloat16"  # A100/H100; zalo_music.solvers.registry adapts other devices
    # audiocraft's AudioDataset.__len__ is num_samples: null crashed torch's sampler, too few ends epochs early
    assert cfg.dataset.train.num_samples >= cfg.dataset.batch_size * cfg.optim.updates_per_epoch
    # 10-s segments on 10-s clips: never more than 5% padding
    assert cfg.dataset.segment_duration == cfg.zalo.clip_duration == 10
    assert cfg.dataset.min_segment_ratio >= 0.95
    assert cfg.datasource.train.endswith("/zalo_train/train")


def test_our_groups_are_groups_for_dora(main):
    """Overrides of groups from config/ must be seen as group overrides (signature delta by group name)."""
    xp = main.get_xp(["solver=zalo/tiny", "conditioner=zalo/t5_ft", "dset=zalo/prepared",
                      "zalo.dataset=other"])
    delta = dict((k, v) for k, v in xp.delta)
    assert delta["conditioner"] == "zalo/t5_ft"
    assert delta["dset"] == "zalo/prepared"
    assert xp.cfg.conditioners.description.model == "t5"
    assert xp.cfg.datasource.valid.endswith("/other/valid")
    base = main.get_xp(["solver=zalo/tiny"])
    assert xp.sig != base.sig


def test_signature_is_stable_and_sensitive(main):
    a = main.get_xp(["solver=zalo/tiny", "optim.lr=0.002"]).sig
    b = main.get_xp(["solver=zalo/tiny", "optim.lr=0.002"]).sig
    c = main.get_xp(["solver=zalo/tiny", "optim.lr=0.003"]).sig
    assert a == b != c


def test_xps_live_under_the_configured_folder(main):
    xp = main.get_xp(["solver=zalo/tiny"])
    assert str(xp.folder).startswith(os.environ["ZALO_MUSIC_DORA_DIR"])
    assert xp.folder.parent.name == "xps"


@pytest.mark.parametrize("extra_env", [{"USER": None}, {"AUDIOCRAFT_CLUSTER": "aws"}],
                         ids=["no-USER", "aws-cluster"])
def test_composes_without_user_and_on_aws(main, extra_env):
    env = dict(os.environ)
    for k, v in extra_env.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    code = ("from zalo_music.train import main; from audiocraft.environment import AudioCraftEnvironment as E;"
            "print(main.get_xp(['solver=zalo/tiny']).sig, E.get_cluster())")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    sig, cluster = out.stdout.split()[-2:]
    assert sig == main.get_xp(["solver=zalo/tiny"]).sig
    assert cluster == extra_env.get("AUDIOCRAFT_CLUSTER", cluster)


def test_segment_policy_refuses_padded_training(main):
    from zalo_music.solvers.musicgen import check_segment_policy

    check_segment_policy(main.get_xp(["solver=zalo/tiny"]).cfg)
    cfg = main.get_xp(["solver=zalo/tiny", "dataset.segment_duration=30"]).cfg
    with pytest.raises(ValueError, match="padded silence"):
        check_segment_policy(cfg)


def test_solver_registry_dispatches_ours_and_falls_back(main):
    import audiocraft.solvers as ac_solvers

    from zalo_music.solvers import registry

    assert ac_solvers.get_solver is registry.get_solver
    assert registry.SOLVERS["zalo_musicgen"].endswith("ZaloMusicGenSolver")
    cfg = main.get_xp(["solver=zalo/tiny"]).cfg
    cfg.solver = "nope"
    with pytest.raises(KeyError):  # unknown names reach audiocraft's registry, which refuses them
        registry.get_solver(cfg)


@pytest.mark.parametrize("argv", [["solver=zalo/musicgen_small_ft"], ["solver=musicgen/musicgen_base_32khz", "dset=zalo/demo"]],
                         ids=["zalo-ft", "audiocraft-base"])
def test_device_adaptation_on_cpu(main, argv):
    from zalo_music.solvers.registry import adapt_to_device

    cfg = main.get_xp([*argv, "device=cpu"]).cfg
    assert cfg.autocast is True
    changes = adapt_to_device(cfg)
    assert cfg.autocast is False and any("autocast off" in c for c in changes)
    if cfg.optim.ema.use:  # audiocraft's recipe keeps its EMA on CUDA
        assert cfg.optim.ema.device == "cpu" and any("ema" in c for c in changes)
    assert adapt_to_device(cfg) == []  # nothing left to adapt


def test_device_adaptation_on_gpus(main, monkeypatch):
    import torch

    from zalo_music.solvers.registry import adapt_to_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cfg = main.get_xp(["solver=zalo/musicgen_small_ft"]).cfg
    assert adapt_to_device(cfg) == [] and cfg.autocast_dtype == "bfloat16" and cfg.autocast is True
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # V100, T4
    assert adapt_to_device(cfg) and cfg.autocast_dtype == "float16" and cfg.autocast is True


def test_train_loader_shorter_than_an_epoch_is_refused(main):
    from zalo_music.solvers.musicgen import check_epoch_length

    cfg = main.get_xp(["solver=zalo/tiny", "optim.updates_per_epoch=9"]).cfg  # 64 samples / batch 8 = 8
    with pytest.raises(ValueError, match=r"dataset.train.num_samples>=72"):
        check_epoch_length(cfg, [None] * 8)
    check_epoch_length(cfg, [None] * 9)
    check_epoch_length(cfg, None)
