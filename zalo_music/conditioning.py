"""Does a trained LM use its text? The conditional-likelihood gap on held-out clips.

For each held-out clip, the LM's mean per-token cross-entropy (audiocraft's training loss: the mean over
codebooks of the mean over valid positions) is measured on the clip's own codes under three descriptions:

- matched: the clip's own description;
- shuffled: the description of another clip, by a fixed derangement (no clip keeps its own);
- null: no description, the condition classifier-free guidance trains the LM to model unconditionally.

A model that reads its text assigns its clips a lower loss under their own descriptions: `shuffled - matched`
is positive, with a bootstrap interval over clips that excludes zero. An untrained model, or one trained on
descriptions paired with the wrong clips, shows no such gap. `null - matched` says how much the text helps
over no text at all.
"""

from __future__ import annotations

import argparse
import sys
import typing as tp
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

if tp.TYPE_CHECKING:  # torch is imported where it is used: `zalo-music --help` imports this module
    import torch

#: Bootstrap resamples for the gap's interval, and its level.
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
CONDITIONS = ("matched", "shuffled", "null")


@dataclass
class Gap:
    """Mean of per-clip differences `ce[condition] - ce[matched]` and its bootstrap interval."""

    mean: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        """Whether the interval lies strictly above zero (the text lowers the loss)."""
        return self.low > 0


@dataclass
class ConditioningReport:
    """What `measure` found: per-condition mean cross-entropy (nats/token) and the two gaps."""

    clips: int
    ce: dict[str, float]
    shuffled_gap: Gap
    null_gap: Gap
    source: str = ""

    @property
    def uses_text(self) -> bool:
        """matched < shuffled with the interval excluding zero: the LM reads its descriptions."""
        return self.shuffled_gap.excludes_zero()

    def summary(self) -> str:
        """One line: the verdict, the three losses and the gaps with their intervals."""
        g, n = self.shuffled_gap, self.null_gap
        verdict = "uses its text" if self.uses_text else "does NOT use its text"
        level = int(CONFIDENCE * 100)
        return (f"{verdict}: {self.clips} clips, ce matched {self.ce['matched']:.4f} / shuffled "
                f"{self.ce['shuffled']:.4f} / null {self.ce['null']:.4f} nats/token; gap shuffled-matched "
                f"{g.mean:+.4f} [{level}% {g.low:+.4f}, {g.high:+.4f}], null-matched {n.mean:+.4f} "
                f"[{n.low:+.4f}, {n.high:+.4f}]")

    def to_dict(self) -> dict:
        """JSON-ready form (verdict included)."""
        return {**asdict(self), "uses_text": self.uses_text}


def derangement(n: int, seed: int = 0) -> list[int]:
    """A random permutation of range(n) with no fixed point (Sattolo's algorithm: one cycle of length n).

    Args:
        n: number of clips (>= 2).
        seed: the permutation depends on nothing else.
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 clips, got {n}")
    rng = np.random.default_rng(seed)
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))  # j < i: Sattolo, never the identity on any element
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def bootstrap_gap(diffs: np.ndarray, seed: int = 0) -> Gap:
    """Mean of `diffs` (one per clip) with its percentile bootstrap interval over clips.

    Args:
        diffs: per-clip loss differences.
        seed: resampling seed.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diffs), size=(BOOTSTRAP_RESAMPLES, len(diffs)))
    means = diffs[idx].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Gap(float(diffs.mean()), float(low), float(high))


