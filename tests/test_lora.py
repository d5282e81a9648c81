"""LoRA (`zalo.lora.*`, zalo_music/solvers/lora.py): adapters on audiocraft's LM, adapter-only state, merging."""

from __future__ import annotations

import copy

import pytest
import torch

from zalo_music.procutil import dora_command


@pytest.fixture(scope="module")
def lm_cfg():
    from zalo_music.train import main

    # custom=true: audiocraft's own attention (the real recipe's, with memory_efficient=true on GPU), whose
    # out_proj is a module call; the tiny recipe's torch nn.MultiheadAttention would bypass an adapter there.
    return main.get_xp(["solver=zalo/tiny", "transformer_lm.custom=true"]).cfg


def _lm(cfg, seed=0):
    from audiocraft.models import builders

    torch.manual_seed(seed)
    return builders.get_lm_model(cfg).eval()


def _batch():
    from audiocraft.modules.conditioners import ConditioningAttributes

    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 400, (2, 4, 40), generator=g)
    attrs = [ConditioningAttributes(text={"description": "calm solo piano"}),
             ConditioningAttributes(text={"description": "fast rock drums and guitar"})]
    return codes, attrs


def _logits(lm, batch):
    with torch.no_grad():
        return lm.compute_predictions(*batch).logits.nan_to_num()


def _randomise_adapters(lm, seed=3):
    # Fresh adapters have B = 0 (no effect): give them a real update so merging has something to prove.
    g = torch.Generator().manual_seed(seed)
    for name, p in lm.named_parameters():
        if "lora_B" in name:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_only_adapters_train_and_the_state_holds_only_them(lm_cfg):
    from zalo_music.solvers.lora import LoraSettings, adapter_parameters, attach_lora

    lm = _lm(lm_cfg)
    total = sum(p.numel() for p in lm.parameters())
    attach_lora(lm, LoraSettings(rank=4))
    trainable = adapter_parameters(lm)
    names = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    # out_proj of self and cross attention, linear1, linear2 in each of the 2 xsmall layers
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names} == {"out_proj", "linear1", "linear2"}
    assert sum(p.numel() for p in trainable) < 0.05 * total
    state = lm.state_dict()
    assert state and all(".lora_" in k for k in state)


def test_merged_logits_equal_unmerged_and_differ_from_base(lm_cfg):
    from zalo_music.solvers.lora import LoraSettings, attach_lora, merge_lora

    batch = _batch()
    lm = _lm(lm_cfg)
    base_keys = set(lm.state_dict())
    base_logits = _logits(lm, batch)
    tuner = attach_lora(lm, LoraSettings(rank=4, alpha=8))
    assert torch.allclose(_logits(lm, batch), base_logits, atol=1e-6)  # B = 0 at init: no change yet
    _randomise_adapters(lm)
    unmerged = _logits(lm, batch)
    assert (unmerged - base_logits).abs().max() > 1e-2
    merged_lm = merge_lora(tuner)
    assert set(merged_lm.state_dict()) == base_keys
    assert (_logits(merged_lm, batch) - unmerged).abs().max() < 1e-4


def test_base_state_loads_by_plain_names_and_adapters_round_trip(lm_cfg):
    from zalo_music.solvers.lora import LoraSettings, attach_lora

    batch = _batch()
    pretrained = _lm(lm_cfg, seed=7)
    base_state = copy.deepcopy(pretrained.state_dict())
    lm = _lm(lm_cfg, seed=0)
    attach_lora(lm, LoraSettings(rank=4))
    lm.load_state_dict(base_state)  # audiocraft's continue_from=//pretrained path: plain keys, no adapters
    assert torch.allclose(_logits(lm, batch), _logits(pretrained, batch), atol=1e-6)
    _randomise_adapters(lm)
    adapters = copy.deepcopy(lm.state_dict())
    expected = _logits(lm, batch)

    resumed = _lm(lm_cfg, seed=0)
    resumed.load_state_dict(base_state)  # the solver loads the base from continue_from ...
    attach_lora(resumed, LoraSettings(rank=4))
    resumed.load_state_dict(adapters)  # ... then the XP checkpoint's adapters
    assert torch.allclose(_logits(resumed, batch), expected, atol=1e-6)
    with pytest.raises(RuntimeError):  # a state with both kinds must match exactly
        resumed.load_state_dict({**adapters, "transformer.layers.0.norm1.weight": torch.ones(64)})


