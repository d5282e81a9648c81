"""`--decoder graph` (zalo_music/graph_decoder.py): the fast decoder's step with static shapes.

- At every step, across attention windows, its logits equal `FastDecoder`'s (masked positions weigh exactly 0).
- On a CPU (no graphs) `generate_tokens(graphs=True)` draws the same codes as `--decoder fast` for the same seed.
- On a GPU (skipped here): a replayed graph gives the eager static step's logits, and each window is captured once.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers import clap_fixture  # noqa: F401  (points HF_HOME at the stand-in cache: import first)
from tests.test_fast_decoder import _condition_tensors


@pytest.fixture(scope="module")
def tiny(tiny_random_musicgen):
    return tiny_random_musicgen


@pytest.fixture
def small_buckets(monkeypatch):
    """Windows of 8 positions, so that a short sequence crosses several of them."""
    from zalo_music import graph_decoder

    monkeypatch.setattr(graph_decoder, "BUCKET", 8)


def _sequence(lm, rows: int, steps: int) -> tuple[dict, torch.Tensor]:
    tensors = _condition_tensors(lm, rows, [5, 31, 17][:rows], seed=1)
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(0, lm.card, (rows, lm.num_codebooks, steps), generator=g)
    sequence, _, _ = lm.pattern_provider.get_pattern(steps).build_pattern_sequence(codes, lm.special_token_id)
    return tensors, torch.cat([sequence, sequence])


def test_static_step_logits_equal_the_fast_decoders_across_windows(tiny, small_buckets):
    from zalo_music.fast_decoder import FastDecoder
    from zalo_music.graph_decoder import GraphSteps, StaticDecoder

    lm = tiny.lm
    tensors, sequence = _sequence(lm, 3, 24)
    length = sequence.shape[-1]
    with torch.inference_mode():
        _, cross = lm.fuser(torch.zeros(6, 1, lm.dim), tensors)
        fast = FastDecoder(lm, cross, length)
        steps = GraphSteps(StaticDecoder(lm, cross, length), lm.num_codebooks)
        windows = set()
        for s in range(length):
            want = fast.step(sequence[..., s:s + 1], s)
            got = steps(sequence[..., s:s + 1], s)
            windows.add(steps.decoder.window)
            assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item()), s
    assert sorted(windows) == [8, 16, 24, length], windows  # the last window ends at the sequence's end


def test_graph_decoder_draws_the_fast_decoders_codes_on_a_cpu(tiny, small_buckets):
    from zalo_music import fast_decoder, graph_decoder

    texts = ["calm piano with soft strings", "energetic rock with heavy drums", "lofi beat"]
    attributes, _ = tiny._prepare_tokens_and_attributes(texts, None)
    tiny.set_generation_params(duration=1.5, top_k=250, cfg_coef=3.0)
    codes = {}
    with torch.inference_mode():
        for graphs, decoder in ((False, fast_decoder), (True, graph_decoder)):
            torch.manual_seed(5)
            codes[graphs] = decoder.generate_tokens(tiny, attributes)
    assert codes[True].shape == (3, 4, 37)
    assert torch.equal(codes[True], codes[False]), f"{(codes[True] != codes[False]).float().mean():.2%} differ"


@pytest.fixture(scope="module")
def small_shape():
    """musicgen-small's LM shape cut to 2 layers, with a T5-base stand-in (and no spaCy, which the tiny recipe's
    tokenizer needs and the device checks do not carry)."""
    from tests.test_fast_decoder import FULL_SHAPE, _musicgen
    from zalo_music.standins import hub, models
    from zalo_music.standins.vocabularies import corpus

    if not hub.is_complete(clap_fixture.HF_ROOT, "t5-base"):
        hub.write_repo(clap_fixture.HF_ROOT, "t5-base", 0, 1,
                       lambda snap: models.write_t5_base(snap, 1, 0, corpus(seed=0)))
    return _musicgen(FULL_SHAPE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (scripts/device/checks.sh)")
def test_replayed_graphs_give_the_eager_static_steps_logits(small_shape, small_buckets):
    from zalo_music.graph_decoder import GraphSteps, StaticDecoder

    lm = small_shape.lm.cuda()
    tensors, sequence = _sequence(lm, 3, 24)
    tensors = {k: (t.cuda(), m.cuda()) for k, (t, m) in tensors.items()}
    sequence = sequence.cuda()
    with torch.inference_mode():
        _, cross = lm.fuser(torch.zeros(6, 1, lm.dim, device="cuda"), tensors)
        eager = GraphSteps(StaticDecoder(lm, cross, sequence.shape[-1]), lm.num_codebooks)
        eager.cuda = False  # the same static step, run eagerly
        graphs = GraphSteps(StaticDecoder(lm, cross, sequence.shape[-1]), lm.num_codebooks)
        for s in range(sequence.shape[-1]):
            want = eager(sequence[..., s:s + 1], s).clone()
            got = graphs(sequence[..., s:s + 1], s)
            assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item()), s
    assert len(graphs.graphs) == 4 and graphs.capture_s > 0  # step 0 runs eagerly; windows 8, 16, 24, end
