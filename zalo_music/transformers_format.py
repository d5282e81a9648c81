"""MusicGen's LM in Hugging Face transformers' format: the weight mapping both ways, the checks that a model fits
it, and the loader that lets a recipe start from a transformers-format MusicGen (`continue_from=//pretrained/...`).

transformers 4.57's wheel ships no weight-name mapping for audiocraft checkpoints (its
`convert_musicgen_transformers.py` lives in its source tree only, and accepts Meta's three releases), so the
mapping is declared here, once, as `LAYER_NAMES` / `TOP_NAMES` / `PER_CODEBOOK` plus the one structural change:
audiocraft packs each attention's query, key and value projections into one `in_proj_weight` [3D, D], transformers
keeps three [D, D] matrices (split in that order). Everything else is a rename: the two formats compute the same
function (tests/test_transformers_format.py checks logits, generated tokens and decoded audio, and the bit-exact
round trip). Writing a whole export folder is `transformers_export.py`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from omegaconf import DictConfig

#: Names inside one transformer layer: audiocraft (`transformer.layers.<i>.`) -> transformers
#: (`decoder.model.decoder.layers.<i>.`).
LAYER_NAMES = {
    "self_attn.out_proj.weight": "self_attn.out_proj.weight",
    "cross_attention.out_proj.weight": "encoder_attn.out_proj.weight",
    "linear1.weight": "fc1.weight",
    "linear2.weight": "fc2.weight",
    "norm1.weight": "self_attn_layer_norm.weight",
    "norm1.bias": "self_attn_layer_norm.bias",
    "norm_cross.weight": "encoder_attn_layer_norm.weight",
    "norm_cross.bias": "encoder_attn_layer_norm.bias",
    "norm2.weight": "final_layer_norm.weight",
    "norm2.bias": "final_layer_norm.bias",
}
#: Packed attention input projections (audiocraft) -> the transformers attention whose q/k/v they hold.
PACKED = {"self_attn.in_proj_weight": "self_attn", "cross_attention.in_proj_weight": "encoder_attn"}
#: Names outside the layers.
TOP_NAMES = {
    "out_norm.weight": "decoder.model.decoder.layer_norm.weight",
    "out_norm.bias": "decoder.model.decoder.layer_norm.bias",
    "condition_provider.conditioners.description.output_proj.weight": "enc_to_dec_proj.weight",
    "condition_provider.conditioners.description.output_proj.bias": "enc_to_dec_proj.bias",
}
#: One per codebook: audiocraft prefix -> transformers prefix (`<prefix>.<k>.weight`).
PER_CODEBOOK = {"emb": "decoder.model.decoder.embed_tokens", "linears": "decoder.lm_heads"}
_LAYER_AC = "transformer.layers."
#: What audiocraft inserts in attention weight names when torch's MultiheadAttention holds them.
_TORCH_MHA = ".mha."
_LAYER_HF = "decoder.model.decoder.layers."

#: audiocraft `transformer_lm` settings transformers' MusicGen decoder has no room for: name -> the only value
#: it can represent.
_FIXED_LM = {"activation": "gelu", "norm_first": True, "bias_ff": False, "bias_attn": False, "bias_proj": False,
             "positional_embedding": "sin", "xpos": False, "layer_scale": None, "norm": "layer_norm",
             "qk_layer_norm": False, "qk_layer_norm_cross": False, "kv_repeat": 1, "causal": True,
             "past_context": None}


def check_convertible(cfg: DictConfig, problems: list[str] | None = None) -> None:
    """Refuse an audiocraft MusicGen config that transformers' `MusicgenForConditionalGeneration` cannot hold.

    Args:
        cfg: the XP config (as saved in `state_dict.bin` as `xp.cfg`).
        problems: ones the caller found already (the codec), reported in the same message.
    Raises:
        ValueError: naming every setting that differs from what the transformers format can represent.
    """
    lm = cfg.transformer_lm
    problems = list(problems or [])
    problems += [f"transformer_lm.{k}={lm.get(k)!r} (transformers: {v!r})" for k, v in _FIXED_LM.items()
                 if lm.get(k, v) != v]
    pattern = cfg.codebooks_pattern
    delays = list(pattern.delay.delays) if pattern.modeling == "delay" else None
    if delays != list(range(lm.n_q)):
        problems.append(f"codebooks_pattern {pattern.modeling} {delays} (transformers: delay "
                        f"{list(range(lm.n_q))})")
    conditioners = dict(cfg.conditioners or {})
    if set(conditioners) != {"description"} or conditioners["description"].get("model") != "t5":
        problems.append(f"conditioners {sorted(conditioners)} with "
                        f"{[(k, v.get('model')) for k, v in conditioners.items()]} (transformers: one T5 text "
                        "conditioner, 'description'; melody and other conditioners have other classes)")
    fuser = cfg.get("fuser") or {}
    others = [k for k in ("sum", "prepend", "input_interpolate") if list(fuser.get(k) or [])]
    if list(fuser.get("cross") or []) != ["description"] or fuser.get("cross_attention_pos_emb") or others:
        problems.append(f"fuser cross={list(fuser.get('cross') or [])} "
                        f"cross_attention_pos_emb={fuser.get('cross_attention_pos_emb')} {others} (transformers: "
                        "the description by cross-attention only, no positional embedding on it)")
    if int(cfg.get("channels", 1)) != 1:
        problems.append(f"channels={cfg.channels} (this export writes mono MusicGen only)")
    if problems:
        raise ValueError("this MusicGen cannot be written in transformers' format: " + "; ".join(problems))


def decoder_config(cfg: DictConfig):
    """transformers' `MusicgenDecoderConfig` for an audiocraft LM config (after `check_convertible`)."""
    from transformers import MusicgenDecoderConfig

    lm = cfg.transformer_lm
    return MusicgenDecoderConfig(
        vocab_size=int(lm.card), num_codebooks=int(lm.n_q), hidden_size=int(lm.dim),
        num_hidden_layers=int(lm.num_layers), num_attention_heads=int(lm.num_heads),
        ffn_dim=int(lm.dim * lm.hidden_scale), activation_function="gelu", dropout=float(lm.dropout),
        attention_dropout=float(lm.get("attention_dropout") or lm.dropout), activation_dropout=0.0,
        scale_embedding=False, audio_channels=1, pad_token_id=int(lm.card), bos_token_id=int(lm.card),
        decoder_start_token_id=int(lm.card), tie_word_embeddings=False)