def test_settings_refuse_what_cannot_work(lm_cfg):
    from omegaconf import OmegaConf

    from zalo_music.solvers.lora import LoraSettings, attach_lora

    def settings(**kw):
        block = {"rank": 4, "alpha": 16, "dropout": 0.0, "targets": ["out_proj"], **kw}
        return LoraSettings.from_cfg(OmegaConf.create({"zalo": {"lora": block}}))

    assert settings(rank=0) is None
    with pytest.raises(ValueError, match="in-projection"):
        settings(targets=["in_proj_weight"])
    with pytest.raises(ValueError, match="dropout"):
        settings(dropout=1.5)
    from zalo_music.train import main

    mha_cfg = main.get_xp(["solver=zalo/tiny"]).cfg  # torch nn.MultiheadAttention path
    with pytest.raises(ValueError, match="custom=true"):
        attach_lora(_lm(mha_cfg), LoraSettings(rank=4))
    with pytest.raises(ValueError, match="match no module"):
        attach_lora(_lm(lm_cfg), LoraSettings(rank=4, targets=("nothing",)))


@pytest.mark.e2e
@pytest.mark.slow
def test_lora_xp_trains_resumes_and_exports_merged(demo_manifests, tmp_path):
    """A LoRA XP through `dora run`: adapters only in its checkpoint, base untouched, resume, merged export."""
    import json
    import os
    import signal
    import subprocess
    import time

    from tests.helpers import PROJECT
    from tests.helpers.dora import run_dora
    from zalo_music import env
    from zalo_music.export import export_xp
    from zalo_music.solvers.lora import merged_lm_state
    from zalo_music.train import main

    common = ["solver=zalo/tiny", "dset=zalo/demo", "optim.updates_per_epoch=4", "transformer_lm.custom=true"]
    base_argv = [*common, "optim.epochs=1"]
    run_dora("run", *base_argv)
    base_sig = main.get_xp(base_argv).sig
    lora_argv = [*common, "optim.epochs=2", f"continue_from=//sig/{base_sig}", "zalo.lora.rank=4"]
    sig = main.get_xp(lora_argv).sig
    folder = env.dora_dir() / "xps" / sig

    # Stop the XP with SIGTERM once its first epoch is committed, then rerun it: it must resume, not restart.
    proc = subprocess.Popen(dora_command("run", *lora_argv), cwd=PROJECT,
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        history = folder / "history.json"
        if history.is_file() and history.read_text().strip() not in ("", "[]"):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    done_before = len(json.loads((folder / "history.json").read_text()))
    assert done_before == 1
    rerun = run_dora("run", *lora_argv)
    assert "Loading existing checkpoint" in rerun.stdout + rerun.stderr
    assert len(json.loads((folder / "history.json").read_text())) == 2

    pkg = torch.load(folder / "checkpoint.th", map_location="cpu", weights_only=True)
    assert pkg["model"] and all(".lora_" in k for k in pkg["model"])
    assert all(".lora_" in k for k in pkg["best_state"]["model"])
    base_ckpt = env.dora_dir() / "xps" / base_sig / "checkpoint.th"
    ratio = (folder / "checkpoint.th").stat().st_size / base_ckpt.stat().st_size
    assert ratio < 0.05, f"LoRA checkpoint is {ratio:.1%} of the full one"

    base = torch.load(base_ckpt, map_location="cpu", weights_only=True)["best_state"]["model"]
    merged = merged_lm_state(pkg)
    assert merged.keys() == base.keys()
    targeted = [k for k in base if k.endswith(("out_proj.weight", "linear1.weight", "linear2.weight"))]
    assert targeted and all(not torch.equal(merged[k], base[k]) for k in targeted)
    assert all(torch.equal(merged[k], base[k]) for k in base if k not in targeted)

    export = export_xp(sig, tmp_path / "lora_export", keep_adapters=True)
    adapters = torch.load(export / "lora_adapters.pt", map_location="cpu", weights_only=True)
    assert adapters["lora"]["rank"] == 4 and adapters["base"] == f"//sig/{base_sig}"
    assert adapters["adapters"].keys() == pkg["best_state"]["model"].keys()
    exported = torch.load(export / "state_dict.bin", map_location="cpu", weights_only=True)["best_state"]
    assert exported.keys() == merged.keys() and all(torch.equal(exported[k], merged[k]) for k in merged)
    from zalo_music.generate import load_model

    model = load_model(str(export), device="cpu")
    model.set_generation_params(duration=1.0)
    wav = model.generate(["calm piano"])
    assert wav.shape[-1] == model.sample_rate and torch.isfinite(wav).all()


def test_trainer_front_end_and_grid_set_the_rank():
    from grids.zalo_ft_lora import sweep
    from tests.test_trainer import _map
    from zalo_music.train import main

    o = _map(lora_rank=8)
    assert o["zalo.lora.rank"] == "8" and o["solver"] == "zalo/musicgen_small_ft"
    assert "zalo.lora.rank" not in _map()  # default: full fine-tuning
    xps = sweep()
    assert {x["zalo.lora.rank"] for x in xps} == {8, 16, 32} and len(xps) == 6
    cfg = main.get_xp(["solver=zalo/musicgen_small_ft", "dset=zalo/prepared",
                       *(f"{k}={v}" for k, v in xps[0].items())]).cfg
    assert cfg.zalo.lora.rank == 8 and cfg.zalo.lora.alpha == 16
    assert cfg.continue_from == "//pretrained/facebook/musicgen-small"


def test_optimizer_is_the_same_whatever_the_mixin_order(lm_cfg, monkeypatch):
    """LoRA and the classic options (grad_acc) only choose what trains; the solver builds the optimizer and
    schedule once, after both: either mixin order gives the same groups and the same schedule length."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from zalo_music.solvers import lora
    from zalo_music.solvers.classic_options import ClassicOptionsMixin
    from zalo_music.solvers.lora import LoraMixin
    from zalo_music.solvers.musicgen import ZaloMusicGenSolver

    cfg = copy.deepcopy(lm_cfg)
    OmegaConf.set_struct(cfg, False)
    cfg.zalo.lora.rank, cfg.zalo.grad_acc = 4, 2
    monkeypatch.setattr(lora, "load_base_weights", lambda lm, continue_from: "test")

    class AudiocraftLike:  # what MusicGenSolver.build_model leaves: the LM, an optimizer over all of it
        def __init__(self) -> None:
            self.cfg, self.total_updates = cfg, 40
            self.best_state = SimpleNamespace(update=lambda *a: None)
            self.stateful = SimpleNamespace(sources={"model": None})

        def build_model(self) -> None:
            self.model = _lm(cfg)
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1.0)
            self.lr_scheduler = None

    class ClassicFirst(ClassicOptionsMixin, LoraMixin, AudiocraftLike):
        build_optimizer = ZaloMusicGenSolver.build_optimizer

    class LoraFirst(LoraMixin, ClassicOptionsMixin, AudiocraftLike):
        build_optimizer = ZaloMusicGenSolver.build_optimizer

    built = []
    for cls in (ClassicFirst, LoraFirst):
        solver = cls()
        solver.build_model()
        solver.build_optimizer()  # what ZaloMusicGenSolver.build_model does after the mixins
        names = {id(p): n for n, p in solver.model.named_parameters()}
        groups = [[names[id(p)] for p in g["params"]] for g in solver.optimizer.param_groups]
        built.append((type(solver.optimizer).__name__, groups, solver.lr_scheduler.total_steps))
    assert built[0] == built[1]
    kind, groups, steps = built[0]
    assert kind == "AdamW" and steps == 20  # 40 updates / grad_acc 2
    assert groups and all("lora_" in n for g in groups for n in g)
