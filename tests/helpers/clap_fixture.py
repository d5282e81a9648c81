"""Offline LAION-CLAP for tests (and a private `//reference` folder): a tiny random stand-in Hugging Face cache and a random CLAP checkpoint in laion's training-script layout.

`import laion_clap` loads the bert-base-uncased, roberta-base and facebook/bart-base tokenizers at module level
and `CLAP_Module()` loads `RobertaModel.from_pretrained('roberta-base')`. None of that is reachable here, so we
write a cache with the same layout (`models--<org>--<name>/{refs/main,snapshots/<rev>/}`) holding tiny
tokenizers and a 1-layer RobertaModel. Scores computed with it are meaningless; the code path is the real one.

huggingface_hub reads HF_HOME / HF_HUB_CACHE when it is *imported*, so this module points them at a fresh
folder when it is imported (test collection, before any test imports transformers) and for every child process.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

HF_ROOT = Path(tempfile.mkdtemp(prefix="zalo-music-hf-"))
#: `//reference` of the tests (CLAP checkpoint, FAD stats cache), never the project's own folder.
REFERENCE_DIR = HF_ROOT / "reference"
HF_ENV = {
    "HF_HOME": str(HF_ROOT),
    "HF_HUB_CACHE": str(HF_ROOT / "hub"),
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "ZALO_MUSIC_REFERENCE_DIR": str(REFERENCE_DIR),
    "AUDIOCRAFT_REFERENCE_DIR": str(REFERENCE_DIR),
}
os.environ.update(HF_ENV)
os.environ.pop("ZALO_MUSIC_CLAP_CHECKPOINT", None)
if "huggingface_hub" in sys.modules:  # imported before us: move its cache constant too
    import huggingface_hub.constants as _hc

    _hc.HF_HOME = HF_ENV["HF_HOME"]
    _hc.HF_HUB_CACHE = HF_ENV["HF_HUB_CACHE"]

_REV = "0" * 40
_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def _snapshot(repo_id: str) -> Path:
    repo = HF_ROOT / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(_REV)
    snap = repo / "snapshots" / _REV
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def _byte_level_bpe(snap: Path, tokenizer_class: str) -> None:
    """vocab.json + merges.txt of a byte-level BPE with the 256 byte symbols and no merges."""
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    symbols = _SPECIALS + sorted(set(bytes_to_unicode().values()))
    (snap / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(symbols)}))
    (snap / "merges.txt").write_text("#version: 0.2\n")
    (snap / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tokenizer_class,
                                                             "model_max_length": 512}))


def _wordpiece(snap: Path) -> None:
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'-")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars)]
    (snap / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (snap / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                             "do_lower_case": True, "model_max_length": 512}))


def build_hf_cache() -> Path:
    """Write the stand-in cache (idempotent) and return HF_HOME.

    Returns:
        The HF_HOME folder the test process and its children use.
    """
    marker = HF_ROOT / ".built"
    if marker.exists():
        return HF_ROOT
    import torch
    from transformers import RobertaConfig, RobertaModel

    _wordpiece(_snapshot("bert-base-uncased"))
    _byte_level_bpe(_snapshot("facebook/bart-base"), "BartTokenizer")
    roberta = _snapshot("roberta-base")
    _byte_level_bpe(roberta, "RobertaTokenizer")
    # CLAP's text projection is hard-wired to 768 inputs; everything else is as small as it gets.
    config = RobertaConfig(vocab_size=len(_SPECIALS) + 256, hidden_size=768, num_hidden_layers=1,
                           num_attention_heads=4, intermediate_size=256, max_position_embeddings=130,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(roberta)
    marker.write_text("ok")
    return HF_ROOT


def build_clap_checkpoint(path: Path, amodel: str = "HTSAT-tiny", tmodel: str = "roberta", seed: int = 1234) -> Path:
    """Write a random laion-clap checkpoint in the official files' layout (`zalo_music.standins.clap`).

    The layout is laion-clap's training script's: `epoch`, `name`, a `module.`-prefixed `state_dict` with
    `text_branch.embeddings.position_ids`, and an `optimizer` state whose `lr` values are numpy float64, so the
    safe-loading path the real checkpoint needs is the one the tests exercise. Idempotent: an existing file is
    returned as is.

    Args:
        path: file to write (parents are created).
        amodel: audio tower (HTSAT-tiny: fast; HTSAT-base: the music checkpoint's).
        tmodel: text tower.
        seed: seed of the random weights.
    Returns:
        `path`.
    """
    path = Path(path)
    if path.is_file():
        return path
    build_hf_cache()
    from zalo_music.standins.clap import build_clap_checkpoint as build

    return build(path, amodel=amodel, tmodel=tmodel, seed=seed)
