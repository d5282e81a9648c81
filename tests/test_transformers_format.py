"""transformers' MusicGen format, both ways (zalo_music/transformers_format.py, transformers_export.py).

- Equality: on the tiny recipe's LM (with a T5 conditioner) and on musicgen-small's shape (2 layers), the
  exported `MusicgenForConditionalGeneration` gives audiocraft's logits for the same text and codes; greedy
  generation draws the same tokens and decodes to the same audio.
- Round trip: audiocraft -> transformers -> audiocraft is the same state dict, bit for bit.
- `pipeline("text-to-audio", model=DIR)` makes 10 s of 32-kHz audio offline.
- A recipe starts from a transformers folder (`continue_from=//pretrained/DIR`, real `dora run`).
- Other architectures and broken folders are refused, naming what differs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import clap_fixture  # noqa: F401  (points HF_HOME / //reference at temp folders: import first)
from tests.helpers.dora import run_dora, xp_of_run

pytestmark = pytest.mark.slow

CODEC = "facebook/encodec_32khz"
#: The tiny recipe's LM with a T5 text conditioner and EnCodec's 2048 codes (what transformers' format holds).
TINY = ["solver=zalo/tiny", "conditioner=zalo/t5_ft", "transformer_lm.card=2048",
        f"compression_model_checkpoint=//pretrained/{CODEC}"]
#: musicgen-small's LM shape cut to 2 layers (memory-efficient attention: audiocraft's packed weights).
FULL_SHAPE = [*TINY, "model/lm/model_scale=small", "transformer_lm.num_layers=2",
              "transformer_lm.memory_efficient=true"]
TEXTS = ["calm piano with soft strings and rain", "energetic edm, heavy drums"]


@pytest.fixture(scope="module")
def hub_standins(tiny_random_musicgen):
    """t5-base and EnCodec 32 kHz stand-ins in the test process's HF cache."""
    from zalo_music.standins import hub, models
    from zalo_music.standins.vocabularies import corpus

    if not hub.is_complete(clap_fixture.HF_ROOT, "t5-base"):
        hub.write_repo(clap_fixture.HF_ROOT, "t5-base", 0, 1,
                       lambda snap: models.write_t5_base(snap, 1, 0, corpus(seed=0)))
    if not hub.is_complete(clap_fixture.HF_ROOT, CODEC):
        hub.write_repo(clap_fixture.HF_ROOT, CODEC, 0, None,
                       lambda snap: models.write_encodec_32khz(snap, None, 0, []))


def _audiocraft_export(folder: Path, overrides: list[str], seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """An audiocraft export folder (`state_dict.bin` + codec reference) of a random LM built from `overrides`."""
    from audiocraft.models.builders import get_lm_model

    from zalo_music.train import main

    cfg = main.get_xp(overrides).cfg
    torch.manual_seed(seed)
    lm = get_lm_model(cfg).eval()
    folder.mkdir(parents=True)
    torch.save({"best_state": lm.state_dict(), "xp.cfg": OmegaConf.to_yaml(cfg), "version": "1.3.0",
                "exported": True}, folder / "state_dict.bin")
    torch.save({"pretrained": CODEC, "exported": True, "version": "1.3.0"}, folder / "compression_state_dict.bin")
    (folder / "zalo_export.json").write_text(json.dumps({"sig": "0123abcd", "epochs": 3, "best_valid_ce": 4.2,
                                                         "evaluate": {"clap": 0.31, "fad": 5.2, "fas": 0.4,
                                                                      "clas": 0.355},
                                                         "overrides": ["optim.lr=1e-5"]}))
    return folder, lm


@pytest.fixture(scope="module", params=["tiny", "full_shape"])
def pair(request, hub_standins, tmp_path_factory):
    """(audiocraft LM, its audiocraft export, its transformers export) for each shape."""
    from zalo_music.transformers_export import export_transformers

    root = tmp_path_factory.mktemp(request.param)
    overrides = TINY if request.param == "tiny" else FULL_SHAPE
    source, lm = _audiocraft_export(root / "audiocraft", overrides)
    out = export_transformers(source, root / "transformers")
    return {"lm": lm, "source": source, "out": out, "name": request.param}


def _load(out: Path):
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    return MusicgenForConditionalGeneration.from_pretrained(out).eval(), AutoProcessor.from_pretrained(out)


def test_logits_equal_audiocrafts(pair):
    """Teacher-forced logits of the same text and codes (each text alone: no padding in either)."""
    from audiocraft.modules.conditioners import ConditioningAttributes

    lm = pair["lm"]
    model, processor = _load(pair["out"])
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 2048, (1, lm.num_codebooks, 20), generator=g)
    for text in TEXTS:
        with torch.no_grad():
            attrs = [ConditioningAttributes(text={"description": text})]
            ours = lm(codes, [], condition_tensors=lm.condition_provider(lm.condition_provider.tokenize(attrs)))
            theirs = model(**processor(text=[text], return_tensors="pt"),
                           decoder_input_ids=codes.reshape(lm.num_codebooks, -1)).logits
        theirs = theirs.reshape(ours.shape)
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-4 * ours.abs().max().item()), \
            (pair["name"], (ours - theirs).abs().max().item())


