"""The pieces of the conditioning-validity check (zalo_music/conditioning.py) and what it needs from the tiny
recipe: a text conditioner that generalises across descriptions and a codec whose codes carry the music."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.helpers import clap_fixture  # noqa: F401  (HF stand-in cache before audiocraft's solvers import laion_clap)


def test_derangement_moves_every_clip_and_is_seeded():
    from zalo_music.conditioning import derangement

    for n in (2, 3, 10, 81):
        perm = derangement(n, seed=3)
        assert sorted(perm) == list(range(n))
        assert all(perm[i] != i for i in range(n))
        assert derangement(n, seed=3) == perm
    assert derangement(50, seed=1) != derangement(50, seed=2)
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1)


def test_bootstrap_interval_separates_a_real_gap_from_noise():
    from zalo_music.conditioning import bootstrap_gap

    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 0.01, size=80)
    real = noise + 0.01
    g_noise, g_real = bootstrap_gap(noise - noise.mean()), bootstrap_gap(real)
    assert g_noise.low < 0 < g_noise.high and not g_noise.excludes_zero()
    assert g_real.excludes_zero() and g_real.low < g_real.mean < g_real.high
    assert g_real.mean == pytest.approx(real.mean())


def test_words_tokenizer_hashes_each_word_offline(monkeypatch):
    """`tokenizer: words` needs no spaCy model download, keeps stop words ("no") and shares word tokens."""
    import spacy

    from zalo_music.runtime import prepare

    prepare()
    from audiocraft.modules.conditioners import LUTConditioner

    monkeypatch.setattr(spacy.cli, "download", lambda *a, **k: pytest.fail("spaCy tried to download a model"))
    lut = LUTConditioner(n_bins=1024, dim=8, output_dim=16, tokenizer="words")
    tokens, mask = lut.tokenize(["A calm piano piece, no drums.", "An epic piano piece with drums", None])
    assert mask.sum(1).tolist() == [6, 6, 0]  # punctuation dropped; "a", "no", "with" kept; None -> nothing
    first, second = set(tokens[0, :6].tolist()), set(tokens[1, :6].tolist())
    assert len(first & second) == 3  # piano, piece, drums: the same word is the same table row in any description
    noop = LUTConditioner(n_bins=1024, dim=8, output_dim=16, tokenizer="noop")
    assert noop.tokenize(["A calm piano piece, no drums."])[1].sum() == 1  # upstream's: one bucket per string


@pytest.mark.slow  # renders and encodes 40 s of demo music (~11 s)
def test_tiny_codec_codes_carry_the_music():
    """The persisted tiny codec's first codebook spreads demo music over many codes (audiocraft's noise-fitted
    codebooks put 99.97% of frames in one code, leaving an LM nothing to learn)."""
    from zalo_music import debug_codec
    from zalo_music.data.demo import make_specs, render

    codec = debug_codec.load()
    wav = torch.from_numpy(np.stack([render(s, sample_rate=32000) for s in make_specs(4, seed=99)])).float()
    with torch.no_grad():
        codes, _ = codec.encode(wav[:, None])
    for k in range(codes.shape[1]):
        _, counts = torch.unique(codes[:, k], return_counts=True)
        p = counts.float() / counts.sum()
        entropy = float(-(p * p.log()).sum())
        assert entropy > (1.5 if k == 0 else 3.0), (k, entropy)


def test_measure_reports_no_gap_when_every_description_is_the_same(tiny_random_musicgen):
    """Shuffling identical descriptions changes nothing: the gap is exactly zero, the verdict negative."""
    from zalo_music.conditioning import measure

    torch.manual_seed(0)
    lm = tiny_random_musicgen.lm
    codes = [torch.randint(0, lm.card, (lm.num_codebooks, 40)) for _ in range(6)]
    report = measure(lm, codes, ["a calm piano piece"] * 6)
    assert report.clips == 6 and report.shuffled_gap.mean == pytest.approx(0, abs=1e-6)
    assert not report.uses_text
    assert set(report.ce) == {"matched", "shuffled", "null"}
    assert all(3.0 < v < 8.0 for v in report.ce.values())  # ~ln(400) = 6.0 for a random LM: real losses
    assert "does NOT use its text" in report.summary()


def test_measure_sees_a_model_that_reads_its_text(tiny_random_musicgen):
    """An LM whose first-codebook logits are steered by the text (a hand-made stand-in for training) shows a gap;
    the same LM with the steering removed does not."""
    from zalo_music.conditioning import measure

    lm = tiny_random_musicgen.lm
    words = ["calm", "epic", "sad", "happy", "tense", "dreamy"]
    descriptions = [f"a {w} piece" for w in words]
    g = torch.Generator().manual_seed(0)  # each word's clip uses a code range of its own
    codes = [torch.randint(60 * i, 60 * i + 60, (lm.num_codebooks, 40), generator=g) for i in range(len(words))]

    original = lm.compute_predictions

    def steered(codes_, conditions, *a, **k):
        out = original(codes_, conditions, *a, **k)
        bias = torch.zeros_like(out.logits)
        for row, cond in enumerate(conditions):
            text = cond.text.get("description")
            if text:
                base = words.index(text.split()[1]) * 60
                bias[row, :, :, base:base + 60] = 5.0
        return dataclasses.replace(out, logits=out.logits + bias)

    lm.compute_predictions = steered
    try:
        report = measure(lm, codes, descriptions)
    finally:
        del lm.compute_predictions
    assert report.uses_text and report.shuffled_gap.mean > 1.0 and report.null_gap.mean > 1.0, report.summary()
    assert not measure(lm, codes, descriptions).uses_text
