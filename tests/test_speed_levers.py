"""The training-speed levers of `zalo.speed.*` change the speed, not the result: the cached text encoder gives
upstream's conditioning tensors and gradients, fused AdamW and `torch.compile` train the tiny run to the same
losses as the defaults."""

from __future__ import annotations

import math
import random

import pytest
import torch

from zalo_music.text_cache import TextEncoderCache

TEXTS = ["calm piano with soft strings", "energetic rock, heavy drums and distorted guitar",
         "lofi hip hop beat for studying", "a slow sad violin melody in a minor key"]


@pytest.fixture(scope="module")
def t5_conditioner(tmp_path_factory):
    """audiocraft's `T5Conditioner` over a small random T5 and a sentencepiece tokenizer trained here (the
    project's stand-in builders), without the hub download its constructor does."""
    from audiocraft.modules.conditioners import BaseConditioner, T5Conditioner
    from audiocraft.utils.autocast import TorchAutocast
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    from zalo_music.standins.vocabularies import corpus, write_t5_sentencepiece

    folder = tmp_path_factory.mktemp("t5")
    write_t5_sentencepiece(folder, corpus(400, seed=0))
    torch.manual_seed(0)
    t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                                 dropout_rate=0.1)).eval()
    cond = T5Conditioner.__new__(T5Conditioner)
    BaseConditioner.__init__(cond, 64, 32)
    cond.name, cond.finetune, cond.word_dropout, cond.normalize_text, cond.device = "t5-base", False, 0.0, False, "cpu"
    cond.autocast = TorchAutocast(enabled=False)
    cond.t5_tokenizer = T5Tokenizer.from_pretrained(str(folder), legacy=False)
    cond.__dict__["t5"] = t5  # as upstream keeps a frozen T5: outside the module tree
    return cond


def _fresh_cache(cond, max_mb: float = 64.0) -> TextEncoderCache:
    """A cache in front of a shallow copy of `cond` (the fixture's conditioner stays upstream's)."""
    import copy

    clone = copy.copy(cond)
    clone.__dict__ = dict(cond.__dict__)
    return TextEncoderCache(clone, max_mb).install()


def _upstream(cond, texts):
    inputs = type(cond).tokenize(cond, texts)
    return type(cond).forward(cond, inputs)


@pytest.mark.parametrize("max_mb", [64.0, 0.0005], ids=["room-for-all", "evicting"])
def test_cached_conditioning_equals_upstream(t5_conditioner, max_mb):
    cache = _fresh_cache(t5_conditioner, max_mb)
    cond = cache.conditioner
    batches = [[TEXTS[0], None, TEXTS[1], TEXTS[0]],  # a repeat and a dropped description (CFG dropout)
               [TEXTS[2], TEXTS[1], TEXTS[3]],        # other lengths, one seen before
               [None, None],                          # every description dropped
               [TEXTS[3], TEXTS[0], None, TEXTS[2]]]  # all seen (unless evicted)
    for texts in batches:
        want, want_mask = _upstream(t5_conditioner, texts)
        got, got_mask = cond(cond.tokenize(texts))
        assert torch.equal(got_mask, want_mask) and got.shape == want.shape
        assert (got - want).abs().max().item() < 1e-5, texts
    if max_mb > 1:
        assert (cache.hits, cache.misses) == (0 + 1 + 3, 2 + 2 + 0)  # each distinct description through T5 once
    else:  # each state is larger than the bound: only the last batch's own states are kept, the rest recomputed
        assert sorted(cache.states) == sorted({t for t in batches[-1] if t}) and cache.misses > len(TEXTS)


def test_cached_conditioning_trains_output_proj_like_upstream(t5_conditioner):
    cache = _fresh_cache(t5_conditioner)
    cond = cache.conditioner
    texts = [TEXTS[1], TEXTS[0], None]
    grads = {}
    for run in ("upstream", "cached"):
        cond.output_proj.zero_grad()
        embeds, _ = _upstream(cond, texts) if run == "upstream" else cond(cond.tokenize(texts))
        (embeds ** 2).sum().backward()
        grads[run] = cond.output_proj.weight.grad.clone()
    assert grads["upstream"].abs().max() > 0
    assert torch.allclose(grads["cached"], grads["upstream"], atol=1e-5)


