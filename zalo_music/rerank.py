"""Best-of-N reranking for `generate --candidates N`: score each candidate clip as the judge would, keep the best.

The judge is `zalo-music score`: it decodes the *written MP3* (libsndfile), resamples it to 48 kHz and embeds the
first 10 s with LAION-CLAP (`zalo_music.metrics.audio.load_clip_window`, `ClapEmbedder`). MP3 encoding changes
the waveform, hence the CLAP score, so candidates are scored the same way: each candidate is encoded to its own
MP3 (a temporary file beside the output), read back by the judge's code, and the chosen candidate's file is the
one committed (copied byte for byte onto the output name). The CLAP recorded for the chosen candidate is
therefore what `score` computes for the submitted file: up to float noise from different CLAP batch sizes in
float32, within ~1e-3 with the bfloat16 audio tower (`RerankOptions.dtype`, the default on a GPU).

Objective (`Reranker.choose`): by default the candidate with the highest CLAP cosine against its description.
With a FAS weight w > 0 and a reference set, the objective is `clap - w * d`, where `d` is the squared distance
of the candidate's CLAP audio embedding from the reference mean. What that optimises: FAD = |mu_g - mu_r|^2 +
tr(...); preferring candidates near mu_r pulls the generated mean towards the reference mean (the first term),
at the price of some CLAP. It does not control the covariance term, and a large w shrinks the generated
spread, which can *raise* that term: measure CLAS with and without it (the evaluate stage does, per XP).

Report: `<out>/candidates.json`, rewritten atomically after each batch under a lock shared with the other runs
on the same folder, holds every id's candidates' CLAP, the chosen index and the run's settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import typing as tp
from pathlib import Path

import numpy as np

from .fileio import write_json

#: The per-run report written next to the clips.
REPORT_NAME = "candidates.json"
REPORT_VERSION = 1


def candidate_path(target: Path, index: int) -> Path:
    """Where candidate `index` of an output clip is written before the choice.

    The name matches `generate.remove_stale_temps`'s pattern (`.<id>.*.tmp<suffix>`), so candidates left by a
    killed run are removed by the next one.

    Args:
        target: the output clip.
        index: candidate number (0-based).
    """
    return target.parent / f".{target.name}.cand{index}.tmp{target.suffix}"


@dataclasses.dataclass
class Reranker:
    """Scores candidates with the judge's CLAP and picks one per description.

    Args:
        embedder: the CLAP model `score` uses (`metrics.clap.get_embedder(spec)`).
        fas_weight: w in `clap - w * |e - mu_ref|^2` (0: CLAP only).
        reference_mean: `[D]` mean CLAP audio embedding of the FAD reference (needed when `fas_weight` > 0).
        dtype: the audio tower's precision ("float32" as `score`, or "bfloat16": `RerankOptions.dtype`).
    """

    embedder: tp.Any
    fas_weight: float = 0.0
    reference_mean: np.ndarray | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.fas_weight < 0:
            raise ValueError(f"--fas-weight {self.fas_weight}: must be >= 0")
        if self.fas_weight > 0 and self.reference_mean is None:
            raise ValueError("--fas-weight > 0 needs a reference set (--rerank-reference / zalo.eval.reference)")

    def choose(self, texts: list[str], files: list[list[Path]]) -> list[dict]:
        """One record per description: every candidate's CLAP (and distance), and the chosen index.

        Args:
            texts: the descriptions as the judge reads them (the JSON's text).
            files: per description, its candidates' MP3 files.
        Returns:
            `[{"clap": [...], "chosen": i, "clap_chosen": c[, "distance": [...], "objective": [...]]}]`.
        Raises:
            OSError: a candidate MP3 cannot be decoded (it was verified when written: the disk changed under us).
        """
        from .metrics.clap import clap_cosines
        from .metrics.evaluator import embed_files

        flat = [f for group in files for f in group]
        emb, _, failed = embed_files(self.embedder, flat, progress=False, dtype=self.dtype)
        if failed:
            i, reason = next(iter(failed.items()))
            raise OSError(f"candidate {flat[i]} cannot be read back for CLAP: {reason}")
        text_emb = self.embedder.embed_text(texts)
        sizes = [len(g) for g in files]
        cos = clap_cosines(np.repeat(text_emb, sizes, axis=0), emb)
        records, start = [], 0
        for n in sizes:
            c = cos[start:start + n]
            rec: dict = {"clap": [round(float(x), 6) for x in c]}
            objective = c
            if self.fas_weight > 0:
                d = ((emb[start:start + n] - self.reference_mean) ** 2).sum(axis=-1)
                objective = c - self.fas_weight * d
                rec["distance"] = [round(float(x), 6) for x in d]
                rec["objective"] = [round(float(x), 6) for x in objective]
            best = int(np.argmax(objective))  # ties: the lowest index, so the choice is deterministic
            rec.update(chosen=best, clap_chosen=rec["clap"][best])
            records.append(rec)
            start += n
        return records


def read_report(out_dir: Path) -> dict | None:
    """The folder's best-of-N report, or None when there is none (or it is unreadable: then it is rebuilt).

    Args:
        out_dir: the generate output folder.
    """
    path = Path(out_dir) / REPORT_NAME
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and isinstance(report.get("items"), dict) else None


def check_settings(out_dir: Path, settings: dict) -> None:
    """Refuse to mix clips chosen under other settings into one folder.

    Args:
        out_dir: the generate output folder.
        settings: this run's settings (as recorded in the report).
    Raises:
        ValueError: naming the settings that differ.
    """
    report = read_report(out_dir)
    if report is None or report.get("settings") == settings:
        return
    old = report.get("settings") or {}
    diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
    raise ValueError(f"--out {out_dir}: its {REPORT_NAME} was written with other best-of-N settings "
                     f"({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in diff.items())}); use a new "
                     f"--out, or delete {Path(out_dir) / REPORT_NAME} and the clips it lists")


def summarise(items: dict) -> dict:
    """Mean CLAP of the chosen candidates, of candidate 0 (what N=1 would keep) and of all candidates.

    Args:
        items: the report's per-id records.
    """
    recs = list(items.values())
    if not recs:
        return {"n": 0}
    chosen = [r["clap_chosen"] for r in recs]
    first = [r["clap"][0] for r in recs]
    every = [c for r in recs for c in r["clap"]]
    return {"n": len(recs), "mean_clap_chosen": float(np.mean(chosen)), "mean_clap_first": float(np.mean(first)),
            "mean_clap_all": float(np.mean(every)),
            "chosen_histogram": np.bincount([r["chosen"] for r in recs]).tolist()}


def update_report(out_dir: Path, settings: dict, records: dict, lock: tp.ContextManager | None = None) -> dict:
    """Merge `records` into the folder's report and rewrite it atomically.

    Args:
        out_dir: the generate output folder.
        settings: this run's settings.
        records: `{id: record}` of the batch just written.
        lock: held while reading and writing (other runs on the folder update the same file).
    Returns:
        The report as written.
    """
    with lock if lock is not None else contextlib.nullcontext():
        report = read_report(out_dir) or {"version": REPORT_VERSION, "settings": settings, "items": {}}
        report["items"].update(records)
        report["items"] = dict(sorted(report["items"].items()))
        report["summary"] = summarise(report["items"])
        write_json(Path(out_dir) / REPORT_NAME, report)
    return report


@dataclasses.dataclass(frozen=True)
class RerankOptions:
    """How `generate --candidates N` (N > 1) scores its candidates.

    Args:
        clap: the CLAP model; keep it the judge's (`score --clap-checkpoint/--clap-model`) so that the chosen
            clip's recorded CLAP is what `score` gives.
        fas_weight: w of the FAS-aware objective `clap - w * |e - mu_ref|^2` (0: CLAP only).
        reference: FAD reference (manifest folder/file or audio folder) whose mean embedding the FAS-aware
            objective uses; only read when `fas_weight` > 0.
        stats_cache: reference statistics cache folder (None: none).
        dtype: the audio tower's precision for the candidates: "float32" (the judge's), "bfloat16", or "auto"
            (bfloat16 where CLAP runs on a GPU, float32 on a CPU). bfloat16's embeddings are within ~1e-4
            cosine of float32's (docs/BENCHMARKS.md), far below the CLAP gaps between candidates that decide.
    """

    clap: tp.Any = None
    fas_weight: float = 0.0
    reference: str | None = None
    stats_cache: str | None = None
    dtype: str = "auto"

    def spec(self) -> tp.Any:
        """The `ClapSpec` (the judge's default when none was given)."""
        from .metrics.clap import ClapSpec

        return self.clap if self.clap is not None else ClapSpec()

    def resolved_dtype(self) -> str:
        """The audio tower's precision, "auto" resolved for the device CLAP will run on."""
        from .metrics.clap import AUDIO_DTYPES

        if self.dtype != "auto":
            if self.dtype not in AUDIO_DTYPES:
                raise ValueError(f"--clap-dtype {self.dtype}: one of auto, {', '.join(AUDIO_DTYPES)}")
            return self.dtype
        import torch

        device = self.spec().device or ("cuda" if torch.cuda.is_available() else "cpu")
        return "bfloat16" if torch.device(device).type == "cuda" else "float32"

    def settings(self) -> dict:
        """What the report records and compares on a resumed run (the checkpoint as a resolved path)."""
        from .metrics.clap import resolve_checkpoint

        spec = self.spec()
        try:
            ckpt = str(resolve_checkpoint(dataclasses.replace(spec, download=False)))
        except Exception:  # noqa: BLE001 - missing: the real error comes when the model is loaded
            ckpt = str(spec.checkpoint)
        return {"clap_checkpoint": ckpt, "clap_model": spec.amodel, "clap_dtype": self.resolved_dtype(),
                "fas_weight": self.fas_weight,
                "rerank_reference": self.reference if self.fas_weight > 0 else None}

    def build(self) -> Reranker:
        """Load CLAP (and, for the FAS-aware objective, the reference statistics).

        Raises:
            MetricUnavailableError: CLAP cannot be loaded (the message names the checkpoint).
        """
        from .metrics.clap import get_embedder

        embedder = get_embedder(self.spec())
        mean = None
        if self.fas_weight > 0:
            if not self.reference:
                raise ValueError("--fas-weight > 0 needs --rerank-reference (the FAD reference set)")
            from .metrics.evaluator import embed_files
            from .metrics.reference import reference_stats

            def embed(files):
                emb, _, failed = embed_files(embedder, files, desc="CLAP: reference clips")
                return emb, failed

            stats, _, _ = reference_stats(self.reference, embed, embedder.identity, self.stats_cache)
            mean = stats.mu
        return Reranker(embedder, self.fas_weight, mean, self.resolved_dtype())
