"""`zalo-music export --format transformers`: an XP (or an audiocraft export folder) -> a folder that
`MusicgenForConditionalGeneration.from_pretrained`, `AutoProcessor` and `pipeline("text-to-audio")` load offline,
and its upload to the Hub.

The folder holds the LM (decoder + the text projection, `enc_to_dec_proj`, mapped by `transformers_format`), the
text encoder the XP's T5 conditioner names, the 32-kHz EnCodec its `compression_model_checkpoint` names (a
transformers `EncodecModel`, as audiocraft's `//pretrained/facebook/encodec_32khz` is), their processor, a
generation config with the XP's decoding and a model card.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .transformers_format import check_convertible, decoder_config, t5_name, to_transformers

#: The license of Meta's MusicGen weights, which every fine-tune of them inherits.
BASE_LICENSE = "cc-by-nc-4.0"


def _codec_name(export_dir: Path, cfg: DictConfig) -> tuple[str | None, list[str]]:
    """The hub name of the export's codec, which must be a transformers `EncodecModel`, or the problem."""
    pkg = torch.load(export_dir / "compression_state_dict.bin", map_location="cpu", weights_only=True)
    name = pkg.get("pretrained") if isinstance(pkg, dict) else None
    if name:
        return str(name), []
    return None, [f"its codec ({cfg.get('compression_model_checkpoint')}) is audiocraft's own EnCodec, saved "
                  "whole (transformers: a transformers EncodecModel, as "
                  "compression_model_checkpoint=//pretrained/facebook/encodec_32khz is, the real recipe's)"]