def to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """audiocraft LM state dict -> `MusicgenForConditionalGeneration` names (decoder and `enc_to_dec_proj`).

    Args:
        state: `LMModel.state_dict()` (or an export's `best_state`).
    Raises:
        ValueError: a weight this mapping does not know (another architecture), named.
    """
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        name = name.replace(_TORCH_MHA, ".")  # the same weights, held by torch's MultiheadAttention
        if name in TOP_NAMES:
            out[TOP_NAMES[name]] = value
            continue
        m = re.fullmatch(r"(emb|linears)\.(\d+)\.weight", name)
        if m:
            out[f"{PER_CODEBOOK[m[1]]}.{m[2]}.weight"] = value
            continue
        m = re.fullmatch(re.escape(_LAYER_AC) + r"(\d+)\.(.+)", name)
        if m and m[2] in LAYER_NAMES:
            out[f"{_LAYER_HF}{m[1]}.{LAYER_NAMES[m[2]]}"] = value
            continue
        if m and m[2] in PACKED:
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                out[f"{_LAYER_HF}{m[1]}.{PACKED[m[2]]}.{part}.weight"] = chunk.clone()
            continue
        raise ValueError(f"LM weight {name!r} has no place in transformers' MusicGen (another architecture?)")
    return out


def uses_torch_mha(cfg: DictConfig) -> bool:
    """Whether audiocraft's LM holds its attention weights in torch's `nn.MultiheadAttention` (`<attn>.mha.*`):
    it does unless `transformer_lm.custom` or `memory_efficient` (audiocraft/modules/transformer.py,
    `_is_custom`)."""
    lm = cfg.transformer_lm
    return not (lm.get("custom", False) or lm.get("memory_efficient", False))