def clip_cross_entropy(lm: torch.nn.Module, codes: torch.Tensor, attributes: list) -> torch.Tensor:
    """Per-row mean cross-entropy of `codes` under `attributes`, as audiocraft's MusicGen solver averages it.

    Args:
        lm: audiocraft's `LMModel` (eval mode: no condition dropout).
        codes: [B, K, T] codec tokens.
        attributes: B `ConditioningAttributes`.
    Returns:
        [B] nats per token: mean over codebooks of the mean over the pattern's valid positions.
    """
    import torch

    with torch.no_grad():
        out = lm.compute_predictions(codes, attributes)
    logits, mask = out.logits.float(), out.mask
    ce = torch.nn.functional.cross_entropy(logits.permute(0, 3, 1, 2), codes.long(), reduction="none")
    # Invalid positions of the delay pattern hold NaN logits: select, never multiply by the mask.
    per_codebook = torch.where(mask, ce, 0.0).sum(-1) / mask.sum(-1).clamp(min=1)  # [B, K]
    return per_codebook.mean(-1)


def measure(lm: torch.nn.Module, codes: list[torch.Tensor], conditions: list, *, seed: int = 0,
            source: str = "") -> ConditioningReport:
    """The three losses of every clip and the gaps, for an LM and held-out clips.

    Each clip and condition is its own forward pass: audiocraft's cross-attention has no key mask, so in a
    batch a row's loss would depend on how far the other rows' descriptions pad it.

    Args:
        lm: audiocraft's `LMModel`.
        codes: one [K, T] tensor per clip (its codec tokens), on the LM's device.
        conditions: each clip's own `ConditioningAttributes` (as training builds them:
            `MusicInfo.to_condition_attributes()`), or its description.
        seed: seed of the derangement and the bootstrap.
        source: what was measured (for the report).
    """
    import copy

    from audiocraft.modules.conditioners import ClassifierFreeGuidanceDropout, ConditioningAttributes

    if len(codes) != len(conditions):
        raise ValueError(f"{len(codes)} clips but {len(conditions)} descriptions")
    own = [ConditioningAttributes(text={"description": c}) if isinstance(c, str) else c for c in conditions]
    perm = derangement(len(codes), seed)
    null = ClassifierFreeGuidanceDropout(p=1.0)  # the unconditional input the LM sees under CFG
    was_training = lm.training
    lm.eval()
    ce = np.zeros((len(codes), len(CONDITIONS)))
    try:
        for i, clip in enumerate(codes):
            shuffled = copy.deepcopy(own[i])
            shuffled.text["description"] = own[perm[i]].text["description"]
            rows = [own[i], shuffled, null([copy.deepcopy(own[i])])[0]]
            for k, attributes in enumerate(rows):
                ce[i, k] = float(clip_cross_entropy(lm, clip[None], [attributes])[0])
    finally:
        lm.train(was_training)
    mean = {c: float(ce[:, k].mean()) for k, c in enumerate(CONDITIONS)}
    return ConditioningReport(clips=len(codes), ce=mean,
                              shuffled_gap=bootstrap_gap(ce[:, 1] - ce[:, 0], seed),
                              null_gap=bootstrap_gap(ce[:, 2] - ce[:, 0], seed), source=source)


@dataclass
class SamplerReport:
    """Whether generated codes follow a binary attribute of their descriptions (see `sampler_follows_text`)."""

    generated: int
    correct: int
    p_value: float

    @property
    def accuracy(self) -> float:
        """Share of generated sequences classified as their description's class."""
        return self.correct / self.generated

    def summary(self) -> str:
        """One line: accuracy and its one-sided binomial p-value against chance (1/2)."""
        return (f"{self.correct}/{self.generated} generated sequences classified as their description's class "
                f"({self.accuracy:.0%}, p={self.p_value:.2g} against chance)")


def code_histogram(codes: torch.Tensor, card: int) -> torch.Tensor:
    """Normalised histogram of the first codebook's codes of each sequence: [B, K, T] -> [B, card].

    The first residual codebook carries the coarse content (rhythm, timbre); the later ones mostly its details.

    Args:
        codes: codec tokens.
        card: codebook size.
    """
    import torch

    first = codes[:, 0].long()
    hist = torch.zeros(first.shape[0], card, device=codes.device)
    hist.scatter_add_(1, first, torch.ones_like(first, dtype=hist.dtype))
    return hist / first.shape[1]


