"""Training throughput (zalo_music/solvers/throughput.py): the FLOP count agrees with torch's own counter, matches
the measured musicgen-small step, and every XP's train metrics carry frames/s, data wait and peak memory."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from zalo_music.solvers.throughput import LMShape, ThroughputMixin, lm_flops_per_frame, train_flops_per_frame


def _tiny_lm():
    from audiocraft.models.builders import get_lm_model

    from zalo_music.train import main

    # custom attention: its score and value products are matmuls torch's counter sees (nn.MultiheadAttention's
    # fused kernel is not counted)
    cfg = main.get_xp(["solver=zalo/tiny", "transformer_lm.custom=true"]).cfg
    torch.manual_seed(0)
    return cfg, get_lm_model(cfg)


def test_flop_count_agrees_with_torchs_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    cfg, lm = _tiny_lm()
    lm_cfg = cfg.transformer_lm
    batch, frames, text = 2, 100, 12
    codes = torch.randint(0, int(lm_cfg.card), (batch, int(lm_cfg.n_q), frames))
    conditions = {"description": (torch.randn(batch, text, int(lm_cfg.dim)), torch.ones(batch, text))}
    positions = frames + int(lm_cfg.n_q) - 1  # the delay pattern's sequence
    shape = LMShape(dim=int(lm_cfg.dim), layers=int(lm_cfg.num_layers), ffn=int(lm_cfg.dim * lm_cfg.hidden_scale),
                    codebooks=int(lm_cfg.n_q), card=int(lm_cfg.card), frames=positions, text_tokens=text)
    with FlopCounterMode(display=False) as forward:
        lm.compute_predictions(codes, [], conditions)
    with FlopCounterMode(display=False) as training:
        lm.compute_predictions(codes, [], conditions).logits.nan_to_num().sum().backward()
    ours_forward = sum(lm_flops_per_frame(shape).values()) * batch * positions
    ours_training = train_flops_per_frame(shape, trainable_share=1.0) * batch * positions
    assert ours_forward == pytest.approx(forward.get_total_flops(), rel=0.03)
    assert ours_training == pytest.approx(training.get_total_flops(), rel=0.03)


def test_musicgen_small_step_is_the_measured_18_5_tflop():
    """Batch 16 x 10 s (8,000 frames) of musicgen-small from tokens: ~18.5 TFLOP per step (issue 26's count)."""
    small = LMShape(dim=1024, layers=24, ffn=4096, codebooks=4, card=2048, frames=500, text_tokens=32)
    step = train_flops_per_frame(small, trainable_share=1.0) * 16 * 500
    assert step / 1e12 == pytest.approx(18.5, rel=0.1)
    lora = train_flops_per_frame(small, trainable_share=0.005) * 16 * 500
    assert 0.6 < lora / step < 0.7  # no weight gradients for frozen weights: about 2/3 of full fine-tuning


def test_throughput_metrics_from_counts_and_the_peak_override():
    cfg = SimpleNamespace(zalo=SimpleNamespace(get=lambda key: {"peak_tflops": 0.5}),
                          transformer_lm=None)
    model = torch.nn.Linear(4, 4)
    model.bias.requires_grad_(False)
    shape = LMShape(dim=64, layers=2, ffn=256, codebooks=4, card=400, frames=200, text_tokens=8)
    fake = SimpleNamespace(cfg=cfg, model=model, device="cpu", _tp_frames=4000, _tp_samples=20, _tp_wait=0.5,
                           _shape=lambda: shape)
    m = ThroughputMixin.throughput_metrics(fake, seconds=2.0)
    assert m["frames_per_s"] == 2000 and m["samples_per_s"] == 10 and m["data_wait"] == 0.25
    share = 16 / 20  # the weight trains, the bias does not
    assert m["tflops"] == pytest.approx(train_flops_per_frame(shape, share) * 2000 / 1e12)
    assert m["mfu"] == pytest.approx(m["tflops"] / 0.5) and m["device_seconds"] == 2.0 and m["peak_mem_gb"] > 0


@pytest.mark.e2e
def test_every_xp_reports_its_throughput(tiny_xp):
    train = tiny_xp["history"][-1]["train"]
    assert train["frames_per_s"] > 0 and train["samples_per_s"] > 0
    assert 0 <= train["data_wait"] < 1 and train["peak_mem_gb"] > 0.1 and train["device_seconds"] > 0
    assert "mfu" not in train  # a CPU has no peak in the table and the recipe sets none