def test_the_cache_refuses_a_trained_t5_and_lets_word_dropout_through(t5_conditioner):
    import copy

    clone = copy.copy(t5_conditioner)
    clone.__dict__ = {**t5_conditioner.__dict__, "finetune": True}
    with pytest.raises(ValueError, match="zalo.speed.text_cache=false"):
        TextEncoderCache(clone, 64.0)
    cache = _fresh_cache(t5_conditioner)
    cond = cache.conditioner
    cond.word_dropout = 0.5
    texts = [TEXTS[0], TEXTS[3]]
    try:
        cond.train()  # training: each step drops other words, upstream's path (same draws, same result)
        random.seed(3)
        want, _ = _upstream(cond, texts)
        random.seed(3)
        got, _ = cond(cond.tokenize(texts))
        assert torch.equal(got, want) and (cache.hits, cache.misses) == (0, 0)
        cond.eval()  # evaluation and generation: no word dropout, cached
        want, _ = _upstream(cond, texts)
        got, _ = cond(cond.tokenize(texts))
        assert (got - want).abs().max().item() < 1e-5 and cache.misses == 2
    finally:
        cond.eval()


def test_tokenize_on_host_gives_upstreams_tokens_without_a_blocking_copy(t5_conditioner, benchkit):
    """Sync-free tokenization: upstream's ids and masks (a dropped description included), the conditioner's
    device given back, and no copy that would wait on a GPU, where upstream's makes two (ids and mask)."""
    from audiocraft.modules.conditioners import ConditioningAttributes, ConditioningProvider

    from zalo_music.solvers.sync_free import tokenize_on_host

    provider = ConditioningProvider({"description": t5_conditioner}, device="cpu")
    attributes = [ConditioningAttributes(text={"description": t}) for t in (TEXTS[1], None, TEXTS[2])]
    with benchkit.HostReads() as upstream_waits:
        want = provider.tokenize(attributes)["description"]
    with benchkit.HostReads() as waits:
        got = tokenize_on_host(provider, attributes, "cpu")["description"]
    assert type(got) is type(want) and set(got.keys()) == {"input_ids", "attention_mask"} == set(want.keys())
    assert all(torch.equal(got[k], want[k]) for k in want) and not got["attention_mask"][1].any()
    assert t5_conditioner.device == "cpu"
    assert (upstream_waits.copies, waits.copies) == (2, 0), dict(waits.sites)


def test_fused_adamw_setting():
    from omegaconf import OmegaConf

    from zalo_music.solvers.speed import fused_adamw_setting

    def cfg(device, choice="auto", optimizer="adamw", fused=None):
        return OmegaConf.create({"device": device, "zalo": {"speed": {"fused_adamw": choice}},
                                 "optim": {"optimizer": optimizer, "adam": {"fused": fused} if fused is not None
                                           else {"betas": [0.9, 0.95]}}})

    for device, choice, want in (("cuda", "auto", True), ("cpu", "auto", True), ("mps", "auto", False),
                                 ("cpu", "false", False), ("mps", "true", True)):
        c = cfg(device, choice)
        assert fused_adamw_setting(c) and c.optim.adam.fused is want, (device, choice)
    explicit = cfg("cuda", fused=False)
    assert fused_adamw_setting(explicit) is None and explicit.optim.adam.fused is False  # the override wins
    dadam = cfg("cuda", optimizer="dadam")
    assert fused_adamw_setting(dadam) is None and "fused" not in dadam.optim.adam
    with pytest.raises(ValueError, match="fused_adamw"):
        fused_adamw_setting(cfg("cuda", "maybe"))


def _tiny_losses(overrides: list[str], steps: int = 4) -> tuple[list[float], object]:
    """Cross-entropy of the first `steps` training steps of the tiny recipe, built in this process."""
    from audiocraft import train as ac_train

    from zalo_music.train import main

    xp = main.get_xp(["solver=zalo/tiny", "dset=zalo/demo", *overrides])
    with xp.enter():
        solver = ac_train.get_solver(xp.cfg)
        random.seed(1)  # audiocraft's text augmentation draws from `random`
        torch.manual_seed(1)
        batches = [b for _, b in zip(range(steps), solver.dataloaders["train"], strict=False)]
        losses: list[float] = []

        def loop() -> dict:
            solver.model.train()
            for idx, batch in enumerate(batches):
                losses.append(float(solver.run_step(idx, batch, {})["ce"].detach()))
            return {}

        solver._start_epoch()
        solver.run_stage("train", loop)
    return losses, solver


