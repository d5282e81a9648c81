"""Random-weight models with the real architectures, configs and on-disk formats of the hub artifacts.

Each `write_*` fills one snapshot folder (see `zalo_music.standins.hub.write_repo`). `depth` cuts the number
of transformer layers and nothing else: the classes, file formats and every other config value are the real
ones, so the code path that loads and runs them is the one the real checkpoints take.

The MusicGen LM and the CLAP checkpoint are built in a child process (`python -m zalo_music.standins.models`)
with HF_HOME pointing at the stand-in cache: audiocraft's T5 conditioner and laion-clap's text tower load
`t5-base` / `roberta-base` by hub name, and transformers fixes its cache folder when it is first imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: facebook/musicgen-small as audiocraft composes it (the README of audiocraft's MusicGen training docs).
MUSICGEN_SMALL_ARGV = ["solver=musicgen/musicgen_base_32khz", "model/lm/model_scale=small",
                       "conditioner=text2music"]


def _layers(full: int, depth: int | None) -> int:
    return full if depth is None else max(1, min(full, int(depth)))


def _params(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def t5_base_config(depth: int | None = None):
    """t5-base's config (12 + 12 layers, d_model 768, 32,128 embeddings), with `depth` layers per stack."""
    from transformers import T5Config

    layers = _layers(12, depth)
    return T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=layers,
                    num_decoder_layers=layers, num_heads=12, relative_attention_num_buckets=32,
                    dropout_rate=0.1, layer_norm_epsilon=1e-6, initializer_factor=1.0,
                    feed_forward_proj="relu", is_encoder_decoder=True, pad_token_id=0, eos_token_id=1,
                    decoder_start_token_id=0, n_positions=512, architectures=["T5ForConditionalGeneration"])


def roberta_base_config(depth: int | None = None):
    """roberta-base's config (12 layers, hidden 768, 50,265 embeddings, 514 positions), `depth` layers."""
    from transformers import RobertaConfig

    from .vocabularies import ROBERTA_VOCAB

    return RobertaConfig(vocab_size=ROBERTA_VOCAB, hidden_size=768, num_hidden_layers=_layers(12, depth),
                         num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
                         max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                         pad_token_id=1, bos_token_id=0, eos_token_id=2, architectures=["RobertaForMaskedLM"])


def write_t5_base(snap: Path, depth: int | None, seed: int, texts: list[str]) -> dict:
    """t5-base: T5ForConditionalGeneration with t5-base's config, safetensors weights, sentencepiece tokenizer."""
    import torch
    from transformers import T5ForConditionalGeneration

    from .vocabularies import write_t5_sentencepiece

    learned = write_t5_sentencepiece(snap, texts)
    config = t5_base_config(depth)
    layers = config.num_layers
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config).eval()
    model.save_pretrained(snap, safe_serialization=True)
    return {"layers": layers, "parameters": _params(model), "sentencepiece_learned": learned}


def write_roberta_base(snap: Path, depth: int | None, seed: int, texts: list[str]) -> dict:
    """roberta-base: RobertaForMaskedLM with roberta-base's config and a byte-level BPE padded to 50,265."""
    import torch
    from transformers import RobertaForMaskedLM

    from .vocabularies import write_byte_level_bpe

    learned = write_byte_level_bpe(snap, texts, "RobertaTokenizer")
    config = roberta_base_config(depth)
    layers = config.num_hidden_layers
    torch.manual_seed(seed)
    model = RobertaForMaskedLM(config).eval()
    model.save_pretrained(snap, safe_serialization=True)
    return {"layers": layers, "parameters": _params(model), "bpe_learned": learned}


def write_bart_base_tokenizer(snap: Path, depth: int | None, seed: int, texts: list[str]) -> dict:
    """facebook/bart-base: config + byte-level BPE only (laion-clap loads just its tokenizer at import)."""
    from transformers import BartConfig

    from .vocabularies import ROBERTA_VOCAB, write_byte_level_bpe

    learned = write_byte_level_bpe(snap, texts, "BartTokenizer")
    BartConfig(vocab_size=ROBERTA_VOCAB).to_json_file(snap / "config.json")
    return {"weights": "none (tokenizer only)", "bpe_learned": learned}


