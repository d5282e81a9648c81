"""Recordings of any length: every second becomes training audio, windows are the source's samples, the split
is by recording, a rerun is byte-identical, and both ways in (a Zalo JSON, `.txt` pairs) cut the same way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from zalo_music.data.manifest import read_manifest
from zalo_music.data.prepare import prepare
from zalo_music.data.segment import TAILS, Segmenter, TooShort, Windowing

SR_IN = 44100


def _music(seconds: float, seed: int, channels: int = 2) -> np.ndarray:
    """Noise with a slow envelope (no window is silent), (frames, channels) float32."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR_IN))
    env = 0.2 + 0.1 * np.sin(np.arange(n) / SR_IN)
    return (rng.standard_normal((n, channels)) * env[:, None] * 0.3).astype(np.float32)


def _prepare(root: Path, recordings: dict[str, tuple[np.ndarray, str]], **kw) -> dict:
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    for name, (wav, _) in recordings.items():
        if not (audio / name).exists():
            sf.write(str(audio / name), wav, SR_IN, subtype="FLOAT")
    (root / "t.json").write_text(json.dumps({k: d for k, (_, d) in recordings.items()}))
    kw.setdefault("workers", 1)
    return prepare(root / "t.json", audio, "long", data_dir=root / "d", manifest_dir=root / "m", quiet=True, **kw)


def _rows(report: dict) -> dict[str, list[dict]]:
    return {s: read_manifest(Path(report["manifests"]) / s) for s in ("train", "valid")}


# ------------------------------------------------------------------------------------------- the segmenter

@pytest.mark.parametrize("tail", TAILS)
@pytest.mark.parametrize(("seconds", "hop"), [(35.0, None), (35.0, 4.0), (30.0, None), (10.3, None), (9.7, None)])
def test_segmenter_windows_are_the_stream_at_their_offset(seconds, hop, tail):
    """Fed in ragged chunks, every window equals the input at its start; what no window covers is the tail."""
    w = Windowing(10.0, hop, tail, sample_rate=100)
    x = np.random.default_rng(0).standard_normal(int(round(seconds * 100)))
    seg, wins = Segmenter(w), []
    for a, b in zip([0, 7, 300, 301, 2000], [7, 300, 301, 2000, len(x)], strict=True):
        wins += seg.feed(x[a:b])
    wins += seg.finish()
    for win in wins:
        assert len(win.audio) == w.clip
        np.testing.assert_array_equal(win.audio[:win.real], x[win.start:win.start + win.real])
        assert not win.audio[win.real:].any()
    covered = np.zeros(len(x), bool)
    for win in wins:
        covered[win.start:win.start + win.real] = True
    lost = int((~covered).sum())
    assert lost == seg.dropped_tail and covered[:len(x) - lost].all()  # only the end is lost
    if seconds == 9.7:
        assert len(wins) == 1 and wins[0].real == 970  # padded: 0.3 s short is within what may be padded
    elif seconds == 10.3:
        assert len(wins) == 1 and lost == 30  # a remainder under 0.5 s is dropped whatever the policy
    elif tail == "overlap":
        assert lost == 0 and wins[-1].start + w.clip == len(x)
    elif tail == "pad" and seconds == 35.0 and hop is None:
        assert lost == 0 and wins[-1].real == 500  # 35 s: the 5-s tail is half a clip: padded
    elif tail == "drop" and seconds == 35.0 and hop is None:
        assert lost == 500 and "--tail drop" in seg.tail_reason


def test_segmenter_refuses_too_short_and_bad_options():
    seg = Segmenter(Windowing(10.0, sample_rate=100))
    seg.feed(np.ones(940))
    with pytest.raises(TooShort, match="too short: 9.40s < 9.50s"):
        seg.finish()
    with pytest.raises(ValueError, match="--hop 12"):
        Windowing(10.0, 12.0)
    with pytest.raises(ValueError, match="--tail 'x'"):
        Windowing(10.0, None, "x")


# ---------------------------------------------------------------------------------------- through prepare