def build_model(state: dict[str, torch.Tensor], cfg: DictConfig, codec: str):
    """A `MusicgenForConditionalGeneration` holding an audiocraft LM state, its T5 and its EnCodec (eval mode).

    Args:
        state: the LM's state dict (audiocraft names).
        cfg: its XP config.
        codec: hub name (or folder) of the transformers `EncodecModel` it was trained with.
    """
    from transformers import (
        EncodecModel,
        MusicgenForCausalLM,
        MusicgenForConditionalGeneration,
        T5EncoderModel,
    )

    check_convertible(cfg)
    text = T5EncoderModel.from_pretrained(t5_name(cfg))
    audio = EncodecModel.from_pretrained(codec)
    if text.config.d_model == cfg.transformer_lm.dim:
        raise ValueError(f"transformer_lm.dim={cfg.transformer_lm.dim} equals the text encoder's width: "
                         "transformers then drops the text projection that audiocraft's LM always has")
    decoder = MusicgenForCausalLM(decoder_config(cfg))
    model = MusicgenForConditionalGeneration(text_encoder=text, audio_encoder=audio, decoder=decoder)
    missing, unexpected = model.load_state_dict(to_transformers(state), strict=False)
    missing = [k for k in missing if not k.startswith(("text_encoder.", "audio_encoder."))]
    if missing or unexpected:
        raise ValueError(f"the LM does not fill transformers' MusicGen: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
    return model.eval()


def max_length_for(seconds: float, frame_rate: float, n_q: int) -> int:
    """`max_length` whose generation decodes to `seconds` of audio: the start token, one step per frame, and
    `n_q - 1` steps more for the delay pattern to fill the last codebook. (`max_length`, not `max_new_tokens`:
    the `text-to-audio` pipeline overrides `max_new_tokens` with its own default of 256, 5 s, but honours a
    model's `max_length`.)"""
    return 1 + int(round(seconds * frame_rate)) + n_q - 1


def generation_settings(cfg: DictConfig, n_q: int, frame_rate: float) -> dict:
    """transformers `GenerationConfig` fields for the XP's scored decoding (`zalo.generate.*`; a model trained
    elsewhere, e.g. Meta's, has none: `zalo-music generate`'s defaults)."""
    from . import decoding

    gen = decoding.from_cfg(cfg) if OmegaConf.select(cfg, "zalo.generate") else decoding.GenerationConfig()
    settings = {"do_sample": True, "guidance_scale": float(gen.cfg_coef),
                "max_length": max_length_for(gen.duration, frame_rate, n_q),
                "temperature": float(gen.temperature)}
    if gen.top_p > 0:
        settings.update(top_p=float(gen.top_p), top_k=0)
    else:
        settings.update(top_k=int(gen.top_k))
    return settings


def _generation_config(settings: dict, card: int):
    """A `GenerationConfig` of its own (not derived from the model config, which `pipeline` would replace with
    its defaults, e.g. 256 new tokens: 5 s)."""
    from transformers import GenerationConfig

    return GenerationConfig(**settings, bos_token_id=card, pad_token_id=card, decoder_start_token_id=card)


def model_card(meta: dict, cfg: DictConfig, settings: dict, codec: str) -> str:
    """README.md of an export: what it is, how it was trained and scored, and its license."""
    evaluate = meta.get("evaluate") or {}
    scores = ", ".join(f"{k.upper()} {evaluate[k]:.4f}" for k in ("clap", "fad", "fas", "clas") if k in evaluate)
    overrides = meta.get("overrides") or []
    return "\n".join([
        "---",
        f"license: {BASE_LICENSE}",
        "library_name: transformers",
        "pipeline_tag: text-to-audio",
        "tags: [musicgen, zalo-music, audiocraft]",
        "---",
        "",
        f"# MusicGen fine-tune, zalo-music XP `{meta.get('sig', '?')}`",
        "",
        f"Fine-tuned with [zalo-music](https://github.com/) (audiocraft {meta.get('audiocraft', '?')} + Dora) from "
        f"`{cfg.get('continue_from') or 'random init'}` on the dataset `{_dataset(cfg)}`, "
        f"{meta.get('epochs', '?')} epochs; exported from checkpoint `{meta.get('checkpoint', '?')}` "
        f"(best state, valid ce {meta.get('best_valid_ce')}).",
        "",
        "Training overrides: " + (" ".join(f"`{o}`" for o in overrides) if overrides else "(recipe defaults)")
        + f"; solver `{cfg.get('solver')}`.",
        "",
        "Scores (Zalo AI Challenge 2023 metric, CLAS = (CLAP + FAS) / 2, from the XP's last evaluate stage): "
        + (scores or "not scored"),
        "",
        f"Text encoder `{t5_name(cfg)}`, audio codec `{codec}`. Decoding as scored (in `generation_config.json`): "
        + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".",
        "",
        "```python",
        "from transformers import pipeline",
        "music = pipeline('text-to-audio', model='<this folder or repo>')",
        "out = music('lofi piano with soft rain')  # out['audio'], out['sampling_rate']",
        "```",
        "",
        f"License: the base MusicGen weights are Meta's, under CC-BY-NC 4.0 ({BASE_LICENSE}); this fine-tune "
        "inherits it.",
        "",
    ])


def _dataset(cfg: DictConfig) -> str:
    return str(cfg.get("dset") or OmegaConf.select(cfg, "datasource.train") or "?")


def export_transformers(ref: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    """Export an XP (or an audiocraft export folder) in transformers' MusicGen format, atomically.

    Args:
        ref: signature, `//sig/<S>`, XP folder, or a folder written by `zalo-music export` (audiocraft format).
        out_dir: destination folder (refused if it holds something else, unless `force`).
        force: replace an existing folder.
    Returns:
        The folder, loadable by `MusicgenForConditionalGeneration.from_pretrained` and `AutoProcessor`.
    """
    from transformers import AutoTokenizer, EncodecFeatureExtractor, MusicgenProcessor

    from . import env
    from .export import export_xp
    from .fileio import atomic_dir

    source = Path(str(ref))
    if not (source / "state_dict.bin").is_file():  # an XP: its audiocraft export first (LoRA merged there)
        sig = str(ref)[len("//sig/"):] if str(ref).startswith("//sig/") else source.name
        source = export_xp(ref, env.dora_dir() / "exports" / sig)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not empty: pick another folder or --force")
    pkg = torch.load(source / "state_dict.bin", map_location="cpu", weights_only=True)
    cfg = OmegaConf.create(pkg["xp.cfg"])
    codec, problems = _codec_name(source, cfg)
    check_convertible(cfg, problems)
    meta_file = source / "zalo_export.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    meta.setdefault("audiocraft", pkg.get("version"))
    model = build_model(pkg["best_state"], cfg, codec)
    frame_rate = model.config.audio_encoder.frame_rate
    settings = generation_settings(cfg, int(cfg.transformer_lm.n_q), frame_rate)
    model.generation_config = _generation_config(settings, int(cfg.transformer_lm.card))
    processor = MusicgenProcessor(feature_extractor=EncodecFeatureExtractor.from_pretrained(codec),
                                  tokenizer=AutoTokenizer.from_pretrained(t5_name(cfg)))
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(meta, cfg, settings, codec), encoding="utf-8")
        (tmp / "zalo_export.json").write_text(json.dumps({**meta, "format": "transformers"}, indent=2) + "\n")
    return out


def push_to_hub(folder: Path, repo: str, private: bool = True) -> str:
    """Upload an export folder to the Hugging Face Hub (token from `HF_TOKEN` or `huggingface-cli login`).

    Returns:
        The repo's URL.
    Raises:
        ValueError: the Hub cannot be reached (offline, `HF_HUB_OFFLINE=1`) or refused the upload, with what to do.
    """
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        url = api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message="zalo-music export")
    except Exception as exc:  # noqa: BLE001 - offline mode, network, auth: all end the same way for the user
        raise ValueError(f"--push-to-hub {repo}: the Hub refused or cannot be reached ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); the export is complete in "
                         f"{folder}: upload it later with `huggingface-cli upload {repo} {folder}` (log in first, "
                         "or set HF_TOKEN; unset HF_HUB_OFFLINE)") from exc
    return str(url)
