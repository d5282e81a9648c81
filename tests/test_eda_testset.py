"""EDA report and test-set preparation."""

from __future__ import annotations

import json

import pytest

from tests.helpers import SHARED
from zalo_music.cli import main as cli
from zalo_music.data.eda import write_report
from zalo_music.data.testset import prepare_test


@pytest.mark.skipif(not (SHARED / "train.json").is_file(),
                    reason="../shared/data/zalo2023 is absent: the real descriptions are not shipped")
def test_eda_on_real_descriptions(tmp_path):
    report = write_report(SHARED / "train.json", tmp_path, test_json=SHARED / "public_test.json")
    text = report.read_text()
    assert "items: 10000" in text and "test (public_test.json): 1000 items" in text
    assert (tmp_path / "description_length.png").stat().st_size > 5000
    assert (tmp_path / "top_words.png").stat().st_size > 5000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["unique_descriptions"] == 8273  # as measured in ../shared/UPSTREAM.md
    assert summary["test_in_train_exact"] >= 131
    assert dict(summary["top_instruments"])["piano"] > 1000


def test_eda_with_audio_plots(demo_manifests, demo_source, tmp_path):
    assert cli(["eda", "--json", str(demo_source), "--dataset", "demo", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "audio (demo): 64 clips, median 10.00s" in text
    assert (tmp_path / "audio.png").is_file()


def test_prepare_test_refuses_and_reports(tmp_path):
    js = tmp_path / "public_test.json"
    js.write_text('{"a.mp3": "  A calm\\n piano. ", "b.mp3": "", "../c.mp3": "x", "d.wav": "y", '
                  '"e.mp3": "z", "e.mp3": "zz", "f.mp3": "Seen in train."}')
    train = tmp_path / "train.json"
    train.write_text('{"t.mp3": "seen in TRAIN"}')
    report = prepare_test(js, "pt", train_json=train, manifest_dir=tmp_path / "m", quiet=True)
    reasons = {r["id"]: r["reason"] for r in report["refused"]}
    assert set(reasons) == {"b.mp3", "../c.mp3", "d.wav", "e.mp3"}
    clean = json.loads((tmp_path / "m" / "pt" / "test.json").read_text())
    assert clean == {"a.mp3": "A calm piano.", "f.mp3": "Seen in train."}
    assert report["in_train"] == 1
