"""The fast decoder (zalo_music/fast_decoder.py) is audiocraft's decoding, exactly, at a fraction of the work.

- Teacher-forced: at every step its logits equal `LMModel.forward` over the whole sequence (audiocraft's
  training forward, causal mask), with CFG rows and text of different lengths (padding included).
- Sampled: with the same seed it draws the same codes as `MusicGen._generate_tokens` (top-k, top-p, greedy),
  on the tiny recipe and on musicgen-small's shape with a T5-base text encoder on real Zalo descriptions.
- Cross-attention keys and values are projected once per batch, not once per step.
- `generate` writes the same MP3 bytes with `--decoder fast` and `--decoder audiocraft`.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import (
    SHARED,
    clap_fixture,  # noqa: F401  (points HF_HOME / //reference at temp folders: import first)
)

#: musicgen-small's LM shape (dim 1024, 16 heads, FFN 4096, 2048 codes x 4 codebooks, memory-efficient
from tests.helpers.data import write_demo_texts

#: attention as released), cut to 2 layers for CPU time; T5-base (depth 1, stand-in weights) encodes the text.
FULL_SHAPE = ["model/lm/model_scale=small", "transformer_lm.num_layers=2", "transformer_lm.memory_efficient=true",
              "transformer_lm.card=2048", "conditioner=zalo/t5_ft"]


def _musicgen(overrides: list[str]):
    from audiocraft.models import MusicGen
    from audiocraft.models.builders import get_lm_model

    from zalo_music import debug_codec
    from zalo_music.patches import allow_short_segment_musicgen
    from zalo_music.train import main

    allow_short_segment_musicgen()
    cfg = main.get_xp(["solver=zalo/tiny", *overrides]).cfg
    torch.manual_seed(0)
    lm = get_lm_model(cfg).eval()
    return MusicGen("fast-decoder-test", debug_codec.load(), lm, max_duration=10.0)


@pytest.fixture(scope="module")
def tiny(tiny_random_musicgen):
    return tiny_random_musicgen


@pytest.fixture(scope="module")
def full_shape(tiny_random_musicgen):  # tiny_random_musicgen: the stand-in HF cache exists
    """musicgen-small's LM shape with a T5-base stand-in written into the test process's HF cache."""
    from zalo_music.standins import hub, models
    from zalo_music.standins.vocabularies import corpus

    if not hub.is_complete(clap_fixture.HF_ROOT, "t5-base"):
        hub.write_repo(clap_fixture.HF_ROOT, "t5-base", 0, 1,
                       lambda snap: models.write_t5_base(snap, 1, 0, corpus(seed=0)))
    return _musicgen(FULL_SHAPE)


def _texts(n: int) -> list[str]:
    path = SHARED / "public_test.json"
    if not path.is_file():
        pytest.skip("../shared/data/zalo2023 is absent: the real descriptions are not shipped")
    items = sorted(json.loads(path.read_text()).items())
    by_length = sorted((v for _, v in items), key=len)  # shortest, longest and between: a batch pads a lot
    step = max(1, len(by_length) // (n - 1))
    return [by_length[min(i * step, len(by_length) - 1)] for i in range(n - 1)] + [by_length[-1]]


def _condition_tensors(lm, rows: int, lengths: list[int], seed: int) -> dict:
    """Cross-attention conditions of different lengths, zero-padded to the longest as T5's are (+ null rows)."""
    g = torch.Generator().manual_seed(seed)
    name = lm.fuser.fuse2cond["cross"][0]
    width = max(lengths)
    mask = torch.zeros(2 * rows, width, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1  # the null rows (rows..2*rows) stay empty, as audiocraft's nullified conditions
    emb = torch.randn(2 * rows, width, lm.dim, generator=g) * mask[..., None]
    return {name: (emb, mask)}


@pytest.mark.parametrize("which", ["tiny", pytest.param("full_shape", marks=pytest.mark.slow)])
def test_teacher_forced_logits_equal_audiocrafts_forward(which, request):
    from zalo_music.fast_decoder import FastDecoder

    model = request.getfixturevalue(which)
    lm = model.lm
    rows, steps = 3, 24
    tensors = _condition_tensors(lm, rows, [5, 31, 17], seed=1)
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(0, lm.card, (rows, lm.num_codebooks, steps), generator=g)
    pattern = lm.pattern_provider.get_pattern(steps)
    sequence, _, _ = pattern.build_pattern_sequence(codes, lm.special_token_id)
    sequence = torch.cat([sequence, sequence])
    with torch.inference_mode():
        reference = lm(sequence, conditions=[], condition_tensors=tensors)  # [2B, K, S, card]
        _, cross = lm.fuser(torch.zeros(2 * rows, 1, lm.dim), tensors)
        decoder = FastDecoder(lm, cross, sequence.shape[-1])
        fast = torch.cat([decoder.step(sequence[..., s:s + 1], s) for s in range(sequence.shape[-1])], dim=2)
    assert fast.shape == reference.shape
    scale = reference.abs().max().item()
    error = (fast - reference).abs().max().item()
    # fp32: one forward over the sequence vs one query at a time differ only in summation order
    assert error <= 2e-5 * max(1.0, scale), f"{which}: max |fast - audiocraft| = {error:.3g} (logits up to {scale:.3g})"
    cond, uncond = reference.split(rows)
    fcond, funcond = fast.split(rows)
    guided = uncond + (cond - uncond) * 3.0
    assert (funcond + (fcond - funcond) * 3.0 - guided).abs().max().item() <= 1e-4 * max(1.0, scale)


def _both(model, texts: list[str], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from zalo_music.fast_decoder import generate_tokens

    attributes, _ = model._prepare_tokens_and_attributes(texts, None)
    with torch.inference_mode():
        torch.manual_seed(seed)
        upstream = model._generate_tokens(attributes, None)
        torch.manual_seed(seed)
        ours = generate_tokens(model, attributes)
    return upstream, ours


@pytest.mark.parametrize("sampling", [{"top_k": 250}, {"top_k": 0, "top_p": 0.9, "temperature": 0.8},
                                      {"use_sampling": False}])
def test_sampled_tokens_equal_audiocrafts_tiny(tiny, sampling, tmp_path):
    texts = json.loads(write_demo_texts(tmp_path, 6, seed=3).read_text())
    tiny.set_generation_params(duration=3.0, cfg_coef=3.0, **sampling)
    upstream, ours = _both(tiny, list(texts.values()), seed=11)
    assert ours.shape == upstream.shape == (6, 4, 75)
    assert torch.equal(ours, upstream), f"{(ours != upstream).float().mean().item():.2%} of the codes differ"


@pytest.mark.slow  # builds a T5-base stand-in and a 1024-wide LM: kept out of test-fast
def test_sampled_tokens_equal_audiocrafts_full_shape_real_descriptions(full_shape):
    texts = _texts(4)
    tokenizer = full_shape.lm.condition_provider.conditioners["description"].t5_tokenizer
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    assert max(lengths) > 2 * min(lengths), lengths  # the batch really pads
    full_shape.set_generation_params(duration=1.0, top_k=250, cfg_coef=3.0)  # 25 frames of the debug codec
    upstream, ours = _both(full_shape, texts, seed=7)
    assert ours.shape == upstream.shape == (4, 4, 25)
    assert torch.equal(ours, upstream), f"{(ours != upstream).float().mean().item():.2%} of the codes differ"


def test_cross_attention_keys_and_values_are_projected_once_per_batch(tiny, monkeypatch):
    """Counts the projections with each layer's cross-attention key weight: once per batch, not per step."""
    from zalo_music import fast_decoder

    lm = tiny.lm
    keys = set()
    for layer in lm.transformer.layers:
        weight, _, _ = fast_decoder._in_projection(layer.cross_attention)
        keys.add(weight[lm.dim:2 * lm.dim].data_ptr())
    calls = []
    real_linear = torch.nn.functional.linear

    def counting(x, weight, bias=None):
        if weight.data_ptr() in keys:
            calls.append(x.shape)
        return real_linear(x, weight, bias)

    monkeypatch.setattr(torch.nn.functional, "linear", counting)
    tiny.set_generation_params(duration=2.0)
    attributes, _ = tiny._prepare_tokens_and_attributes(["a calm piano", "fast drums"], None)
    with torch.inference_mode():
        fast_decoder.generate_tokens(tiny, attributes)
    assert len(calls) == len(lm.transformer.layers), f"{len(calls)} key projections for a 53-step batch"


def test_unsupported_generation_is_refused_by_name(tiny):
    from zalo_music.fast_decoder import UnsupportedModel, generate_tokens

    attributes, _ = tiny._prepare_tokens_and_attributes(["a calm piano"], None)
    tiny.set_generation_params(duration=2.0, two_step_cfg=True)
    with pytest.raises(UnsupportedModel, match="two_step_cfg.*--decoder audiocraft"):
        generate_tokens(tiny, attributes)
    from zalo_music.fast_decoder import check_supported

    with pytest.raises(UnsupportedModel, match="--decoder graph does not support"):  # the option the user gave
        check_supported(tiny, "graph")
    tiny.set_generation_params(duration=2.0)
    tiny.duration = 12.0  # beyond max_duration: audiocraft's windowed extension
    with pytest.raises(UnsupportedModel, match="max_duration"):
        generate_tokens(tiny, attributes)
    tiny.set_generation_params(duration=2.0)


def test_generate_writes_the_same_bytes_with_either_decoder(tiny, tmp_path):
    from zalo_music.generate import GenerationConfig, generate

    texts = write_demo_texts(tmp_path, 5, seed=4)
    outs = {}
    for decoder in ("audiocraft", "fast"):
        gen = GenerationConfig(duration=2.0, batch_size=3, seed=5, decoder=decoder)
        summary = generate("tiny", texts, tmp_path / decoder, gen, model=tiny, quiet=True)
        assert summary["written"] == 5, summary
        outs[decoder] = {p.name: p.read_bytes() for p in sorted((tmp_path / decoder).glob("*.mp3"))}
    assert outs["fast"] == outs["audiocraft"]


def test_the_codec_decode_in_chunks_is_the_whole_batchs(tiny):
    """A GPU decodes a large batch in calls of `DECODE_ROWS` clips: the same waveforms as one call."""
    from zalo_music.generate import decode_in_chunks

    torch.manual_seed(0)
    tokens = torch.randint(0, tiny.compression_model.cardinality, (5, tiny.compression_model.num_codebooks, 20))
    with torch.inference_mode():
        whole = tiny.generate_audio(tokens)
        chunked = decode_in_chunks(tiny, tokens, rows=2)
    assert chunked.shape == whole.shape and (chunked - whole).abs().max().item() < 1e-5


def test_every_way_in_offers_the_same_decoders():
    from zalo_music.cli import build_parser
    from zalo_music.fast_decoder import DECODERS
    from zalo_music.generate import GenerationConfig

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["generate"]
    action = next(a for a in sub._actions if a.dest == "decoder")
    assert tuple(action.choices) == DECODERS
    assert action.default == GenerationConfig().decoder == DECODERS[0]