def sampler_follows_text(model: tp.Any, clips: list[torch.Tensor], labels: list[bool], prompts: dict[bool, list[str]],
                         *, seed: int = 0) -> SamplerReport:
    """Generate for descriptions of two classes; classify each generation by the nearest real class centroid.

    The centroids are the mean first-codebook histograms (`code_histogram`) of real clips of each class; a
    generation counts as correct when it is nearer (L1) to its own description's class centroid. A sampler that
    the text and CFG reach scores well above chance; one that ignores the text scores about one half.

    Args:
        model: audiocraft `MusicGen` with its generation parameters set (duration, top-k, CFG).
        clips: [K, T] codes of real clips.
        labels: each clip's class.
        prompts: descriptions to generate from, per class.
        seed: torch seed of the sampling.
    """
    import math

    import torch

    from .fast_decoder import generate_tokens

    card = model.lm.card
    hists = torch.stack([code_histogram(c[None], card)[0] for c in clips])
    mask = torch.tensor(labels)
    centroids = {True: hists[mask].mean(0), False: hists[~mask].mean(0)}
    texts = [t for cls in (True, False) for t in prompts[cls]]
    truth = [cls for cls in (True, False) for _ in prompts[cls]]
    attributes, _ = model._prepare_tokens_and_attributes(texts, None)
    with torch.random.fork_rng(devices=[]):  # the caller's RNG is left as it was
        torch.manual_seed(seed)
        generated = code_histogram(generate_tokens(model, attributes), card)
    correct = 0
    for hist, cls in zip(generated, truth, strict=True):
        dist = {c: float((hist - centroids[c].to(hist.device)).abs().sum()) for c in (True, False)}
        correct += dist[cls] < dist[not cls]
    n = len(texts)
    p_value = sum(math.comb(n, k) for k in range(correct, n + 1)) / 2 ** n
    return SamplerReport(n, correct, p_value)


def load_clips(manifest: str | Path, model: tp.Any, segment_duration: float,
               max_clips: int | None = None) -> tuple[list[torch.Tensor], list]:
    """Codec tokens and conditions of a prepared split, read as audiocraft's MusicDataset reads them.

    Each clip's first `segment_duration` seconds (or the whole clip when shorter), at the model's rate and
    channels, encoded by the model's own compression model; its conditions from the clip's sidecar JSON
    (`MusicInfo.to_condition_attributes()`, as the solver builds them).

    Args:
        manifest: manifest folder (`<manifests>/NAME/valid`) or its `data.jsonl(.gz)`.
        model: audiocraft `MusicGen` (its `compression_model` encodes).
        segment_duration: seconds per clip.
        max_clips: use only the first N clips of the manifest.
    Returns:
        (one [K, T] code tensor per clip, one `ConditioningAttributes` per clip).
    Raises:
        ValueError: a missing manifest, fewer than 2 clips, or a clip without a description, naming it.
    """
    import torch
    from audiocraft.data.audio_dataset import load_audio_meta
    from audiocraft.data.music_dataset import MusicDataset

    folder = Path(manifest)
    if folder.is_file():
        folder = folder.parent
    files = [folder / n for n in ("data.jsonl", "data.jsonl.gz") if (folder / n).is_file()]
    if not files:
        raise ValueError(f"{folder}: no data.jsonl(.gz) manifest; give a prepared split "
                         "(zalo-music prepare writes <manifests>/NAME/valid)")
    meta = load_audio_meta(files[0])
    n = len(meta) if max_clips is None else min(max_clips, len(meta))
    if n < 2:
        raise ValueError(f"{folder}: {n} clip(s); the check compares each clip with another's description, "
                         "so it needs at least 2")
    # shuffle=False: clip i is read from a seek drawn from seed i (0 for a clip no longer than the segment).
    ds = MusicDataset(meta[:n], segment_duration=segment_duration, shuffle=False, pad=False, num_samples=n,
                      sample_rate=model.sample_rate, channels=model.audio_channels, info_fields_required=False)
    codes, conditions = [], []
    device = next(model.lm.parameters()).device
    for i in range(n):
        wav, info = ds[i]
        if not info.description:
            raise ValueError(f"{meta[i].path}: no description in its sidecar JSON "
                             f"({Path(meta[i].path).with_suffix('.json')}); re-run zalo-music prepare")
        with torch.no_grad():
            tokens, _ = model.compression_model.encode(wav[None].to(device))
        codes.append(tokens[0])
        conditions.append(info.to_condition_attributes())
    return codes, conditions