def write_bert_base_uncased_tokenizer(snap: Path, depth: int | None, seed: int, texts: list[str]) -> dict:
    """bert-base-uncased: config + WordPiece vocabulary only (laion-clap loads just its tokenizer at import)."""
    from transformers import BertConfig

    from .vocabularies import write_wordpiece

    learned = write_wordpiece(snap, texts)
    BertConfig().to_json_file(snap / "config.json")
    return {"weights": "none (tokenizer only)", "wordpiece_learned": learned}


def encodec_32khz_config():
    """facebook/encodec_32khz's transformers config: mono 32 kHz, stride 640 (50 Hz), 4 x 2048 codebooks."""
    from transformers import EncodecConfig

    return EncodecConfig(sampling_rate=32000, audio_channels=1, num_filters=64, upsampling_ratios=[8, 5, 4, 4],
                         target_bandwidths=[2.2], codebook_size=2048, codebook_dim=128, hidden_size=128,
                         num_lstm_layers=2, norm_type="weight_norm", normalize=False, chunk_length_s=None,
                         overlap=None, pad_mode="reflect", compress=2, kernel_size=7, last_kernel_size=7,
                         residual_kernel_size=3, dilation_growth_rate=2, num_residual_layers=1,
                         use_causal_conv=False, use_conv_shortcut=False, trim_right_ratio=1.0,
                         architectures=["EncodecModel"])


def synthetic_music(n: int, seconds: float, g, sample_rate: int = 32000):
    """`n` clips of chords of decaying tones over noise, peak 0.9: `[n, samples]` float32 (torch).

    Args:
        n: number of clips.
        seconds: clip length.
        g: a `torch.Generator` (the clips are a function of its state).
        sample_rate: samples per second.
    """
    import math

    import torch

    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    freqs = 55.0 * 2 ** (6 * torch.rand(n, 6, 1, generator=g))  # 55 Hz .. 3.5 kHz
    onsets = seconds * torch.rand(n, 6, 1, generator=g)
    env = torch.exp(-3 * (t - onsets).clamp(min=0)) * (t >= onsets)
    wav = (torch.sin(2 * math.pi * freqs * t) * env).sum(1) + 0.05 * torch.randn(n, len(t), generator=g)
    return (0.9 * wav / wav.abs().amax(dim=1, keepdim=True)).float()


def write_encodec_32khz(snap: Path, depth: int | None, seed: int, texts: list[str]) -> dict:
    """facebook/encodec_32khz: transformers EncodecModel + its feature extractor config (no layers to cut).

    A fresh EncodecModel has all-zero codebooks (every frame would quantize to code 0), and random N(0, 1)
    codebooks sit far from what the random encoder outputs (every frame would take the same one or two codes).
    Each residual stage's codebook is drawn instead from the encoder's own residual frames on synthetic music,
    so clips quantize to hundreds of codes per codebook, as with the trained codec.
    """
    import torch
    from transformers import EncodecFeatureExtractor, EncodecModel

    config = encodec_32khz_config()
    torch.manual_seed(seed)
    model = EncodecModel(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        frames = model.encoder(synthetic_music(16, 5.0, g)[:, None]).transpose(1, 2)
        residual = frames.reshape(-1, config.codebook_dim)  # 16 clips x 250 frames
        for layer in model.quantizer.layers:
            book = layer.codebook
            pick = torch.randint(len(residual), (book.embed.shape[0],), generator=g)
            book.embed.copy_(residual[pick] + 1e-2 * residual.std() * torch.randn(book.embed.shape, generator=g))
            book.embed_avg.copy_(book.embed)
            book.cluster_size.fill_(1.0)
            book.inited.fill_(True)
            residual = residual - book.embed[torch.cdist(residual, book.embed).argmin(dim=1)]
    model.save_pretrained(snap, safe_serialization=True)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=32000, padding_value=0.0, chunk_length_s=None,
                            overlap=None).save_pretrained(snap)
    return {"parameters": _params(model), "n_q": config.num_quantizers, "frame_rate": config.frame_rate}


