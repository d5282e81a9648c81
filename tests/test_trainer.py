"""`zalo-music train`: musicgen_trainer options mapped onto one Dora XP, each with a visible effect."""

from __future__ import annotations

import math

import pytest

from zalo_music.classic_train import overrides

DEFAULTS = dict(model_id="small", lr=1e-5, epochs=100, use_wandb=0, save_step=None, no_label=0, tune_text=0,
                weight_decay=1e-5, grad_acc=2, warmup_steps=16, batch_size=4, use_cfg=0, cfg_p=0.3, name="ds")


def _map(**kw) -> dict[str, str]:
    return dict(a.split("=", 1) for a in overrides({**DEFAULTS, **kw}, n_train=100))


def test_seed_defaults_map_onto_the_recipe():
    o = _map()
    assert o["solver"] == "zalo/musicgen_small_ft" and o["zalo.dataset"] == "ds"
    assert float(o["optim.lr"]) == 1e-5 and float(o["optim.adam.weight_decay"]) == 1e-5
    assert o["optim.epochs"] == "100" and o["dataset.batch_size"] == "4" and o["zalo.grad_acc"] == "2"
    # one pass = ceil(100 / (4 * 2)) = 13 optimizer steps = 26 micro-batches
    assert o["optim.updates_per_epoch"] == "26"
    assert o["schedule.cosine.warmup"] == "16"
    assert o["dataset.train.num_samples"] == str(26 * 4)  # exactly one epoch of micro-batches
    assert float(o["classifier_free_guidance.training_dropout"]) == 0.0


@pytest.mark.parametrize("model_id,scale", [("medium", "medium"), ("large", "large")])
def test_model_id_picks_checkpoint_and_scale(model_id, scale):
    o = _map(model_id=model_id)
    assert o["model/lm/model_scale"] == scale
    assert o["continue_from"] == f"//pretrained/facebook/musicgen-{model_id}"


def test_flags():
    o = _map(use_cfg=1, cfg_p=0.25, no_label=1, tune_text=1, use_wandb=1, save_step=5)
    assert float(o["classifier_free_guidance.training_dropout"]) == 0.25
    assert o["+attribute_dropout.text.description"] == "1.0"
    assert o["zalo.tune_text"] == "true"
    assert o["logging.log_wandb"] == "true"
    assert o["optim.updates_per_epoch"] == "10"  # 5 optimizer steps x grad_acc 2
    assert o["checkpoint.save_every"] == "1"
    assert int(o["optim.epochs"]) == math.ceil(100 * 26 / 10)
    assert o["dataset.train.num_samples"] == str(10 * 4)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="model_id"):
        _map(model_id="huge")
    with pytest.raises(ValueError, match="grad_acc"):
        _map(grad_acc=0)


def test_cpu_is_chosen_only_without_cuda_and_without_a_user_device():
    from zalo_music.classic_train import device_overrides

    argv = overrides(DEFAULTS, n_train=100)
    assert device_overrides(argv, cuda=False) == ["device=cpu"]
    assert device_overrides(argv, cuda=True) == []
    assert device_overrides([*argv, "device=cuda:1"], cuda=False) == []
    assert device_overrides(overrides({**DEFAULTS, "model_id": "tiny"}, n_train=100), cuda=False) == []
