"""`zalo-music eda`: a small exploratory report on a Zalo dataset (PNG plots + Markdown + JSON).

Works on descriptions alone (the public train.json / public_test.json); adds duration and loudness plots when
a prepared dataset (`manifests/NAME`) is given.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import numpy as np

from ..fileio import atomic_path, write_json
from .prepare import normalize_description
from .vocab import parse_description
from .zalo_json import read_zalo_json


def _bar(ax, counter: collections.Counter, title: str, top: int = 20) -> None:
    items = counter.most_common(top)[::-1]
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4477aa")
    ax.set_title(title)
    ax.tick_params(axis="y", labelsize=8)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def describe(descriptions: dict, test: dict | None = None) -> dict:
    """Statistics of descriptions (and of their overlap with a test set).

    Args:
        descriptions: training `{"<id>.mp3": "<description>"}`.
        test: optional test descriptions.
    """
    texts = [t for t in descriptions.values() if isinstance(t, str)]
    words = np.array([len(t.split()) for t in texts])
    inst, moods, genres = collections.Counter(), collections.Counter(), collections.Counter()
    for t in texts:
        p = parse_description(t)
        inst.update(p.instruments)
        moods.update(p.moods)
        if p.genre:
            genres[p.genre] += 1
    exact = collections.Counter(texts)
    norm = collections.Counter(normalize_description(t) for t in texts)
    stats = {
        "items": len(descriptions), "non_string_or_empty": len(descriptions) - sum(bool(t.strip()) for t in texts),
        "words_mean": float(words.mean()) if len(words) else 0.0,
        "words_median": float(np.median(words)) if len(words) else 0.0,
        "words_max": int(words.max()) if len(words) else 0,
        "unique_descriptions": len(exact), "unique_normalized": len(norm),
        "duplicated_descriptions": sum(1 for c in exact.values() if c > 1),
        "items_with_duplicated_description": sum(c for c in exact.values() if c > 1),
        "top_duplicates": [{"count": c, "description": t} for t, c in exact.most_common(10) if c > 1],
        "top_instruments": inst.most_common(20), "top_moods": moods.most_common(20),
        "top_genres": genres.most_common(20),
        "_words": words, "_counters": (inst, moods, genres),
    }
    if test is not None:
        test_texts = [t for t in test.values() if isinstance(t, str)]
        train_exact, train_norm = set(texts), set(norm)
        stats["test_items"] = len(test)
        stats["test_in_train_exact"] = sum(t in train_exact for t in test_texts)
        stats["test_in_train_normalized"] = sum(normalize_description(t) in train_norm for t in test_texts)
        stats["test_ids_in_train"] = len(set(test) & set(descriptions))
        stats["_test_words"] = np.array([len(t.split()) for t in test_texts])
    return stats


def audio_stats(dataset: str, sample: int = 2000) -> dict:
    """Durations (all clips, from the manifests) and RMS loudness (up to `sample` clips) of a prepared dataset."""
    import soundfile as sf

    from .. import env
    from .manifest import read_manifest

    root = env.manifest_dir() / dataset
    rows = [r for split in ("train", "valid") if (root / split).exists() for r in read_manifest(root / split)]
    if not rows:
        raise FileNotFoundError(f"no manifests under {root}: run `zalo-music prepare --name {dataset}` first")
    rng = np.random.default_rng(0)
    picked = rng.choice(len(rows), size=min(sample, len(rows)), replace=False)
    loud = []
    for i in picked:
        x, _ = sf.read(rows[i]["path"], dtype="float32")
        loud.append(20 * np.log10(max(1e-8, float(np.sqrt(np.mean(np.square(x)))))))
    return {"clips": len(rows), "_durations": np.array([r["duration"] for r in rows]),
            "_loudness": np.array(loud), "loudness_dbfs_median": float(np.median(loud)),
            "duration_median": float(np.median([r["duration"] for r in rows]))}


def write_report(json_path: str | Path, out_dir: str | Path, test_json: str | Path | None = None,
                 dataset: str | None = None, audio_sample: int = 2000) -> Path:
    """Write `report.md`, `summary.json` and PNG plots into `out_dir`.

    Args:
        json_path: training descriptions.
        out_dir: output folder.
        test_json: optional test descriptions (overlap with training).
        dataset: optional prepared dataset name for the audio plots.
        audio_sample: clips read for loudness.
    Returns:
        Path of report.md.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, _ = read_zalo_json(json_path)
    test = read_zalo_json(test_json)[0] if test_json else None
    s = describe(train, test)
    images = []

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(s["_words"], bins=40, alpha=0.7, label="train", density=test is not None)
    if test is not None:
        ax.hist(s["_test_words"], bins=40, alpha=0.6, label="test", density=True)
        ax.legend()
    ax.set_xlabel("words per description")
    ax.set_title("Description length")
    _save(fig, out / "description_length.png")
    plt.close(fig)
    images.append(("Description length", "description_length.png"))

    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, counter, title in zip(axes, s["_counters"], ("Instruments", "Moods", "Genres"), strict=True):
        _bar(ax, counter, title)
    _save(fig, out / "top_words.png")
    plt.close(fig)
    images.append(("Top instrument, mood and genre words", "top_words.png"))

    audio = audio_stats(dataset, audio_sample) if dataset else None
    if audio:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
        axes[0].hist(audio["_durations"], bins=40)
        axes[0].set_xlabel("seconds")
        axes[0].set_title(f"Duration ({audio['clips']} clips)")
        axes[1].hist(audio["_loudness"], bins=40, color="#aa7744")
        axes[1].set_xlabel("RMS dBFS")
        axes[1].set_title(f"Loudness ({len(audio['_loudness'])} clips)")
        _save(fig, out / "audio.png")
        plt.close(fig)
        images.append(("Duration and loudness", "audio.png"))

    lines = [f"# EDA: {Path(json_path).name}", "",
             f"- items: {s['items']} ({s['non_string_or_empty']} empty or not text)",
             f"- words per description: mean {s['words_mean']:.1f}, median {s['words_median']:.0f}, "
             f"max {s['words_max']}",
             f"- unique descriptions: {s['unique_descriptions']} exact, {s['unique_normalized']} after "
             "normalisation (case, punctuation, digits)",
             f"- {s['duplicated_descriptions']} descriptions are repeated, covering "
             f"{s['items_with_duplicated_description']} items"]
    if test is not None:
        lines += [f"- test ({Path(test_json).name}): {s['test_items']} items; "
                  f"{s['test_in_train_exact']} items whose description is verbatim in train, "
                  f"{s['test_in_train_normalized']} after normalisation; {s['test_ids_in_train']} ids shared"]
    if audio:
        lines += [f"- audio ({dataset}): {audio['clips']} clips, median {audio['duration_median']:.2f}s, "
                  f"median loudness {audio['loudness_dbfs_median']:.1f} dBFS RMS"]
    lines += ["", "## Most repeated descriptions", "", "| count | description |", "| ---: | --- |"]
    lines += [f"| {d['count']} | {d['description'][:160]} |" for d in s["top_duplicates"]] or ["| - | none |"]
    for title, img in images:
        lines += ["", f"## {title}", "", f"![{title}]({img})"]
    report = out / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = {k: v for k, v in s.items() if not k.startswith("_")}
    if audio:
        summary["audio"] = {k: v for k, v in audio.items() if not k.startswith("_")}
    write_json(out / "summary.json", summary)
    print(f"eda: {s['items']} descriptions, {len(images)} plots in {time.time() - start:.1f}s -> {report}")
    return report
