"""Stand-in pieces (`zalo_music.standins`): real vocabulary sizes, depth cuts only layers, determinism, atomic
hub layout, idempotent build. The whole build and its use by the recipe are in tests/test_rehearsal.py."""

from __future__ import annotations

import json

import pytest

from zalo_music.standins import build, hub, models, vocabularies


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return vocabularies.corpus(n=400)


def test_t5_tokenizer_has_t5_base_vocabulary_and_length(tmp_path, texts):
    from transformers import AutoTokenizer, T5Tokenizer

    learned = vocabularies.write_t5_sentencepiece(tmp_path, texts)
    assert 100 < learned < vocabularies.T5_PIECES
    tok = T5Tokenizer.from_pretrained(tmp_path)
    assert len(tok) == 32100 and tok.model_max_length == 512  # 32,000 pieces + 100 sentinels, as t5-base
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1 and tok.unk_token_id == 2
    ids = tok(texts[0]).input_ids
    assert ids[-1] == 1 and max(ids) < learned  # padding pieces are never emitted
    assert tok.decode(ids, skip_special_tokens=True) == texts[0]
    assert AutoTokenizer.from_pretrained(tmp_path).model_max_length == 512


def test_byte_level_bpe_and_wordpiece_have_the_real_sizes_and_special_ids(tmp_path, texts):
    from transformers import BartTokenizer, BertTokenizer, RobertaTokenizer

    (tmp_path / "r").mkdir()
    (tmp_path / "b").mkdir()
    vocabularies.write_byte_level_bpe(tmp_path / "r", texts, "RobertaTokenizer")
    rob = RobertaTokenizer.from_pretrained(tmp_path / "r")
    assert len(rob) == 50265 and rob.model_max_length == 512
    assert (rob.bos_token_id, rob.pad_token_id, rob.eos_token_id, rob.unk_token_id, rob.mask_token_id) == \
        (0, 1, 2, 3, 50264)
    ids = rob(texts[1]).input_ids
    assert ids[0] == 0 and ids[-1] == 2 and len(ids) < len(texts[1]) / 2  # merges learned: not byte by byte
    assert rob.decode(ids, skip_special_tokens=True) == texts[1]
    assert len(BartTokenizer.from_pretrained(tmp_path / "r")) == 50265
    vocabularies.write_wordpiece(tmp_path / "b", texts)
    bert = BertTokenizer.from_pretrained(tmp_path / "b")
    assert len(bert) == 30522
    assert (bert.pad_token_id, bert.unk_token_id, bert.cls_token_id, bert.sep_token_id, bert.mask_token_id) == \
        (0, 100, 101, 102, 103)
    assert bert.unk_token_id not in bert(texts[2]).input_ids


@pytest.mark.parametrize("config,layer_keys", [
    (models.t5_base_config, {"num_layers", "num_decoder_layers"}),
    (models.roberta_base_config, {"num_hidden_layers"}),
])
def test_depth_cuts_layers_and_nothing_else(config, layer_keys):
    full, cut = config(None).to_dict(), config(2).to_dict()
    assert {k for k in full if full[k] != cut[k]} == layer_keys
    assert all(cut[k] == 2 for k in layer_keys) and all(full[k] == 12 for k in layer_keys)
    assert config(99).to_dict() == full  # never deeper than the real model


@pytest.mark.slow  # keeps `make test-fast` under 3 minutes; `make test` runs it
def test_encodec_stand_in_is_deterministic_and_uses_many_codes(tmp_path):
    from safetensors.torch import load_file

    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        (tmp_path / name).mkdir()
        facts = models.write_encodec_32khz(tmp_path / name, None, seed, [])
    assert facts["n_q"] == 4 and facts["frame_rate"] == 50
    a, b, c = (load_file(tmp_path / n / "model.safetensors") for n in "abc")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert any((a[k] != c[k]).any() for k in a)
    books = [k for k in a if k.endswith("codebook.embed")]
    assert len(books) == 4 and all(a[k].shape == (2048, 128) for k in books)
    # Codes of clips it was not fitted on: hundreds per codebook, as with the trained codec (random N(0, 1)
    # codebooks gave 2 per codebook: every frame the same code, which made token checks trivial).
    import torch
    from transformers import EncodecModel

    codec = EncodecModel.from_pretrained(tmp_path / "a").eval()
    with torch.no_grad():
        wav = models.synthetic_music(4, 10.0, torch.Generator().manual_seed(123))[:, None]
        codes = codec.encode(wav, bandwidth=2.2).audio_codes[0]  # [batch, n_q, frames]
    distinct = [len(codes[:, q].unique()) for q in range(codes.shape[1])]
    assert codes.shape[1] == 4 and min(distinct) > 200, distinct
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["sampling_rate"] == 32000 and config["codebook_size"] == 2048
    assert json.loads((tmp_path / "a" / "preprocessor_config.json").read_text())["sampling_rate"] == 32000


def test_repo_is_written_atomically_in_the_hub_layout(tmp_path):
    from huggingface_hub import try_to_load_from_cache

    def broken(snap):
        (snap / "config.json").write_text("{}")
        raise RuntimeError("killed halfway")

    with pytest.raises(RuntimeError):
        hub.write_repo(tmp_path, "org/model", 0, None, broken)
    assert not hub.repo_folder(tmp_path, "org/model").exists() and not hub.is_complete(tmp_path, "org/model")
    def good(snap):
        (snap / "config.json").write_text('{"a": 1}')

    snap = hub.write_repo(tmp_path, "org/model", 0, 3, good)
    assert hub.is_complete(tmp_path, "org/model") and hub.read_marker(tmp_path, "org/model")["depth"] == 3
    found = try_to_load_from_cache("org/model", "config.json", cache_dir=tmp_path / "hub")
    assert found is not None and json.loads(open(found).read()) == {"a": 1} and str(snap) in found
    assert not (tmp_path / ".building").exists()
    real = hub.repo_folder(tmp_path, "org/real") / "snapshots" / "abc"  # a real download: never replaced
    real.mkdir(parents=True)
    (real / "model.safetensors").write_text("weights")
    with pytest.raises(FileExistsError, match="not a zalo-music stand-in"):
        hub.write_repo(tmp_path, "org/real", 0, None, good)
    assert (real / "model.safetensors").read_text() == "weights"


def test_build_skips_complete_artifacts_and_rebuilds_on_another_seed(tmp_path, monkeypatch):
    calls = []

    def writer(snap, depth, seed, texts):
        calls.append(seed)
        (snap / "x.txt").write_text(str(seed))
        return {"ok": True}

    monkeypatch.setattr(build, "ARTIFACTS", (build.Artifact("org/a", writer), build.Artifact("org/b", writer)))
    monkeypatch.setattr(vocabularies, "corpus", lambda seed=0: ["a b c"])
    build.build_standins(tmp_path, depth=2, seed=0, log=lambda m: None)
    summary = build.build_standins(tmp_path, depth=2, seed=0, log=lambda m: None)
    assert calls == [0, 0] and set(summary["artifacts"].values()) == {"skipped (complete)"}
    assert summary["overrides"] == ["transformer_lm.num_layers=2"]
    assert summary["environment"]["HF_HOME"] == str(tmp_path / "hf")
    build.build_standins(tmp_path, depth=2, seed=1, log=lambda m: None)
    assert calls == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="depth"):
        build.build_standins(tmp_path, depth=0)