def test_three_minute_recording_gives_180_s_of_its_own_samples(tmp_path):
    song = _music(180.0, seed=1)
    report = _prepare(tmp_path, {"song.wav": (song, "a slow piano ballad")})
    rows = sorted(_rows(report)["train"] + _rows(report)["valid"], key=lambda r: r["path"])
    assert report["segments"] == len(rows) == 18 and report["audio_seconds"]["windows"] == 180.0
    assert report["audio_seconds"] == {"recordings": 180.0, "windows": 180.0, "dropped": {}}
    # the reference: the whole recording downmixed and resampled in one shot
    ref = soxr.resample(song.astype(np.float64).mean(axis=1), SR_IN, 32000, quality="HQ")
    for i, row in enumerate(rows):
        got, sr = sf.read(row["path"])
        side = json.loads(Path(row["path"]).with_suffix(".json").read_text())
        assert sr == 32000 and side["offset"] == 10.0 * i and side["description"] == "a slow piano ballad"
        # equal up to the 16-bit FLAC quantization (half a step: 2**-16)
        np.testing.assert_allclose(got, ref[i * 320000:(i + 1) * 320000], atol=2.0**-16 + 1e-9, rtol=0)


def test_split_is_by_recording_and_rerun_is_byte_identical(tmp_path):
    recs = {f"r{i}.wav": (_music(25.0 + 5 * i, seed=i), f"recording {i}: {'jazz rock ambient pop'.split()[i % 4]}")
            for i in range(8)}
    report = _prepare(tmp_path, recs, valid_fraction=0.4, workers=2)
    rows = _rows(report)
    by_split = {s: {Path(r["path"]).parent.name.removesuffix(".segments") for r in rows[s]} for s in rows}
    assert by_split["train"] and by_split["valid"]
    assert not by_split["train"] & by_split["valid"], "a recording has windows in both splits"
    assert report["prepared"] == 8 and report["segments"] == sum(-(-(25 + 5 * i) // 10) for i in range(8))
    manifests = {p: p.read_bytes() for p in Path(report["manifests"]).rglob("*.jsonl.gz")}
    again = _prepare(tmp_path, recs, valid_fraction=0.4, workers=2)
    assert again["resumed"] == 8 and again["segments"] == report["segments"]
    assert {p: p.read_bytes() for p in manifests} == manifests


def test_rerun_with_another_windowing_redoes_and_cleans_up(tmp_path):
    recs = {"a.wav": (_music(32.0, seed=3), "a drum loop")}
    first = _prepare(tmp_path, recs)
    seg_dir = tmp_path / "d" / "long" / "audio" / "a.segments"
    assert first["segments"] == 4 and seg_dir.is_dir()
    second = _prepare(tmp_path, recs, tail="drop")
    assert second["resumed"] == 0 and second["segments"] == 3
    assert second["audio_seconds"]["dropped"] == {"tails (--tail drop)": 2.0}
    assert "2.0s tails (--tail drop)" in __import__("zalo_music.data.prepare", fromlist=["x"]).summary_line(second)
    assert len(list(seg_dir.glob("*.flac"))) == 3
    third = _prepare(tmp_path, recs, clip_seconds=32.0)  # one window: the single-file layout, folder removed
    assert third["segments"] == 1 and not seg_dir.exists() and (seg_dir.parent / "a.flac").exists()


def test_silence_inside_a_recording_is_dropped_and_counted(tmp_path):
    song = _music(30.0, seed=4)
    song[int(9.5 * SR_IN):int(20.5 * SR_IN)] = 0.0  # 11 s: the resampler's ringing stays out of 10-20 s
    report = _prepare(tmp_path, {"gap.wav": (song, "two songs and a pause")})
    assert report["segments"] == 2 and report["audio_seconds"]["dropped"] == {"silent windows": 10.0}


def test_classic_front_end_cuts_txt_pairs_the_same_way(tmp_path, monkeypatch):
    from zalo_music.classic_train import dataset_from_folder

    folder = tmp_path / "songs"
    folder.mkdir()
    sf.write(str(folder / "song.wav"), _music(45.0, seed=5), SR_IN, subtype="FLOAT")
    (folder / "song.txt").write_text("an upbeat electronic track with synth pads")
    sf.write(str(folder / "tiny.wav"), _music(4.0, seed=6), SR_IN, subtype="FLOAT")
    (folder / "tiny.txt").write_text("too short to train on")
    monkeypatch.setenv("ZALO_MUSIC_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("ZALO_MUSIC_MANIFEST_DIR", str(tmp_path / "m"))
    report = dataset_from_folder(folder, "songs", workers=1)
    assert report["prepared"] == 1 and report["segments"] == 5  # 4 windows + the end-aligned 35-45 s
    notes = {n["id"]: n["note"] for n in report["notes"]}
    assert "2 channels downmixed to mono" in notes["song.wav"] and "cut into 5 windows" in notes["song.wav"]
    assert [e["id"] for e in report["errors"]] == ["tiny.wav"] and "too short" in report["errors"][0]["reason"]


def test_pyav_fallback_streams_what_libsndfile_refuses(tmp_path):
    """AAC in MP4 (libsndfile cannot read it) goes through PyAV, still cut whole."""
    import av

    path = tmp_path / "audio" / "clip.m4a"
    path.parent.mkdir()
    x = _music(23.0, seed=7).T.copy()
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=SR_IN)
        s.layout = "stereo"
        for i in range(0, x.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(x[:, i:i + 1024].copy(), format="fltp", layout="stereo")
            frame.sample_rate = SR_IN
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    with pytest.raises(sf.LibsndfileError):
        sf.info(str(path))
    (tmp_path / "t.json").write_text(json.dumps({"clip.m4a": "a noisy texture"}))
    report = prepare(tmp_path / "t.json", tmp_path / "audio", "aac", data_dir=tmp_path / "d",
                     manifest_dir=tmp_path / "m", quiet=True, workers=1)
    assert report["segments"] == 3 and not report["errors"], report  # 0-10, 10-20, end-aligned 13-23


# ------------------------------------------------------------------ downstream: tokens, augmentation, dora

@pytest.mark.e2e
@pytest.mark.slow
def test_segmented_dataset_trains_from_tokens_and_from_its_loop30(work_root):
    """A dataset of long recordings goes through the token cache (one code row per window), a `train_from=tokens`
    XP and the 30-s loop augmentation's XP, like any prepared dataset."""
    from tests.helpers.dora import run_dora, xp_of_run
    from zalo_music.data.demo import SAMPLE_RATE, make_specs, render
    from zalo_music.tokens.encode import tokenize

    src = work_root / "data" / "longrec_source"
    (src / "audio").mkdir(parents=True, exist_ok=True)
    specs = make_specs(4, seed=11)
    for s in specs:
        sf.write(str(src / "audio" / s.key_id), render(s, duration=35.0), SAMPLE_RATE, format="MP3")
    (src / "long.json").write_text(json.dumps({s.key_id: s.description for s in specs}))
    report = prepare(src / "long.json", src / "audio", "longrec", augmentations=("loop",), workers=2, quiet=True)
    assert report["segments"] == 16 and report["augmented"]["longrec-loop30"] == report["splits"]
    argv = ["solver=zalo/tiny", "dset=zalo/prepared", "zalo.dataset=longrec", "train_from=tokens"]
    cache = tokenize(argv, quiet=True)
    assert sum(s["encoded"] for s in cache["splits"].values()) == 16
    short = ["optim.epochs=1", "optim.updates_per_epoch=2", "dataset.train.num_samples=16",
             "dataset.batch_size=4", "evaluate.every=1000", "generate.every=1000"]
    for run_argv in (argv, ["solver=zalo/tiny", "dset=zalo/prepared_loop30", "zalo.dataset=longrec"]):
        proc = run_dora("run", *run_argv, *short)
        history = json.loads((xp_of_run(proc.stdout + proc.stderr) / "history.json").read_text())
        assert history[-1]["train"]["ce"] > 0 and history[-1]["valid"]["ce"] > 0, run_argv
