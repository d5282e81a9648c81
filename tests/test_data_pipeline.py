"""Data pipeline: every kind of bad input in one mixed folder, resume, 30-s augmentations, training on them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers.data import copy_demo_clips
from tests.helpers.dora import run_dora, xp_of_run
from zalo_music.data.manifest import read_manifest
from zalo_music.data.prepare import prepare


@pytest.fixture(scope="module")
def mixed(demo_source: Path, tmp_path_factory) -> dict:
    """A folder of good clips plus one of each bad kind, and its JSON (written by hand: duplicate keys)."""
    root = tmp_path_factory.mktemp("mixed")
    data = json.loads(demo_source.read_text())
    keys = list(data)[:6]
    audio = copy_demo_clips(demo_source, root / "audio", keys)
    src, _ = sf.read(str(audio / keys[0]), dtype="float32")
    t = np.arange(44100 * 10) / 44100
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    sf.write(str(audio / "rate44k.mp3"), tone, 44100, format="MP3")                  # wrong sample rate
    sf.write(str(audio / "stereo.mp3"), np.stack([src, src * 0.5], 1), 16000, format="MP3")  # stereo
    sf.write(str(audio / "long.mp3"), np.concatenate([src, src[:16000 * 3]]), 16000, format="MP3")  # 13 s
    sf.write(str(audio / "short.mp3"), src[:16000 * 4], 16000, format="MP3")         # 4 s
    full = (audio / keys[1]).read_bytes()
    (audio / "truncated.mp3").write_bytes(full[: len(full) // 3])                    # cut mid-stream
    (audio / "corrupt.mp3").write_bytes(b"\x00\xff garbage " * 500)
    (audio / "empty.mp3").write_bytes(b"")
    sf.write(str(audio / "silent.mp3"), np.zeros(160000, np.float32), 16000, format="MP3")
    shutil.copy(audio / keys[2], audio / "orphan.mp3")                               # audio, no description
    entries = [(k, data[k]) for k in keys[:4]]
    entries += [("rate44k.mp3", "A calm sine tone."), ("stereo.mp3", data[keys[0]]),
                ("long.mp3", "A long piano piece."), ("short.mp3", "A short flute piece."),
                ("truncated.mp3", "A cut piece."), ("corrupt.mp3", "A broken piece."),
                ("empty.mp3", "Nothing."), ("silent.mp3", "Silence."), ("missing.mp3", "No audio."),
                ("../escape.mp3", "Evil."), (keys[4], "   "), (keys[5], 42),
                ("dup.mp3", "first"), ("dup.mp3", "second")]
    js = root / "train.json"
    js.write_text("{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in entries) + "}", encoding="utf-8")
    originals = {p.name: p.read_bytes() for p in audio.iterdir()}
    return {"root": root, "audio": audio, "json": js, "keys": keys, "originals": originals}


def test_mixed_folder_good_prepared_bad_reported(mixed):
    kw = dict(data_dir=mixed["root"] / "data", manifest_dir=mixed["root"] / "manifests", workers=2, quiet=True)
    report = prepare(mixed["json"], mixed["audio"], "mixed", **kw)
    reasons = {e["id"]: e["reason"] for e in report["errors"]}
    notes = {n["id"]: n["note"] for n in report["notes"]}
    good = set(mixed["keys"][:4]) | {"rate44k.mp3", "stereo.mp3", "long.mp3"}
    expected_bad = {"short.mp3": "too short", "truncated.mp3": "too short", "corrupt.mp3": "cannot decode",
                    "empty.mp3": "empty file", "silent.mp3": "silent", "missing.mp3": "not found",
                    "../escape.mp3": "unsafe", mixed["keys"][4]: "empty description",
                    mixed["keys"][5]: "description is a number ('42')", "dup.mp3": "duplicate key",
                    "orphan.mp3": "no description"}
    assert set(reasons) == set(expected_bad)
    for key, word in expected_bad.items():
        assert word in reasons[key], (key, reasons[key])
    assert "resampled 44100 -> 32000" in notes["rate44k.mp3"]
    assert "downmixed" in notes["stereo.mp3"]
    assert "13.00s cut into 2 windows" in notes["long.mp3"]  # 0-10 s and the end-aligned 3-13 s
    rows = read_manifest(Path(report["manifests"]) / "train") + read_manifest(Path(report["manifests"]) / "valid")
    sources = [Path(r["path"]).parent.name.removesuffix(".segments") if r["path"].count(".segments/")
               else Path(r["path"]).stem for r in rows]
    assert {s + ".mp3" for s in sources} == good and sources.count("long") == 2
    for r in rows:
        info = sf.info(r["path"])
        assert r["sample_rate"] == info.samplerate == 32000 and info.channels == 1
        assert r["duration"] == pytest.approx(info.frames / info.samplerate) == pytest.approx(10.0)
    assert {p.name: p.read_bytes() for p in mixed["audio"].iterdir()} == mixed["originals"]
    assert not list((mixed["root"] / "data").rglob("*.tmp*"))
    # a second run does no work and reports the same
    again = prepare(mixed["json"], mixed["audio"], "mixed", **kw)
    assert again["resumed"] == again["prepared"] == report["prepared"]
    assert again["errors"] == report["errors"]


def test_augmentations_build_30s_datasets(demo_manifests, demo_source, work_root):
    report = prepare(demo_source, demo_source.parent / "audio", "demo", augmentations=["none", "loop", "concat"],
                     workers=2, quiet=True)
    assert set(report["augmented"]) == {"demo-loop30", "demo-concat30"}
    loop = read_manifest(work_root / "manifests" / "demo-loop30" / "train")
    concat = read_manifest(work_root / "manifests" / "demo-concat30" / "train")
    assert len(loop) == report["splits"]["train"]
    assert all(r["duration"] == pytest.approx(30.0) for r in loop + concat)
    base = read_manifest(work_root / "manifests" / "demo" / "train")
    a, _ = sf.read(base[0]["path"])
    looped, _ = sf.read(str(Path(loop[0]["path"]).with_name(Path(base[0]["path"]).name)))
    np.testing.assert_array_equal(looped, np.concatenate([a, a, a]))
    side = json.loads(Path(concat[0]["path"]).with_suffix(".json").read_text())
    assert len(side["sources"]) == 3 and side["augmentation"] == "concat"
    from zalo_music.data.augment import match_key

    descriptions = json.loads(demo_source.read_text())
    keys = {match_key(descriptions[s]) for s in side["sources"]}
    assert len(keys) == 1  # the three clips' descriptions match


@pytest.mark.e2e
@pytest.mark.parametrize("dset", ["zalo/prepared", "zalo/prepared_loop30", "zalo/prepared_concat30"])
def test_tiny_trains_on_each_augmentation(dset, demo_manifests, demo_source):
    prepare(demo_source, demo_source.parent / "audio", "demo", augmentations=["none", "loop", "concat"],
            workers=2, quiet=True)
    # Sizes only: half batches and a few valid/evaluate/generate items (audiocraft runs evaluate and generate at
    # the last epoch whatever `every` says). The 30-s segments, the dset's clip duration and the stages are kept.
    argv = ["solver=zalo/tiny", f"dset={dset}", "zalo.dataset=demo", "optim.epochs=1",
            "optim.updates_per_epoch=2", "generate.every=100", "evaluate.every=100", "dataset.batch_size=4",
            "dataset.valid.num_samples=4", "dataset.evaluate.num_samples=4", "dataset.generate.num_samples=2",
            "generate.lm.gen_duration=1"]
    proc = run_dora("run", *argv)
    folder = xp_of_run(proc.stdout + proc.stderr)
    history = json.loads((folder / "history.json").read_text())  # what `dora info -m` prints (test_dora_e2e)
    assert len(history) == 1 and {"train", "valid"} <= set(history[0])
    assert history[0]["train"]["ce"] > 0 and history[0]["valid"]["ce"] > 0
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
    expected = 10 if dset == "zalo/prepared" else 30
    assert cfg.zalo.clip_duration == expected and cfg.dataset.segment_duration == expected
    assert "${zalo.clip_duration}" in OmegaConf.to_yaml(cfg.dataset)  # segment follows the dset
    assert "segment_duration" in OmegaConf.to_yaml(cfg.dataset)
