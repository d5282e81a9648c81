"""Minimal preparation path: manifests and complete sidecars that audiocraft's MusicDataset reads."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.helpers.data import copy_demo_clips
from zalo_music.data.prepare import load_descriptions, prepare, split_of


def _read_manifest(path: Path) -> list[dict]:
    with gzip.open(path / "data.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


def test_demo_manifests_are_measured_and_complete(demo_manifests):
    root = Path(demo_manifests["manifests"])
    rows = _read_manifest(root / "train") + _read_manifest(root / "valid")
    assert len(rows) == 64 and demo_manifests["skipped"] == 0
    for r in rows:
        assert Path(r["path"]).is_absolute() and r["sample_rate"] == 32000
        assert r["duration"] == pytest.approx(10.0, abs=1e-3)
        side = json.loads(Path(r["path"]).with_suffix(".json").read_text())
        assert {"title", "artist", "key", "bpm", "genre", "moods", "description", "name", "instrument"} <= set(side)


def test_audiocraft_music_dataset_reads_it(demo_manifests):
    from audiocraft.data.music_dataset import MusicDataset

    ds = MusicDataset.from_meta(str(Path(demo_manifests["manifests"]) / "train"), segment_duration=10,
                                sample_rate=32000, channels=1, num_samples=4, return_info=True,
                                info_fields_required=True, min_segment_ratio=0.95)
    wav, info = ds[0]
    assert wav.shape == (1, 320000)
    assert info.description and len(info.description.split()) > 10
    assert info.moods


def test_bad_items_are_reported_not_fatal(tmp_path, demo_source):
    data = json.loads(demo_source.read_text())
    keys = list(data)[:3]
    audio = copy_demo_clips(demo_source, tmp_path / "audio", keys)
    (audio / "corrupt.mp3").write_bytes(b"not an mp3 at all" * 100)
    (audio / "empty.mp3").write_bytes(b"")
    (audio / "orphan.mp3").write_bytes((audio / keys[0]).read_bytes())
    bad = {"corrupt.mp3": "a piano", "empty.mp3": "a flute", "missing.mp3": "strings",
           "../escape.mp3": "evil", keys[2]: "  "}
    js = tmp_path / "in.json"
    js.write_text(json.dumps({**{k: data[k] for k in keys[:2]}, **bad}))
    before = {p.name: p.read_bytes() for p in audio.iterdir()}
    report = prepare(js, audio, "bad", workers=1, data_dir=tmp_path / "out", manifest_dir=tmp_path / "m",
                     quiet=True)
    reasons = {e["id"]: e["reason"] for e in report["errors"]}
    assert report["prepared"] == 2
    assert "cannot decode" in reasons["corrupt.mp3"]
    assert "empty file" in reasons["empty.mp3"]
    assert "not found" in reasons["missing.mp3"]
    assert "unsafe" in reasons["../escape.mp3"]
    assert "empty description" in reasons[keys[2]]
    assert "no description" in reasons["orphan.mp3"]
    assert {p.name: p.read_bytes() for p in audio.iterdir()} == before  # originals untouched
    assert json.loads((tmp_path / "m" / "bad" / "report.json").read_text())["skipped"] == len(reasons)
    again = prepare(js, audio, "bad", workers=1, data_dir=tmp_path / "out", manifest_dir=tmp_path / "m",
                    quiet=True)
    assert again["resumed"] == 2


def test_invalid_json_names_the_file(tmp_path):
    bad = tmp_path / "train.json"
    bad.write_text('{"a.mp3": "x",')
    with pytest.raises(ValueError, match="train.json: invalid JSON"):
        load_descriptions(bad)
    bad.write_text('{"a.mp3": "x", "a.mp3": "y"}')
    with pytest.raises(ValueError, match="duplicate keys"):
        load_descriptions(bad)


def test_split_keeps_near_duplicates_together():
    a = "The Piano plays a calm melody."
    b = "the piano plays a calm melody"
    assert all(split_of(a, 0.5, s) == split_of(b, 0.5, s) for s in range(20))
    words = ["piano", "flute", "calm", "happy", "drums", "bass", "sad", "strings"]
    texts = [f"{a} {b} {c}" for a in words for b in words for c in words[:2]]
    assert {split_of(t, 0.3, 0) for t in texts} == {"train", "valid"}