def check_xp(ref: str, *, split: str = "valid", manifest: str | None = None, max_clips: int | None = None,
             device: str = "cpu", seed: int = 0) -> ConditioningReport:
    """`measure` on an XP's best state over the held-out clips of its own dataset.

    Args:
        ref: the XP's signature (or `//sig/SIG`, or its folder).
        split: which of the XP's `datasource` splits to read (`valid`: clips never trained on).
        manifest: read this manifest folder instead.
        max_clips: use only the first N clips.
        device: torch device.
        seed: derangement and bootstrap seed.
    """
    from .export import resolve_xp_folder
    from .generate import load_model

    folder = resolve_xp_folder(ref)
    model = load_model(str(folder), device=device)
    cfg = _xp_config(folder)
    if manifest is None:
        manifest = cfg.datasource.get(split)
        if not manifest:
            raise ValueError(f"XP {folder.name} has no datasource.{split}; pass --manifest")
    segment = min(float(cfg.dataset.segment_duration), float(model.max_duration))
    codes, conditions = load_clips(str(manifest), model, segment, max_clips)
    return measure(model.lm, codes, conditions, seed=seed, source=f"XP {folder.name} on {manifest}")


def _xp_config(folder: Path):
    """The config an XP ran with (what its checkpoint stored)."""
    from .export import open_checkpoint

    return open_checkpoint(folder / "checkpoint.th")["xp.cfg"]


def _cmd_check(args: argparse.Namespace) -> int:
    report = check_xp(args.xp, split=args.split, manifest=args.manifest, max_clips=args.max_clips,
                      device=args.device, seed=args.seed)
    if args.json:
        from .fileio import write_json

        write_json(args.json, report.to_dict())
    print(f"check-conditioning {report.source}: {report.summary()}"
          + (f" (report: {args.json})" if args.json else ""))
    if not report.uses_text:
        print("the model scores its clips no better with their own descriptions than with other clips': "
              "the text does not reach it, or the training pairs descriptions with the wrong clips "
              "(docs/training.md, 'Does the model use its text?')", file=sys.stderr)
    return 0 if report.uses_text else 1


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `check-conditioning` sub-command to the `zalo-music` parser.

    Args:
        subparsers: the object `ArgumentParser.add_subparsers` returned.
    Returns:
        The sub-command's parser.
    """
    from .helpfmt import HelpFormatter

    p = subparsers.add_parser(
        "check-conditioning", formatter_class=HelpFormatter,
        help="does a trained XP use its text? loss with own vs other clips' descriptions on held-out clips",
        description="Measure an XP's best state on held-out clips: the LM's mean per-token cross-entropy of each "
                    "clip's codes with its own description (matched), with another clip's (shuffled, a fixed "
                    "derangement) and with none (null). Exit 0 when shuffled - matched is positive with its "
                    "bootstrap interval over clips above zero, 1 when not, 2 on an error.")
    p.add_argument("xp", help="the XP's signature (or //sig/SIG, or its folder)")
    p.add_argument("--split", default="valid", help="the XP's datasource split whose clips are measured")
    p.add_argument("--manifest", default=None, help="measure the clips of this manifest folder (default: the XP's valid split)")
    p.add_argument("--max-clips", type=int, default=None, help="use only the first N clips (default: all)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--seed", type=int, default=0, help="seed of the derangement and the bootstrap")
    p.add_argument("--json", default=None, help="also write the report to this JSON file (default: none)")
    p.set_defaults(func=_cmd_check)
    return p