def from_transformers(state: dict[str, torch.Tensor], torch_mha: bool = False) -> dict[str, torch.Tensor]:
    """`MusicgenForConditionalGeneration` state (decoder and `enc_to_dec_proj`) -> audiocraft LM names; the
    exact inverse of `to_transformers`. Text and audio encoder weights are ignored (audiocraft loads them by
    name).

    Args:
        state: the transformers model's state dict (or its safetensors).
        torch_mha: name the attention weights as an LM built with `uses_torch_mha` holds them.
    """
    top = {v: k for k, v in TOP_NAMES.items()}
    per_codebook = {v: k for k, v in PER_CODEBOOK.items()}
    layer = {v: k for k, v in LAYER_NAMES.items()}
    packed = {v: k for k, v in PACKED.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for name, value in state.items():
        if name.startswith(("text_encoder.", "audio_encoder.")):
            continue
        if name in top:
            out[top[name]] = value
            continue
        m = re.fullmatch(r"(.+)\.(\d+)\.weight", name)
        if m and m[1] in per_codebook:
            out[f"{per_codebook[m[1]]}.{m[2]}.weight"] = value
            continue
        m = re.fullmatch(re.escape(_LAYER_HF) + r"(\d+)\.(.+)", name)
        if m and m[2] in layer:
            out[f"{_LAYER_AC}{m[1]}.{layer[m[2]]}"] = value
            continue
        mm = re.fullmatch(r"(self_attn|encoder_attn)\.([qkv])_proj\.weight", m[2]) if m else None
        if mm:
            qkv.setdefault((m[1], mm[1]), {})[mm[2]] = value
            continue
        raise ValueError(f"transformers weight {name!r} has no place in audiocraft's LM (another architecture?)")
    for (i, attn), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"layer {i} {attn}: has {sorted(parts)} projections, needs q, k and v")
        out[f"{_LAYER_AC}{i}.{packed[attn]}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    if torch_mha:
        out = {re.sub(r"\.(self_attn|cross_attention)\.", r".\1.mha.", k): v for k, v in out.items()}
    return out


def t5_name(cfg: DictConfig) -> str:
    """The hub name of the T5 the recipe's text conditioner uses."""
    return str(cfg.conditioners.description.t5.name)


# ------------------------------------------------------------------------------------------------- import

#: transformers `MusicgenForConditionalGeneration` config fields a recipe's LM must match, with their
#: audiocraft names.
_MATCH = {"hidden_size": "dim", "num_hidden_layers": "num_layers", "num_attention_heads": "num_heads",
          "num_codebooks": "n_q", "vocab_size": "card"}


def is_transformers_folder(path: str | Path) -> bool:
    """Whether `path` is a folder holding a transformers MusicGen (`config.json` of model_type musicgen)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type", "").startswith("musicgen")
    except (OSError, ValueError):
        return False


def check_transformers_config(config: dict, cfg: DictConfig | None = None, where: str = "") -> None:
    """Refuse a transformers MusicGen config this project cannot fine-tune, or that differs from the recipe's LM.

    Args:
        config: the folder's `config.json`, parsed.
        cfg: the recipe's config (None: check the architecture only).
        where: the folder or hub id, for messages.
    Raises:
        ValueError: naming each difference.
    """
    problems = []
    if config.get("model_type") != "musicgen":
        problems.append(f"model_type {config.get('model_type')!r} (needs 'musicgen'; melody and other variants "
                        "have other architectures)")
    dec = config.get("decoder") or {}
    if int(dec.get("audio_channels", 1)) != 1:
        problems.append(f"decoder.audio_channels {dec.get('audio_channels')} (stereo: needs 1)")
    if dec.get("activation_function", "gelu") != "gelu" or dec.get("scale_embedding"):
        problems.append(f"decoder activation {dec.get('activation_function')!r} / scale_embedding "
                        f"{dec.get('scale_embedding')} (needs gelu, false)")
    if (config.get("text_encoder") or {}).get("model_type") != "t5":
        problems.append(f"text_encoder {(config.get('text_encoder') or {}).get('model_type')!r} (needs t5)")
    if cfg is not None:
        lm = cfg.transformer_lm
        for hf, ac in _MATCH.items():
            if hf in dec and int(dec[hf]) != int(lm[ac]):
                problems.append(f"decoder.{hf} {dec[hf]} but the recipe's transformer_lm.{ac} is {lm[ac]}")
        if "ffn_dim" in dec and int(dec["ffn_dim"]) != int(lm.dim * lm.hidden_scale):
            problems.append(f"decoder.ffn_dim {dec['ffn_dim']} but the recipe's is {int(lm.dim * lm.hidden_scale)}")
        t5 = (config.get("text_encoder") or {}).get("d_model")
        if t5 is not None and cfg.get("conditioners") and "description" in cfg.conditioners:
            from transformers import AutoConfig

            want = AutoConfig.from_pretrained(t5_name(cfg)).d_model
            if int(t5) != int(want):
                problems.append(f"text_encoder.d_model {t5} but the recipe's T5 ({t5_name(cfg)}) has {want}")
    if problems:
        raise ValueError(f"{where}: not a MusicGen this recipe can start from: " + "; ".join(problems))


def _transformers_files(name: str) -> tuple[Path, list[Path]] | None:
    """(config.json, weight files) of a transformers MusicGen folder or hub repo; None when it is not one."""
    path = Path(name)
    if path.is_dir():
        if not is_transformers_folder(path):
            return None
        weights = sorted(path.glob("model*.safetensors"))
        if not weights:
            raise FileNotFoundError(f"{path}: a transformers MusicGen config without model*.safetensors weights")
        return path / "config.json", weights
    from audiocraft.models.loaders import get_audiocraft_cache_dir
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:  # into the cache audiocraft's loader reads next, so the file is fetched once
        hf_hub_download(name, "state_dict.bin", cache_dir=get_audiocraft_cache_dir())
        return None  # audiocraft's own format is there (Meta's repos hold both): audiocraft loads it
    except EntryNotFoundError:
        pass
    config = Path(hf_hub_download(name, "config.json"))
    try:
        index = json.loads(Path(hf_hub_download(name, "model.safetensors.index.json")).read_text())
        files = sorted(set(index["weight_map"].values()))
    except EntryNotFoundError:
        files = ["model.safetensors"]
    return config, [Path(hf_hub_download(name, f)) for f in files]


def pretrained_lm_state(name: str, cfg: DictConfig | None = None,
                        torch_mha: bool | None = None) -> dict[str, torch.Tensor]:
    """The LM state for `continue_from=//pretrained/<name>`: audiocraft's format as audiocraft loads it, or a
    transformers-format MusicGen (folder or hub id) converted to audiocraft's names.

    Args:
        name: hub id, folder or file.
        cfg: the recipe's config, checked against a transformers model's shape.
        torch_mha: name attention weights for torch's MultiheadAttention (default: as `cfg` builds the LM).
    """
    found = _transformers_files(name)
    if found is None:
        from audiocraft.models.loaders import load_lm_model_ckpt

        return load_lm_model_ckpt(name)["best_state"]
    from safetensors.torch import load_file

    config_file, weights = found
    check_transformers_config(json.loads(config_file.read_text()), cfg, where=name)
    state: dict[str, torch.Tensor] = {}
    for f in weights:
        state.update(load_file(str(f)))
    if torch_mha is None:
        torch_mha = cfg is not None and uses_torch_mha(cfg)
    return from_transformers(state, torch_mha=torch_mha)
