"""Decoding options, declared once: `GenerationConfig`, each field with its default, help and valid range.

Every way in derives from these fields, so a new option is one field here (plus its key in the recipe YAML):

- `zalo-music generate`'s flags (`add_arguments`): name, type, bounds, help and default;
- an XP's `zalo.generate.*` block and `zalo.eval.candidates` (`from_cfg`), checked against the same bounds;
- `generate --from-xp` (`XP_OPTIONS`: the options an XP supplies, and their command-line defaults);
- the web demo's controls and its HTTP API check (`check`);
- tests/test_config.py fails when the recipe YAML and these defaults disagree.

Torch-free: the command line imports it before any heavy module.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing as tp
from dataclasses import dataclass, field

#: The token decoding loops `--decoder` accepts: ours (zalo_music/fast_decoder.py, default), audiocraft's own
#: `MusicGen` loop, and ours with a static-shape step replayed from CUDA graphs on a GPU
#: (zalo_music/graph_decoder.py; on a CPU the same codes as `fast`).
DECODERS = ("fast", "audiocraft", "graph")
#: How `generate` groups descriptions into batches (`batches.make_batches`): by the text encoder's length (a
#: batch pads its descriptions to its longest one) or consecutive sorted ids.
BATCH_ORDERS = ("length", "id")


#: The value of `--batch-size` that asks `generate` to pick the size from the device's memory (`batch_size.py`).
AUTO = "auto"


def _option(default: tp.Any, help: str, low: float | None = None, high: float | None = None,
            low_open: bool = False, choices: tuple | None = None, from_xp: bool = True,
            auto: bool = False) -> tp.Any:
    """A `GenerationConfig` field: its default, its help and its valid values.

    Args:
        default: the value (its type is the option's type).
        help: one line for `--help` and the docs.
        low, high: inclusive bounds (None: unbounded); `low_open` makes `low` exclusive.
        choices: the allowed values, for a text option.
        from_xp: whether `generate --from-xp` takes it from the XP (False: the user's choice even then).
        auto: whether `AUTO` is also a value (resolved by the run).
    """
    return field(default=default, metadata={"help": help, "low": low, "high": high, "low_open": low_open,
                                            "choices": choices, "from_xp": from_xp, "auto": auto})


@dataclass(frozen=True)
class GenerationConfig:
    """How clips are decoded and written (defaults: MusicGen's own sampling, the Zalo submission's format)."""

    duration: float = _option(10.0, "seconds per clip", low=0, low_open=True)
    sample_rate: int = _option(32000, "output sample rate (resampled explicitly)", low=1)
    top_k: int = _option(250, "top-k sampling (0: off)", low=0)
    top_p: float = _option(0.0, "nucleus sampling (0: use top-k)", low=0, high=1)
    temperature: float = _option(1.0, "softmax temperature", low=0, low_open=True)
    cfg_coef: float = _option(3.0, "classifier-free guidance coefficient", low=0)
    seed: int = _option(0, "same seed, batch size and batch order: same audio")
    batch_size: int | str = _option(16, "descriptions per forward pass, or auto: the most that fit in the GPU's free "
                                        "memory (a power of two up to 256; 16 on a CPU)", low=1, auto=True)
    batch_order: str = _option("length", "how descriptions are grouped into batches: length (similar T5 lengths "
                                         "together, so a batch pads little) or id (consecutive sorted ids)",
                               choices=BATCH_ORDERS)
    #: Best-of-N: samples drawn per description (in the same batched LM pass); the one whose written MP3 has
    #: the highest CLAP against its description is kept. 1: no CLAP at all.
    candidates: int = _option(1, "best-of-N: N samples per description in one batched pass, the one with the "
                                 "highest CLAP (as `score` computes it on the MP3) kept; report in "
                                 "<out>/candidates.json. 1: no CLAP", low=1)
    #: The token decoding loop: both draw the same codes for the same seed (tests/test_fast_decoder.py).
    decoder: str = _option("fast", "token decoding loop: fast (cached text keys/values, static KV cache; the same "
                                   "codes as audiocraft's for the same seed), audiocraft (its own MusicGen loop) or "
                                   "graph (fast's step with static shapes, replayed from CUDA graphs on a GPU)",
                           choices=DECODERS, from_xp=False)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, check(f.name, getattr(self, f.name)))

    def sampling_params(self) -> dict[str, tp.Any]:
        """The keyword arguments of audiocraft's `MusicGen.set_generation_params` for these options."""
        return {"use_sampling": True, "top_k": self.top_k, "top_p": self.top_p, "temperature": self.temperature,
                "duration": self.duration, "cfg_coef": self.cfg_coef}


FIELDS = {f.name: f for f in dataclasses.fields(GenerationConfig)}
#: The `generate` options `--from-xp` supplies -> their command-line defaults.
XP_OPTIONS = {name: f.default for name, f in FIELDS.items() if f.metadata["from_xp"]}


def check(name: str, value: tp.Any) -> tp.Any:
    """`value` coerced to option `name`'s type and checked against its range.

    Raises:
        ValueError: naming the option, the value and the range.
    """
    f = FIELDS[name]
    kind, meta = type(f.default), f.metadata
    if meta["auto"] and value == AUTO:
        return AUTO
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        coerced = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: not a valid {kind.__name__}") from None
    if isinstance(coerced, float) and not math.isfinite(coerced):
        raise ValueError(f"{name}={value!r}: not a finite number")
    if meta["choices"] is not None and coerced not in meta["choices"]:
        raise ValueError(f"{name}={value!r}: choose from {', '.join(meta['choices'])}")
    low, high = meta["low"], meta["high"]
    if (low is not None and (coerced <= low if meta["low_open"] else coerced < low)) or (
            high is not None and coerced > high):
        raise ValueError(f"{name}={value!r}: out of range: must be {bounds(name)}")
    return coerced


def bounds(name: str) -> str:
    """Option `name`'s valid range in words (`> 0`, `>= 0 and <= 1`)."""
    meta = FIELDS[name].metadata
    parts = []
    if meta["low"] is not None:
        parts.append(f"{'>' if meta['low_open'] else '>='} {meta['low']:g}")
    if meta["high"] is not None:
        parts.append(f"<= {meta['high']:g}")
    return " and ".join(parts) or "any value"


def _parser_type(name: str) -> tp.Callable[[str], tp.Any]:
    def parse(text: str) -> tp.Any:
        try:
            return check(name, text)
        except ValueError as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise argparse.ArgumentTypeError(f"{text} is {reason}" if reason.startswith("out of range") else
                                             f"{text!r}: {reason}") from None

    parse.__name__ = type(FIELDS[name].default).__name__
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one `--<name>` flag per option (`zalo-music generate`), with its type, range, default and help."""
    for name, f in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        if f.metadata["choices"] is not None:
            parser.add_argument(flag, choices=f.metadata["choices"], default=f.default, help=f.metadata["help"])
        else:
            parser.add_argument(flag, type=_parser_type(name), default=f.default, help=f.metadata["help"])


def from_args(args: tp.Any) -> GenerationConfig:
    """The options of a parsed `zalo-music generate` command line (those it has; the rest default)."""
    return GenerationConfig(**{name: getattr(args, name) for name in FIELDS if hasattr(args, name)})


def from_cfg(cfg: tp.Any) -> GenerationConfig:
    """The decoding an XP was scored with: its `zalo.generate.*` keys and `zalo.eval.candidates`.

    The evaluate stage (`zalo.eval.candidates`) and `zalo-music generate --from-xp` both read it here, so the
    submission is generated with exactly the settings the XP was ranked by. A key left null takes the default.

    Args:
        cfg: a composed XP config.
    Raises:
        ValueError: an unknown key or a value out of range, named as `zalo.generate.<key>`.
    """
    block = dict(cfg.zalo.generate)
    known = set(FIELDS) - {"candidates"}
    unknown = sorted(set(block) - known)
    if unknown:
        raise ValueError(f"zalo.generate.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    values = {k: v for k, v in block.items() if v is not None}
    if cfg.zalo.eval.candidates is not None:
        values["candidates"] = cfg.zalo.eval.candidates
    try:
        return GenerationConfig(**values)
    except ValueError as exc:
        key = str(exc).split("=", 1)[0]
        where = "zalo.eval." if key == "candidates" else "zalo.generate."
        raise ValueError(f"{where}{exc}") from None