def test_greedy_generation_draws_the_same_tokens_and_audio(pair):
    from audiocraft.models import MusicGen
    from audiocraft.models.encodec import CompressionModel

    from zalo_music.patches import allow_short_segment_musicgen

    allow_short_segment_musicgen()
    ours = MusicGen("t", CompressionModel.get_pretrained(CODEC).eval(), pair["lm"], max_duration=10.0)
    ours.set_generation_params(use_sampling=False, duration=0.4, cfg_coef=3.0)
    wav, tokens = ours.generate(TEXTS[:1], return_tokens=True)
    model, processor = _load(pair["out"])
    seen = {}
    decode = model.audio_encoder.decode

    def spy(audio_codes, *args, **kwargs):  # transformers hands the codes it generated to its codec here
        seen["codes"] = audio_codes.clone()
        return decode(audio_codes, *args, **kwargs)

    model.audio_encoder.decode = spy
    with torch.no_grad():
        audio = model.generate(**processor(text=TEXTS[:1], return_tensors="pt"), do_sample=False,
                               guidance_scale=3.0, max_length=1 + tokens.shape[-1] + tokens.shape[1] - 1)
    assert torch.equal(seen["codes"][0], tokens)
    assert audio.shape == wav.shape and torch.allclose(audio, wav, atol=1e-6)


def test_round_trip_is_bit_exact(pair):
    from safetensors.torch import load_file

    from zalo_music.transformers_format import from_transformers, uses_torch_mha

    cfg = OmegaConf.create(torch.load(pair["source"] / "state_dict.bin", weights_only=True)["xp.cfg"])
    back = from_transformers(load_file(str(pair["out"] / "model.safetensors")), torch_mha=uses_torch_mha(cfg))
    state = pair["lm"].state_dict()
    assert sorted(back) == sorted(state)
    assert all(back[k].dtype == state[k].dtype and torch.equal(back[k], state[k]) for k in state)


def test_export_folder_loads_offline_with_card_and_decoding(pair):
    out = pair["out"]
    if pair["name"] != "tiny":
        pytest.skip("the folder's contents are the same for every shape")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "preprocessor_config.json",
            "README.md", "spiece.model"} <= names and not any(n.endswith(".bin") for n in names)
    gen = json.loads((out / "generation_config.json").read_text())
    # the tiny recipe's scored decoding (zalo.generate.*): 10 s at 50 Hz, top-k 250, CFG 3
    assert gen["max_length"] == 1 + 500 + 3 and gen["top_k"] == 250 and gen["guidance_scale"] == 3.0
    card = (out / "README.md").read_text()
    for expected in ("license: cc-by-nc-4.0", "0123abcd", "optim.lr=1e-5", "CLAS 0.3550", "FAD 5.2000",
                     "t5-base", CODEC):
        assert expected in card, expected


def test_pipeline_makes_ten_seconds_of_32khz_audio(pair):
    if pair["name"] != "tiny":
        pytest.skip("one shape is enough for the pipeline")
    from transformers import pipeline

    music = pipeline("text-to-audio", model=str(pair["out"]))
    torch.manual_seed(0)
    result = music("lofi piano with soft rain")
    assert result["sampling_rate"] == 32000 and result["audio"].shape[-1] == 320000