@pytest.mark.slow  # three tiny solvers, four steps each (~40 s on 2 cores)
def test_fused_adamw_and_compile_train_to_the_same_losses(demo_manifests):
    base, solver = _tiny_losses(["zalo.speed.fused_adamw=false"])
    assert solver.optimizer.defaults.get("fused") is False
    fused, solver = _tiny_losses(["zalo.speed.fused_adamw=true"])
    assert solver.optimizer.defaults.get("fused") is True
    compiled, solver = _tiny_losses(["zalo.speed.compile=true", "zalo.speed.compile_backend=aot_eager"])
    assert "_orig_mod" not in "".join(solver.model.state_dict())  # in place: checkpoints keep their keys
    assert len(base) == 4 and all(math.isfinite(x) for x in base) and base[-1] < base[0]  # it learns
    assert fused == pytest.approx(base, rel=1e-4)
    assert compiled == pytest.approx(base, rel=1e-4)


def test_masked_cross_entropy_equals_upstream_with_its_gradient():
    from audiocraft.solvers.musicgen import MusicGenSolver

    from zalo_music.solvers.sync_free import masked_cross_entropy

    g = torch.Generator().manual_seed(0)
    B, K, T, card = 3, 4, 20, 16
    logits = torch.randn(B, K, T, card, generator=g)
    targets = torch.randint(0, card, (B, K, T), generator=g)
    mask = torch.rand(B, K, T, generator=g) > 0.3
    logits[~mask] = float("nan")  # what audiocraft's pattern revert leaves at invalid steps
    targets[~mask] = card  # the special token
    results = {}
    for name, fn in (("upstream", lambda *a: MusicGenSolver._compute_cross_entropy(None, *a)),
                     ("masked", masked_cross_entropy)):
        x = logits.clone().requires_grad_(True)
        ce, per_codebook = fn(x, targets, mask)
        ce.backward()
        results[name] = (ce.detach(), torch.stack(per_codebook), x.grad.nan_to_num(nan=123.0))
    (ce_a, per_a, grad_a), (ce_b, per_b, grad_b) = results["upstream"], results["masked"]
    assert torch.allclose(ce_b, ce_a, atol=1e-6) and torch.allclose(per_b, per_a, atol=1e-6)
    assert torch.isfinite(grad_b).all() and torch.allclose(grad_b, grad_a, atol=1e-7)


def _stage(overrides: list[str]) -> tuple[dict, object]:
    """scripts/bench_host_reads.py's tiny train stage (audiocraft's own stage loop): its metrics and host reads."""
    import importlib
    import sys

    from tests.helpers import PROJECT

    sys.path.insert(0, str(PROJECT / "scripts"))
    try:
        return importlib.import_module("bench_host_reads").stage(overrides)
    finally:
        sys.path.remove(str(PROJECT / "scripts"))


@pytest.mark.slow  # four tiny train stages (~40 s on 2 cores)
def test_sync_free_steps_train_the_same_and_never_wait_per_step(demo_manifests):
    keys = ("ce", "ppl", "grad_norm", "ce_q1", "ce_q4")
    stages = {(free, steps): _stage([f"zalo.speed.sync_free={free}", f"optim.updates_per_epoch={steps}",
                                          f"dataset.train.num_samples={8 * steps}"])
              for free in ("false", "true") for steps in (4, 8)}
    for steps in (4, 8):
        upstream, free = stages[("false", steps)][0], stages[("true", steps)][0]
        assert all(isinstance(free[k], float) for k in keys)  # history.json gets numbers, as upstream's
        assert {k: free[k] for k in keys} == pytest.approx({k: upstream[k] for k in keys}, rel=1e-5)
    per_step = {free: (stages[(free, 8)][1].n - stages[(free, 4)][1].n) / 4 for free in ("false", "true")}
    assert per_step["false"] >= 4  # upstream: the codebooks' masks, the loss check, every metric's float()
    assert per_step["true"] == 0, per_step  # sync-free: reads at the stage's end only, whatever its length


def test_a_non_finite_loss_stops_sync_free_training_within_check_every_steps():
    from zalo_music.solvers.sync_free import CHECK_EVERY, DivergenceFlag

    flag = DivergenceFlag()
    flag.update(torch.tensor(float("nan")))
    with pytest.raises(RuntimeError, match="diverged"):
        for _ in range(CHECK_EVERY - 1):
            flag.update(torch.tensor(1.0))
    flag = DivergenceFlag()
    for _ in range(3):
        flag.update(torch.tensor(1.0))
    flag.check()  # finite: nothing raised, the flag starts over
    flag.update(torch.tensor(float("inf")))
    with pytest.raises(RuntimeError, match="diverged"):
        flag.check()  # the stage's end reads it whatever the count
