"""Compose the real configs through the Dora main (as `dora run` would) and check what they say."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import PROJECT


@pytest.fixture(scope="module")
def main():
    from zalo_music.train import main

    return main


def test_tiny_recipe_composes_on_audiocraft_defaults(main):
    cfg = main.get_xp(["solver=zalo/tiny"]).cfg
    assert cfg.solver == "zalo_musicgen"
    assert cfg.device == "cpu" and cfg.autocast is True  # the real recipe's; the registry turns it off on CPU
    assert cfg.compression_model_checkpoint.endswith("/debug_codec/debug_encodec_fitted_32khz.th")  # persisted once
    assert cfg.conditioners.description.model == "lut"
    assert cfg.conditioners.description.lut.tokenizer == "words"  # patches.offline_word_tokenizer
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


@pytest.mark.slow  # two fresh interpreters composing the config: keeps `make test-fast` under 3 minutes
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
    # the recipe's device is cuda: bf16 autocast kept, fused AdamW on (zalo.speed.fused_adamw=auto)
    assert adapt_to_device(cfg) == ["optim.adam.fused=True (zalo.speed.fused_adamw=auto)"]
    assert cfg.autocast_dtype == "bfloat16" and cfg.autocast is True and cfg.optim.adam.fused is True
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # V100, T4
    assert adapt_to_device(cfg) and cfg.autocast_dtype == "float16" and cfg.autocast is True


def test_train_loader_shorter_than_an_epoch_is_refused(main):
    from zalo_music.solvers.musicgen import check_epoch_length

    cfg = main.get_xp(["solver=zalo/tiny", "optim.updates_per_epoch=9"]).cfg  # 64 samples / batch 8 = 8
    with pytest.raises(ValueError, match=r"dataset.train.num_samples>=72"):
        check_epoch_length(cfg, [None] * 8)
    check_epoch_length(cfg, [None] * 9)
    check_epoch_length(cfg, None)


RECIPES = {"real": ["solver=zalo/musicgen_small_ft"], "tiny": ["solver=zalo/tiny"]}
DSETS = ["dset=zalo/demo", "dset=zalo/prepared", "dset=zalo/prepared_loop30", "dset=zalo/prepared_concat30"]
TRAIN_FROM = ["train_from=audio", "train_from=tokens", "train_from=tokens_loop30"]


def _read_every_zalo_key(cfg) -> dict:
    """Call every function that reads `zalo.*` on `cfg` (struct mode: an undeclared key raises)."""
    from types import SimpleNamespace

    from zalo_music.decoding import from_cfg as generation_config_from_cfg
    from zalo_music.metrics.eval_settings import rerank_options_from_cfg
    from zalo_music.metrics.solver_eval import reference_path, settings_from_cfg
    from zalo_music.solvers.lora import LoraSettings
    from zalo_music.solvers.musicgen import ZaloMusicGenSolver, check_segment_policy
    from zalo_music.solvers.registry import _warn_padding
    from zalo_music.solvers.speed import fused_adamw_setting
    from zalo_music.tokens.encode import cache_root, dataset_name, encoded_unit, split_manifest, token_repeat
    from zalo_music.tokens.resolve import tokens_enabled

    holder = SimpleNamespace(cfg=cfg)
    check_segment_policy(cfg)
    _warn_padding(cfg)
    return {"clas": settings_from_cfg(cfg), "reference": reference_path(cfg), "lora": LoraSettings.from_cfg(cfg),
            "generate": generation_config_from_cfg(cfg), "rerank": rerank_options_from_cfg(cfg),
            "best": ZaloMusicGenSolver.best_choice.fget(holder), "grad_acc": ZaloMusicGenSolver.grad_acc.fget(holder),
            "tokens": tokens_enabled(cfg), "repeat": token_repeat(cfg), "unit": encoded_unit(cfg),
            "cache": cache_root(cfg) / dataset_name(cfg), "train": split_manifest(cfg, "train"),
            "fused": fused_adamw_setting(cfg), "speed": dict(cfg.zalo.speed)}


@pytest.mark.parametrize("dset", DSETS)
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_key_the_code_reads_is_declared(main, recipe, dset):
    """Compose each recipe x dset x train_from and run every reader of `zalo.*` in struct mode, the switches on."""
    from omegaconf import OmegaConf

    for train_from in TRAIN_FROM:
        argv = [*RECIPES[recipe], dset, train_from, "zalo.eval.clas=true", "zalo.lora.rank=4",
                "zalo.eval.candidates=2"]
        cfg = main.get_xp(argv).cfg
        assert OmegaConf.is_struct(cfg)  # as the solver sees it: reading an undeclared key raises
        read = _read_every_zalo_key(cfg)
        assert read["clas"] is not None and read["lora"].rank == 4 and read["generate"].candidates == 2
        assert read["tokens"] is (train_from != "train_from=audio")
        assert read["unit"] == 10.0 or dset.endswith("30")  # tokens_loop30 tiles 10-s codes to 30-s segments
        assert read["repeat"] == (3 if train_from.endswith("loop30") else 1)
    # the code reads no key outside what the recipe declares: every literal `zalo.<path>` of the package exists
    import re

    pattern = re.compile(r"\bcfg\.zalo((?:\.[a-z_]+)+)")
    used = {m for f in (PROJECT / "zalo_music").rglob("*.py") for m in pattern.findall(f.read_text())}
    assert used, "no cfg.zalo.<key> read found: the pattern is stale"
    for path in sorted(used):
        assert OmegaConf.select(cfg, "zalo" + path, throw_on_missing=True) is not None or \
            OmegaConf.select(cfg, "zalo" + path.rsplit(".", 1)[0]) is not None, path
    assert not any('get("zalo"' in f.read_text() for f in (PROJECT / "zalo_music").rglob("*.py"))


def test_tiny_is_a_short_diff_of_the_real_recipe(main):
    """`tiny` inherits the real recipe and changes scale, codec, conditioner, device and sizes only."""
    from omegaconf import OmegaConf

    text = (PROJECT / "config" / "solver" / "zalo" / "tiny.yaml").read_text()
    assert "- /solver/zalo/musicgen_small_ft" in text
    body = [ln for ln in text.split("defaults:")[1].splitlines()
            if ln.strip() and not ln.lstrip().startswith(("#", "- "))]
    assert len(body) <= 20, body
    real = main.get_xp(RECIPES["real"]).cfg
    tiny = main.get_xp(RECIPES["tiny"]).cfg

    def leaves(node, prefix=""):
        node = OmegaConf.to_container(node, resolve=False) if not isinstance(node, dict) else node
        for k, v in node.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]

    for group in ("zalo", "optim", "schedule", "evaluate", "generate", "checkpoint", "dataset"):
        missing = set(leaves(real[group], group + ".")) - set(leaves(tiny[group], group + "."))
        assert not missing, missing
    # what tiny keeps of the real recipe: optimizer, schedule type, evaluation and generation policies
    assert tiny.schedule.lr_scheduler == real.schedule.lr_scheduler == "cosine"
    assert tiny.optim.optimizer == real.optim.optimizer and tiny.optim.max_norm == real.optim.max_norm
    assert OmegaConf.to_container(tiny.zalo.generate) == OmegaConf.to_container(real.zalo.generate)
    assert tiny.continue_from is None and real.continue_from == "//pretrained/facebook/musicgen-small"


def test_recipe_decoding_equals_the_declared_defaults(main):
    """`zalo.generate.*` in the recipe YAML and audiocraft's own generate stage (`generate.lm.top_k`) say what
    decoding.GenerationConfig declares: a default changed in one place only fails here."""
    import dataclasses

    from zalo_music import decoding

    cfg = main.get_xp(["solver=zalo/musicgen_small_ft"]).cfg
    declared = {k: v for k, v in dataclasses.asdict(decoding.GenerationConfig()).items() if k != "candidates"}
    assert dict(cfg.zalo.generate) == declared
    assert cfg.zalo.eval.candidates in (None, decoding.GenerationConfig().candidates)
    assert cfg.generate.lm.top_k == declared["top_k"]
    assert decoding.from_cfg(cfg) == decoding.GenerationConfig()


def test_every_way_in_refuses_the_same_out_of_range_decoding(main):
    """The YAML reader, the dataclass and the command line share one range per option."""
    import argparse

    from zalo_music import decoding
    from zalo_music.cli import build_parser

    cfg = main.get_xp(["solver=zalo/musicgen_small_ft", "zalo.generate.top_p=1.5"]).cfg
    with pytest.raises(ValueError, match=r"zalo\.generate\.top_p=1\.5: out of range: must be >= 0 and <= 1"):
        decoding.from_cfg(cfg)
    with pytest.raises(ValueError, match="out of range"):
        decoding.GenerationConfig(top_p=1.5)
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["generate"]
    flags = {a.dest: a for a in sub._actions}
    for name, f in decoding.FIELDS.items():  # one flag per option, with its default and help
        assert flags[name].default == f.default and f.metadata["help"] in flags[name].help
    with pytest.raises(argparse.ArgumentTypeError, match="1.5 is out of range: must be >= 0 and <= 1"):
        flags["top_p"].type("1.5")