def _copy(out: Path, dest: Path, edit=None) -> Path:
    shutil.copytree(out, dest)
    if edit is not None:
        config = json.loads((dest / "config.json").read_text())
        edit(config)
        (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_other_architectures_and_broken_folders_are_refused_by_name(pair, tmp_path):
    if pair["name"] != "tiny":
        pytest.skip("refusals read the config only")
    from zalo_music.train import main
    from zalo_music.transformers_format import check_convertible, pretrained_lm_state

    cfg = main.get_xp(TINY).cfg
    cases = {
        "model_type 'musicgen_melody'": lambda c: c.update(model_type="musicgen_melody"),
        "decoder.audio_channels 2 (stereo": lambda c: c["decoder"].update(audio_channels=2),
        "decoder.num_codebooks 8 but the recipe's transformer_lm.n_q is 4":
            lambda c: c["decoder"].update(num_codebooks=8),
        "decoder.hidden_size 1024 but the recipe's transformer_lm.dim is":
            lambda c: c["decoder"].update(hidden_size=1024),
    }
    for i, (message, edit) in enumerate(cases.items()):
        folder = _copy(pair["out"], tmp_path / f"case{i}", edit)
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            pretrained_lm_state(str(folder), cfg)
    broken = _copy(pair["out"], tmp_path / "no_weights")
    (broken / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="without model.*safetensors"):
        pretrained_lm_state(str(broken), cfg)
    melody = main.get_xp([*TINY, "codebooks_pattern.modeling=unroll"]).cfg
    with pytest.raises(ValueError, match=r"codebooks_pattern unroll"):
        check_convertible(melody)


def test_audiocrafts_own_codec_is_refused_with_the_reason(tiny_xp, tmp_path):
    """The tiny recipe has a lookup-table text conditioner and audiocraft's own (debug) EnCodec: both named in
    one message, and nothing is written."""
    from zalo_music import cli

    with pytest.raises(ValueError) as exc:
        cli.main(["--debug", "export", tiny_xp["sig"], str(tmp_path / "hf"), "--format", "transformers"])
    assert "conditioners ['description'] with [('description', 'lut')]" in str(exc.value)
    assert "debug_encodec_fitted_32khz.th) is audiocraft's own EnCodec" in str(exc.value)
    assert not (tmp_path / "hf").exists()


def test_push_to_hub_offline_fails_clearly_after_a_complete_export(pair, monkeypatch):
    if pair["name"] != "tiny":
        pytest.skip("one shape is enough")
    from zalo_music.transformers_export import push_to_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"cannot be reached.*huggingface-cli upload me/zalo-ft"):
        push_to_hub(pair["out"], "me/zalo-ft")


def test_recipe_fine_tunes_from_a_transformers_folder(hub_standins, demo_manifests, tmp_path):
    """`dora run ... continue_from=//pretrained/DIR` on a transformers MusicGen of the recipe's shape: with lr 0
    the XP's best state is the converted folder, bit for bit."""
    from transformers import (
        EncodecModel,
        MusicgenForCausalLM,
        MusicgenForConditionalGeneration,
        T5EncoderModel,
    )

    from zalo_music.train import main
    from zalo_music.transformers_format import decoder_config, from_transformers, uses_torch_mha

    argv = ["solver=zalo/tiny", "conditioner=zalo/t5_ft", "dset=zalo/demo", "optim.updates_per_epoch=2",
            "optim.epochs=1", "optim.lr=0", "optim.max_norm=0"]
    cfg = main.get_xp(argv).cfg  # the tiny recipe: the debug codec's 400 codes
    torch.manual_seed(3)
    community = MusicgenForConditionalGeneration(text_encoder=T5EncoderModel.from_pretrained("t5-base"),
                                                 audio_encoder=EncodecModel.from_pretrained(CODEC),
                                                 decoder=MusicgenForCausalLM(decoder_config(cfg)))
    community.save_pretrained(tmp_path / "community", safe_serialization=True)
    proc = run_dora("run", *argv, f"continue_from=//pretrained/{tmp_path / 'community'}")
    folder = xp_of_run(proc.stdout + proc.stderr)
    best = torch.load(folder / "checkpoint.th", weights_only=True)["best_state"]["model"]
    want = from_transformers(community.state_dict(), torch_mha=uses_torch_mha(cfg))
    assert sorted(best) == sorted(want)
    assert all(torch.equal(best[k], want[k]) for k in want)
