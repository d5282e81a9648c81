"""LoRA fine-tuning of the MusicGen LM inside audiocraft's solver (`zalo.lora.*`), built on PEFT.

With `zalo.lora.rank > 0` the LM built by audiocraft gets PEFT LoRA adapters on the linears named by
`zalo.lora.targets`; every other weight is frozen and only the adapters are in the optimizer. The same
training loop, checkpointing, evaluation and generation as full fine-tuning run unchanged: the adapters live
inside the LM module.

Checkpoints hold the adapters only. The LM's `state_dict()` returns the `lora_` tensors, and `load_state_dict`
accepts an adapter-only state (an XP checkpoint) as well as a plain full LM state (audiocraft's
`continue_from=//pretrained/...` path, whose keys are mapped onto PEFT's `base_layer` names). Because a
checkpoint has no base weights, they are loaded from `continue_from` every time the solver is built, so a
resumed XP has its base back before its adapters are restored.

Targets: audiocraft's attention output projections (`out_proj`, self and cross attention) and feed-forward
linears (`linear1`, `linear2`) are `nn.Linear` modules called as modules, which PEFT wraps cleanly. The
attention in-projection is not offered: audiocraft's attention keeps it as a bare `in_proj_weight` parameter
sliced into q/k/v inside `forward`, and PEFT's parameter targeting wraps the whole attention module around the
other adapters, whose merge then leaves the inner ones unmerged.

`export_lora_lm` writes the merged LM (base + scale * B @ A) in audiocraft's export format, so
`MusicGen.get_pretrained(folder)` and `zalo-music generate` need nothing LoRA-specific.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as tp
from pathlib import Path

import omegaconf
import torch

logger = logging.getLogger(__name__)

#: Linear modules of audiocraft's transformer that take adapters by default.
DEFAULT_TARGETS = ("out_proj", "linear1", "linear2")
_ADAPTER = "default"


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """The `zalo.lora` block.

    Args:
        rank: adapter rank r (0: LoRA off, full fine-tuning).
        alpha: scaling numerator: the update is (alpha / r) * B @ A.
        dropout: dropout on the adapters' input during training.
        targets: names of the `nn.Linear` modules that get adapters (matched on the last name component).
    """

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS

    @classmethod
    def from_cfg(cls, cfg: omegaconf.DictConfig) -> LoraSettings | None:
        """Settings from an XP config, or None when LoRA is off (rank 0).

        Args:
            cfg: the composed XP config.
        """
        block = cfg.zalo.lora
        if not int(block.rank):
            return None
        settings = cls(rank=int(block.rank), alpha=float(block.alpha), dropout=float(block.dropout),
                       targets=tuple(str(t) for t in block.targets))
        if settings.rank < 0 or settings.alpha <= 0 or not 0 <= settings.dropout < 1 or not settings.targets:
            raise ValueError(f"zalo.lora: rank must be >= 0, alpha > 0, 0 <= dropout < 1 and targets non-empty "
                             f"(got {settings})")
        if "in_proj_weight" in settings.targets or "in_proj" in settings.targets:
            raise ValueError("zalo.lora.targets: the attention in-projection cannot take adapters (audiocraft keeps "
                             f"it as a bare parameter); choose among {list(DEFAULT_TARGETS)}")
        return settings


def _is_adapter_key(key: str) -> bool:
    return ".lora_" in key or key.startswith("lora_")


def attach_lora(lm: torch.nn.Module, settings: LoraSettings) -> tp.Any:
    """Add LoRA adapters to `lm` in place, freeze everything else, and make its state dict adapter-aware.

    Args:
        lm: an audiocraft `LMModel` (its base weights already loaded, or loaded later through
            `load_state_dict` with plain keys).
        settings: rank, alpha, dropout, targets.
    Returns:
        The `peft.LoraModel` tuner (`merge_lora(tuner)` gives the merged LM).
    Raises:
        ValueError: a target matches no `nn.Linear`, or the attention is `nn.MultiheadAttention` (audiocraft's
            non-custom path reads its weights directly, so adapters there would be silently ignored).
    """
    import peft

    names = [n for n, m in lm.named_modules() if n.rsplit(".", 1)[-1] in settings.targets]
    if not names:
        raise ValueError(f"zalo.lora.targets={list(settings.targets)} match no module of the LM")
    if any(isinstance(m, torch.nn.MultiheadAttention) for m in lm.modules()) and "out_proj" in settings.targets:
        raise ValueError("zalo.lora: this LM uses torch's nn.MultiheadAttention (transformer_lm.custom=false and "
                         "memory_efficient=false), which reads out_proj's weight directly, so an adapter there "
                         "would never run. Set transformer_lm.custom=true (audiocraft's own attention, as every "
                         "released MusicGen uses; its weights are named without `.mha`, so a continue_from base "
                         "must have been trained with it too), or drop out_proj from zalo.lora.targets.")
    config = peft.LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                             target_modules=list(settings.targets))
    tuner = peft.LoraModel(lm, config, _ADAPTER)  # freezes every non-adapter parameter
    _install_state_hooks(lm)
    return tuner


def _install_state_hooks(lm: torch.nn.Module) -> None:
    # PEFT renames a wrapped linear's weight `x.linear1.weight` -> `x.linear1.base_layer.weight`.
    plain_to_peft = {k.replace(".base_layer", ""): k for k in lm.state_dict(keep_vars=True) if ".base_layer" in k}
    incoming: dict[str, bool] = {}

    def drop_base(module, state_dict, prefix, local_metadata):
        for key in [k for k in state_dict if k.startswith(prefix) and not _is_adapter_key(k)]:
            del state_dict[key]

    def map_keys(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        for key in list(state_dict):
            rel = key[len(prefix):]
            if rel in plain_to_peft:
                state_dict[prefix + plain_to_peft[rel]] = state_dict.pop(key)
        keys = [k for k in state_dict if k.startswith(prefix)]
        incoming["adapters"] = any(_is_adapter_key(k) for k in keys)
        incoming["base"] = any(not _is_adapter_key(k) for k in keys)

    def allow_partial(module, incompatible):
        # An XP checkpoint holds adapters only (the base comes from continue_from); a pretrained LM holds the
        # base only (the adapters keep their initialisation). A state with both must match exactly.
        if incoming.get("adapters") and not incoming.get("base"):
            incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if _is_adapter_key(k)]
        elif incoming.get("base") and not incoming.get("adapters"):
            incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if not _is_adapter_key(k)]

    lm._zalo_lora_hooks = [lm.register_state_dict_post_hook(drop_base),  # type: ignore[assignment]
                           lm.register_load_state_dict_pre_hook(map_keys),
                           lm.register_load_state_dict_post_hook(allow_partial)]


def merge_lora(tuner: tp.Any) -> torch.nn.Module:
    """Fold the adapters into the base weights (W + alpha/r * B @ A) and return the plain LM.

    Args:
        tuner: what `attach_lora` returned.
    Returns:
        The LM, with audiocraft's own module structure and state dict names again.
    """
    lm = tuner.merge_and_unload()
    for handle in getattr(lm, "_zalo_lora_hooks", []):
        handle.remove()
    lm._zalo_lora_hooks = []
    return lm


def load_base_weights(lm: torch.nn.Module, continue_from: str | None) -> str:
    """Load the full LM weights that LoRA adapts, from `continue_from`.

    Args:
        lm: the LM, before adapters are attached.
        continue_from: `//pretrained/<hub name or folder>`, `//sig/<SIG>` or a checkpoint path.
    Returns:
        Where the weights came from (for the log).
    Raises:
        ValueError: no `continue_from`, or it points at another LoRA XP (adapters only, no base).
    """
    if not continue_from:
        raise ValueError("zalo.lora needs pretrained LM weights to adapt: set continue_from "
                         "(e.g. //pretrained/facebook/musicgen-small, or //sig/<SIG> of a full fine-tune)")
    prefix = "//pretrained/"
    if continue_from.startswith(prefix):
        from zalo_music.transformers_format import pretrained_lm_state

        torch_mha = any(".mha." in k for k in lm.state_dict())  # how this LM names its attention weights
        state = pretrained_lm_state(continue_from[len(prefix):], torch_mha=torch_mha)
    else:
        from audiocraft.utils import checkpoint

        path = checkpoint.resolve_checkpoint_path(continue_from, use_fsdp=False)
        if path is None:
            raise ValueError(f"zalo.lora: cannot resolve continue_from={continue_from}")
        state = checkpoint.load_checkpoint(path)["best_state"]["model"]
    if state and all(_is_adapter_key(k) for k in state):
        raise ValueError(f"zalo.lora: continue_from={continue_from} is a LoRA XP (its checkpoint holds adapters "
                         "only). Export it (`zalo-music export`) and continue from the export folder with "
                         "//pretrained/<folder>, or continue from a full fine-tune.")
    lm.load_state_dict(state)
    return continue_from


def adapter_parameters(lm: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable parameters of a LoRA LM (its adapters)."""
    return [p for p in lm.parameters() if p.requires_grad]


