"""Build every stand-in into `<out>/hf` (a Hugging Face cache) and `<out>/reference` (CLAP checkpoint).

Deterministic (same seed and depth, same tensors), atomic (each artifact is written beside its final place
and renamed when complete) and idempotent (a complete artifact with the same seed and depth is skipped).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import hub, models

CLAP_CHECKPOINT = "clap/music_audioset_epoch_15_esc_90.14.pt"


@dataclass(frozen=True)
class Artifact:
    """One hub repo (or the CLAP reference checkpoint) and how to write it."""

    name: str
    writer: Callable | None = None   # in-process writer(snap, depth, seed, texts)
    child: str | None = None         # built by `models.run_child(child, ...)` instead


#: In build order: the LM needs t5-base, the CLAP checkpoint needs roberta-base (and laion's tokenizers).
ARTIFACTS: tuple[Artifact, ...] = (
    Artifact("bert-base-uncased", models.write_bert_base_uncased_tokenizer),
    Artifact("facebook/bart-base", models.write_bart_base_tokenizer),
    Artifact("roberta-base", models.write_roberta_base),
    Artifact("t5-base", models.write_t5_base),
    Artifact("facebook/encodec_32khz", models.write_encodec_32khz),
    Artifact("facebook/musicgen-small", child="musicgen"),
    Artifact("//reference/" + CLAP_CHECKPOINT, child="clap"),
)


def environment(out: str | Path) -> dict[str, str]:
    """Variables that make every hub name and `//reference` path resolve to the stand-ins in `out`.

    Args:
        out: the folder given to `zalo-music standins --out`.
    """
    out = Path(out).resolve()
    return {
        "HF_HOME": str(out / "hf"),
        "HF_HUB_CACHE": str(out / "hf" / "hub"),   # wins over HF_HOME when the caller's environment sets it
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "ZALO_MUSIC_REFERENCE_DIR": str(out / "reference"),
        "AUDIOCRAFT_REFERENCE_DIR": str(out / "reference"),
    }


def overrides(depth: int | None) -> list[str]:
    """Hydra overrides a musicgen-small recipe needs on these stand-ins (the LM's layer count when cut)."""
    return [] if depth is None else [f"transformer_lm.num_layers={models._layers(24, depth)}"]


def _done(out: Path, art: Artifact, seed: int, depth: int | None) -> bool:
    if art.name.startswith("//reference/"):
        meta = out / "reference" / (CLAP_CHECKPOINT + ".standin.json")
        if not meta.is_file() or not (out / "reference" / CLAP_CHECKPOINT).is_file():
            return False
        facts = json.loads(meta.read_text())
    else:
        if not hub.is_complete(out / "hf", art.name):
            return False
        facts = hub.read_marker(out / "hf", art.name)
    return facts.get("seed") == seed and facts.get("depth") == depth


def build_standins(out: str | Path, depth: int | None = None, seed: int = 0,
                   log: Callable[[str], None] = print) -> dict:
    """Write every stand-in (skipping complete ones) and `<out>/standins.json`.

    Args:
        out: output folder (`<out>/hf`, `<out>/reference`).
        depth: cut transformer stacks (MusicGen LM, T5, RoBERTa) to this many layers; None: full depth.
        seed: weight seed (the same seed gives the same tensors).
        log: progress printer.
    Returns:
        The summary written to `standins.json` (artifacts, environment, overrides).
    """
    if depth is not None and depth < 1:
        raise ValueError(f"--depth {depth}: must be >= 1 (or omitted for full depth)")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = environment(out)
    texts: list[str] | None = None
    summary: dict = {"seed": seed, "depth": depth, "environment": env, "overrides": overrides(depth),
                     "artifacts": {}}
    start = time.time()
    for i, art in enumerate(ARTIFACTS, 1):
        t0 = time.time()
        prefix = f"[{i}/{len(ARTIFACTS)}] {art.name}"
        if _done(out, art, seed, depth):
            log(f"{prefix}: already built, skipped")
            summary["artifacts"][art.name] = "skipped (complete)"
            continue
        log(f"{prefix}: building ...")
        if art.child == "clap":
            ckpt = out / "reference" / CLAP_CHECKPOINT
            if ckpt.exists() and not ckpt.with_name(ckpt.name + ".standin.json").exists():
                raise FileExistsError(f"{ckpt} is not a zalo-music stand-in (the real checkpoint?): refusing to "
                                      "replace it. Give `zalo-music standins` another --out folder.")
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            facts = models.run_child("clap", ckpt, depth, seed, env)
            meta = {"seed": seed, "depth": depth, "weights": "random (zalo-music stand-in)", **facts}
            tmp = ckpt.with_name(ckpt.name + ".standin.json.tmp")
            tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
            tmp.replace(ckpt.with_name(ckpt.name + ".standin.json"))
        elif art.child == "musicgen":
            facts = {}

            def fill(snap: Path, facts=facts) -> dict:
                facts.update(models.run_child("musicgen", snap, depth, seed, env))
                return facts

            hub.write_repo(out / "hf", art.name, seed, depth, fill)
        else:
            if texts is None:
                from .vocabularies import corpus

                texts = corpus(seed=seed)
            facts = {}

            def fill(snap: Path, art=art, facts=facts, texts=texts) -> dict:
                facts.update(art.writer(snap, depth, seed, texts))
                return facts

            hub.write_repo(out / "hf", art.name, seed, depth, fill)
        summary["artifacts"][art.name] = {**facts, "seconds": round(time.time() - t0, 1)}
        log(f"{prefix}: done in {time.time() - t0:.1f}s")
    summary["seconds"] = round(time.time() - start, 1)
    tmp = out / "standins.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, sort_keys=True))
    tmp.replace(out / "standins.json")
    return summary