# --- built in a child process (needs the stand-in cache as its HF_HOME) ---------------------------------------


def write_musicgen_small(snap: Path, depth: int | None, seed: int) -> dict:
    """facebook/musicgen-small as audiocraft's loaders read it.

    `state_dict.bin`: torch.save of {'xp.cfg': YAML of the config audiocraft composes for
    `solver=musicgen/musicgen_base_32khz model/lm/model_scale=small conditioner=text2music`, 'best_state': the
    LM state dict, 'version', 'exported'} (the layout of `audiocraft.utils.export.export_lm`).
    `compression_state_dict.bin`: audiocraft's reference to `facebook/encodec_32khz`
    (`export_pretrained_compression_model`), which `load_compression_model` resolves through transformers'
    EncodecModel. Must run with HF_HOME at the stand-in cache (T5 is loaded by hub name).
    """
    import audiocraft
    import torch
    from audiocraft.models import builders
    from audiocraft.utils.export import export_pretrained_compression_model
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    # audiocraft's own config tree (the sdist's config/, beside the package), composed by Hydra as
    # audiocraft's train.py would compose it.
    config_dir = Path(audiocraft.__file__).resolve().parent.parent / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.1"):
        cfg = compose(config_name="config", overrides=MUSICGEN_SMALL_ARGV)
    layers = _layers(int(cfg.transformer_lm.num_layers), depth)
    cfg.transformer_lm.num_layers = layers
    try:
        text = OmegaConf.to_yaml(cfg, resolve=True)
    except Exception:  # an interpolation that cannot resolve here (an unset env var): keep it as written
        text = OmegaConf.to_yaml(cfg)
    build_cfg = OmegaConf.create(text)
    build_cfg.device = "cpu"
    build_cfg.dtype = "float32"
    torch.manual_seed(seed)
    lm = builders.get_lm_model(build_cfg)
    state = {k: v.detach().clone() for k, v in lm.state_dict().items()}
    torch.save({"best_state": state, "xp.cfg": text, "version": audiocraft.__version__, "exported": True},
               snap / "state_dict.bin")
    export_pretrained_compression_model("facebook/encodec_32khz", snap / "compression_state_dict.bin")
    return {"layers": layers, "parameters": _params(lm), "dim": int(cfg.transformer_lm.dim),
            "config_from": " ".join(MUSICGEN_SMALL_ARGV)}


def write_clap_music(path: Path, seed: int) -> dict:
    """The LAION-CLAP music checkpoint (HTSAT-base audio tower, roberta text tower) in laion's training layout."""
    from .clap import build_clap_checkpoint

    tmp = path.with_name(path.name + ".tmp")
    build_clap_checkpoint(tmp, amodel="HTSAT-base", tmodel="roberta", seed=seed)
    os.replace(tmp, path)
    return {"path": str(path)}


def run_child(what: str, target: Path, depth: int | None, seed: int, env: dict[str, str]) -> dict:
    """Run `write_musicgen_small` or `write_clap_music` in a child process with the stand-in environment.

    Args:
        what: `musicgen` or `clap`.
        target: snapshot folder (musicgen) or checkpoint path (clap).
        depth, seed: as for the stand-ins.
        env: variables to set in the child (HF_HOME, HF_HUB_OFFLINE, ...).
    Returns:
        The facts the writer returned.
    """
    cmd = [sys.executable, "-m", "zalo_music.standins.models", what, str(target),
           "none" if depth is None else str(depth), str(seed)]
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the {what} stand-in failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _child_main(argv: list[str]) -> int:
    what, target, depth_s, seed_s = argv
    depth = None if depth_s == "none" else int(depth_s)
    if what == "musicgen":
        facts = write_musicgen_small(Path(target), depth, int(seed_s))
    elif what == "clap":
        facts = write_clap_music(Path(target), int(seed_s))
    else:
        raise SystemExit(f"unknown stand-in {what!r}")
    print(json.dumps(facts))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