class LoraMixin:
    """Mixed into `ZaloMusicGenSolver` right before audiocraft's `MusicGenSolver`: LoRA when `zalo.lora.rank > 0`.

    It runs after audiocraft's `build_model` built the LM: it loads the base weights and attaches the adapters,
    freezing every other weight; `ZaloMusicGenSolver.build_optimizer` then builds the optimizer over what trains.
    """

    cfg: tp.Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: tp.Any

    def build_model(self) -> None:
        settings = LoraSettings.from_cfg(self.cfg)
        if settings is not None:
            if self.cfg.zalo.tune_text:
                raise ValueError("zalo.lora and zalo.tune_text both choose what trains: use one of them")
            if self.cfg.fsdp.use or self.cfg.optim.ema.use:
                raise ValueError("zalo.lora does not support fsdp.use or optim.ema.use (both track the full "
                                 "weights): set them to false")
        super().build_model()  # type: ignore[misc]
        self.lora = None
        if settings is None:
            return
        source = load_base_weights(self.model, self.cfg.continue_from)
        self.lora = attach_lora(self.model, settings)
        params = adapter_parameters(self.model)
        total = sum(p.numel() for p in self.model.parameters())
        logger.info("LoRA r=%d alpha=%g on %s: %d trainable of %d parameters (%.2f%%), base from %s",
                    settings.rank, settings.alpha, ",".join(settings.targets), sum(p.numel() for p in params),
                    total, 100 * sum(p.numel() for p in params) / max(total, 1), source)
        # audiocraft registered the best state with the full weights' names; from now on it holds adapters.
        self.best_state.update("model", self.stateful.sources["model"])  # type: ignore[attr-defined]
        # (the optimizer over the adapters is built once, after every mixin: ZaloMusicGenSolver.build_optimizer)

    def load_state_dict(self, state: dict) -> None:
        best = state.get("best_state", {}).get("model") if self.lora is not None else None
        if best and any(not _is_adapter_key(k) for k in best):
            # audiocraft hands over continue_from's full LM as the best state to start from: build_model already
            # loaded it as the base, and the adapters start from their initialisation.
            state = {**state, "best_state": {k: v for k, v in state["best_state"].items() if k != "model"}}
        super().load_state_dict(state)  # type: ignore[misc]


