"""Tokenizer stand-ins trained offline on Zalo-style descriptions, padded to the real vocabulary sizes.

The real files cannot be downloaded here, and the vocabulary sizes matter: they fix the shapes of the
embedding tables (T5: 32,128 rows for 32,000 pieces + 100 sentinels; RoBERTa/BART: 50,265; BERT: 30,522).
Pieces that the small training corpus cannot produce are added as padding that tokenization never emits, so
token ids stay inside the real range and every table has its real shape.
"""

from __future__ import annotations

import json
from pathlib import Path

T5_PIECES = 32000           # t5-base spiece.model (the tokenizer adds 100 <extra_id_*> on top)
ROBERTA_VOCAB = 50265       # roberta-base / facebook/bart-base vocab.json
BERT_VOCAB = 30522          # bert-base-uncased vocab.txt
MODEL_MAX_LENGTH = 512


def corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """Deterministic description-like sentences: the demo generator's descriptions (Zalo/MusicCaps style).

    Args:
        n: number of descriptions.
        seed: the demo generator's master seed.
    """
    from zalo_music.data.demo import make_specs

    return [s.description for s in make_specs(n=n, seed=seed)]


def write_t5_sentencepiece(snap: Path, texts: list[str], pieces: int = T5_PIECES) -> int:
    """Train a unigram sentencepiece model (T5's special ids) and pad it with UNUSED pieces to `pieces`.

    Writes `spiece.model` and t5-base's `tokenizer_config.json` (model_max_length 512, 100 extra ids).

    Returns:
        The number of pieces learned from the corpus (the rest is padding).
    """
    import io

    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    buf = io.BytesIO()
    # One thread and no sampling or shuffling: the same corpus gives the same model bytes.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buf, model_type="unigram", vocab_size=2000,
        hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
        shuffle_input_sentence=False, input_sentence_size=0, minloglevel=2)
    model = pb.ModelProto()
    model.ParseFromString(buf.getvalue())
    learned = len(model.pieces)
    for i in range(pieces - learned):
        piece = model.pieces.add()
        piece.piece = f"<unused_{i}>"
        piece.score = 0.0
        piece.type = pb.ModelProto.SentencePiece.Type.UNUSED  # never emitted by encoding
    (snap / "spiece.model").write_bytes(model.SerializeToString())
    (snap / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "T5Tokenizer", "model_max_length": MODEL_MAX_LENGTH, "extra_ids": 100,
        "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "legacy": True}, indent=1))
    return learned


def write_byte_level_bpe(snap: Path, texts: list[str], tokenizer_class: str, size: int = ROBERTA_VOCAB) -> int:
    """RoBERTa/BART-style byte-level BPE (`vocab.json` + `merges.txt`) padded to `size` entries.

    Ids as in roberta-base: `<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3, then the 256 byte symbols and the learned
    merges, padding entries that no merge produces, and `<mask>` last (`size - 1`).

    Returns:
        The number of entries learned (bytes + merges).
    """
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(texts, vocab_size=4000, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    model = json.loads(bpe.to_str())["model"]
    learned = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])
               if t not in {"<s>", "<pad>", "</s>", "<unk>"}]
    symbols = ["<s>", "<pad>", "</s>", "<unk>", *learned]
    symbols += [f"<unused_{i}>" for i in range(size - 1 - len(symbols))] + ["<mask>"]
    (snap / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(symbols)}, ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (snap / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (snap / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": tokenizer_class, "model_max_length": MODEL_MAX_LENGTH, "bos_token": "<s>",
        "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>",
        "mask_token": "<mask>", "add_prefix_space": False, "errors": "replace"}, indent=1))
    return len(learned)


def write_wordpiece(snap: Path, texts: list[str], size: int = BERT_VOCAB) -> int:
    """bert-base-uncased-style WordPiece `vocab.txt` padded with `[unusedN]` to `size` lines.

    Ids as in bert-base-uncased: `[PAD]` 0, `[unused0..98]`, `[UNK]` 100, `[CLS]` 101, `[SEP]` 102, `[MASK]` 103.

    Returns:
        The number of word and character entries from the corpus.
    """
    import re

    head = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({c for t in texts for c in t.lower() if not c.isspace()})
    words = sorted({w for t in texts for w in re.findall(r"[a-z0-9]+", t.lower())})
    body = [*chars, *("##" + c for c in chars), *(w for w in words if w not in chars)]
    tail = [f"[unused{i}]" for i in range(99, 99 + size - len(head) - len(body))]
    (snap / "vocab.txt").write_text("\n".join(head + body + tail) + "\n", encoding="utf-8")
    (snap / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": MODEL_MAX_LENGTH}, indent=1))
    return len(body)