def merged_lm_state(pkg: dict) -> dict:
    """The merged LM weights of a LoRA XP checkpoint (base from its `continue_from` + its best adapters).

    Args:
        pkg: the loaded XP checkpoint (`xp.cfg`, `best_state`).
    Returns:
        A plain LM state dict, as a full fine-tune would have.
    """
    from audiocraft.models import builders

    cfg = pkg["xp.cfg"]
    cfg = cfg if isinstance(cfg, omegaconf.DictConfig) else omegaconf.OmegaConf.create(cfg)
    settings = LoraSettings.from_cfg(cfg)
    if settings is None:
        raise ValueError("not a LoRA XP checkpoint (zalo.lora.rank is 0)")
    with omegaconf.open_dict(cfg):
        cfg.device = "cpu"
    lm = builders.get_lm_model(cfg)
    load_base_weights(lm, cfg.continue_from)
    tuner = attach_lora(lm, settings)
    lm.load_state_dict(pkg["best_state"]["model"])
    merged = merge_lora(tuner)
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def is_lora_checkpoint(pkg: dict) -> bool:
    """Whether an XP checkpoint was trained with LoRA (its config has `zalo.lora.rank > 0`).

    Args:
        pkg: the loaded XP checkpoint.
    """
    cfg = pkg.get("xp.cfg")
    if cfg is None:
        return False
    cfg = cfg if isinstance(cfg, omegaconf.DictConfig) else omegaconf.OmegaConf.create(cfg)
    return LoraSettings.from_cfg(cfg) is not None


def save_adapters(pkg: dict, out_file: str | Path) -> Path:
    """Write a LoRA XP's best adapters alone (a few MB) with the settings and base they apply to.

    Args:
        pkg: the loaded XP checkpoint.
        out_file: destination (`.pt`).
    """
    cfg = pkg["xp.cfg"]
    cfg = cfg if isinstance(cfg, omegaconf.DictConfig) else omegaconf.OmegaConf.create(cfg)
    settings = LoraSettings.from_cfg(cfg)
    if settings is None:
        raise ValueError("not a LoRA XP checkpoint (zalo.lora.rank is 0)")
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"adapters": pkg["best_state"]["model"], "lora": dataclasses.asdict(settings),
                "base": str(cfg.continue_from)}, out)
    return out
