"""Hostile inputs and faults: every class of issue 14 with its expected outcome.

Small synthetic inputs, a fake model for generation (tests.test_webdemo.FakeMusicGen): no dora run, no real
model. Each case names the input class it guards.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers.fakes import FakeMusicGen
from zalo_music import cli
from zalo_music.data.prepare import MIN_VALID_CLIPS, prepare
from zalo_music.data.testset import prepare_test
from zalo_music.fileio import atomic_path, check_output_name
from zalo_music.generate import GenerationConfig, generate
from zalo_music.submission import MAX_ENTRY_BYTES, validate, write_zip

PROJECT = Path(__file__).resolve().parent.parent
SR_IN = 16000
LONG_ID = "x" * 245 + ".mp3"        # 245 + ".flac" and the temporary suffix exceed 255 bytes
LONGER_ID = "y" * 300 + ".mp3"       # beyond any file system's name limit
SURROGATE_ID = "bad\ud800.mp3"       # a lone UTF-16 surrogate: JSON allows it, no file system does
DESC = "A calm piano melody with soft strings, slow tempo, relaxing mood."


def _noise(seconds: float = 10.0, sr: int = SR_IN, channels: int = 1, scale: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((int(seconds * sr), channels)) * scale).astype(np.float32)
    return x[:, 0] if channels == 1 else x


def _clip(path: Path, seed: int = 0, **kw) -> Path:
    sf.write(str(path), _noise(seed=seed, **kw), SR_IN, format="WAV", subtype="PCM_16")
    return path


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


# ---------------------------------------------------------------------------------------------------- prepare

@pytest.fixture(scope="module")
def hostile_prepare(tmp_path_factory):
    """One `prepare` over good clips and every hostile item class, then a rerun after the JSON changed."""
    root = tmp_path_factory.mktemp("hostile_prepare")
    audio = root / "audio"
    audio.mkdir()
    descs = {}
    for i in range(4):
        descs[f"ok{i}.wav"] = f"{DESC} take {i}"
        _clip(audio / f"ok{i}.wav", seed=i)
    # stereo float WAV at +-3e38: the downmix must not overflow to inf
    huge = np.stack([np.full(SR_IN * 10, 3e38, np.float32), np.full(SR_IN * 10, 3e38, np.float32)], 1)
    huge[::2] *= -1
    sf.write(str(audio / "huge.wav"), huge, SR_IN, subtype="FLOAT")
    descs["huge.wav"] = "loud drums"
    # two ids with the same stem: both must survive
    _clip(audio / "coll.wav", seed=10)
    sf.write(str(audio / "coll.flac"), _noise(seed=11), SR_IN, format="FLAC")
    descs["coll.wav"], descs["coll.flac"] = "first collision: guitar", "second collision: violin"
    descs[LONG_ID] = "a long id"
    descs[LONGER_ID] = "a longer id"
    descs[SURROGATE_ID] = "a surrogate id"
    _clip(audio / "surrdesc.wav", seed=12)
    descs["surrdesc.wav"] = "bad text \udc00 here"
    descs["nul\x00.wav"] = "nul id"
    descs["../escape.wav"] = "traversal"
    secret = root / "secret.wav"
    _clip(secret, seed=13)
    (audio / "link.wav").symlink_to(secret)  # a symlink out of the audio folder
    descs["link.wav"] = "symlink out"
    js = root / "train.json"
    js.write_text(json.dumps(descs))
    kw = {"workers": 1, "data_dir": root / "data", "manifest_dir": root / "m", "quiet": True}
    first = prepare(js, audio, "h", **kw)
    # the JSON changes: a new description for ok0; ok1's FLAC gets truncated (a killed copy, a full disk)
    descs["ok0.wav"] = "an entirely new description: solo flute"
    js.write_text(json.dumps(descs))
    flac1 = root / "data" / "h" / "audio" / "ok1.flac"
    flac1.write_bytes(flac1.read_bytes()[:-3000])
    second = prepare(js, audio, "h", **kw)
    return {"root": root, "first": first, "second": second, "secret": secret}


def _reasons(report: dict) -> dict[str, str]:
    return {e["id"]: e["reason"] for e in report["errors"]}


def _notes(report: dict) -> dict[str, str]:
    return {n["id"]: n["note"] for n in report["notes"]}


@pytest.mark.parametrize(("item", "expected"), [
    ("huge.wav", "prepared"),                       # float overflow after downmix
    ("coll.wav", "prepared"), ("coll.flac", "prepared"),  # stem collision
    (LONG_ID, "too long"), (LONGER_ID, "too long"),  # ENAMETOOLONG with the temp suffix
    (SURROGATE_ID, "not valid Unicode"), ("surrdesc.wav", "not valid Unicode"),
    ("nul\x00.wav", "unsafe"), ("../escape.wav", "unsafe"), ("link.wav", "outside"),
])
def test_prepare_isolates_each_hostile_item(hostile_prepare, item, expected):
    report = hostile_prepare["first"]
    reasons = _reasons(report)
    if expected == "prepared":
        assert item not in reasons
    else:
        assert expected in reasons[item]
    assert report["prepared"] == 7  # 4 ok + huge + both collisions: every item that could be processed


def test_prepare_collisions_keep_both_and_report_it(hostile_prepare):
    audio = hostile_prepare["root"] / "data" / "h" / "audio"
    sides = {json.loads((audio / f"coll.{s}.json").read_text())["description"] for s in ("wav", "flac")}
    assert sides == {"first collision: guitar", "second collision: violin"}
    assert "same stem" in _notes(hostile_prepare["first"])["coll.wav"]


def test_prepare_rerun_updates_stale_sidecar_redoes_truncated_and_keeps_notes(hostile_prepare):
    second = hostile_prepare["second"]
    notes = _notes(second)
    side = json.loads((hostile_prepare["root"] / "data" / "h" / "audio" / "ok0.json").read_text())
    assert side["description"] == "an entirely new description: solo flute"
    assert "sidecar updated" in notes["ok0.wav"]
    assert "redone" in notes["ok1.wav"]
    assert "resampled" in notes["ok2.wav"]  # resumed clips keep the notes of what was fixed
    assert second["resumed"] == 6 and second["prepared"] == 7
    sf.read(hostile_prepare["root"] / "data" / "h" / "audio" / "ok1.flac")  # complete again


def test_prepare_outputs_respect_umask_and_nothing_escapes(hostile_prepare):
    root = hostile_prepare["root"]
    flac = root / "data" / "h" / "audio" / "ok2.flac"
    assert stat.S_IMODE(flac.stat().st_mode) == 0o666 & ~_umask()
    assert not (root / "data" / "escape.flac").exists() and not (root / "escape.flac").exists()
    assert json.loads((root / "m" / "h" / "report.json").read_text())["skipped"] == len(hostile_prepare["first"]["errors"])


def test_valid_split_never_below_the_minimum(tmp_path):
    audio = tmp_path / "a"
    audio.mkdir()
    descs = {}
    for i in range(24):
        descs[f"c{i}.wav"] = f"{DESC} number {['one', 'two', 'three', 'four', 'five', 'six'][i % 6]} {'x' * i}"
        _clip(audio / f"c{i}.wav", seed=i, seconds=10.0)
    (tmp_path / "t.json").write_text(json.dumps(descs))
    report = prepare(tmp_path / "t.json", audio, "split", workers=1, data_dir=tmp_path / "d",
                     manifest_dir=tmp_path / "m", quiet=True)
    assert report["splits"]["valid"] >= min(MIN_VALID_CLIPS, 12) and report["min_valid"] == 8
    with gzip.open(tmp_path / "m" / "split" / "valid" / "data.jsonl.gz", "rt") as f:
        assert sum(1 for _ in f) == report["splits"]["valid"]


# ------------------------------------------------------------------------------------------------ prepare-test

def test_prepare_test_refuses_traversal_name_and_isolates_items(tmp_path):
    js = tmp_path / "test.json"
    js.write_text(json.dumps({"a.mp3": DESC, LONG_ID: DESC, SURROGATE_ID: DESC, "b.mp3": "x \udc00"}))
    with pytest.raises(ValueError, match="--name"):
        prepare_test(js, "../../x", manifest_dir=tmp_path / "m", quiet=True)
    assert not (tmp_path / "x").exists()
    report = prepare_test(js, "t", manifest_dir=tmp_path / "m", quiet=True)
    reasons = _reasons({"errors": report["refused"]})
    assert report["usable"] == 1 and "too long" in reasons[LONG_ID]
    assert "Unicode" in reasons[SURROGATE_ID] and "Unicode" in reasons["b.mp3"]
    assert (tmp_path / "m" / "t" / "report.json").is_file()


# ---------------------------------------------------------------------------------------------------- generate

class CountingFake(FakeMusicGen):
    """The fake model, counting batches; `fail_on` makes the batch containing that text raise."""

    def __init__(self, fail_on: str | None = None) -> None:
        super().__init__()
        self.batches = 0
        self.fail_on = fail_on

    def _generate_tokens(self, attributes, prompt_tokens, progress=False):
        self.batches += 1
        if self.fail_on and self.fail_on in attributes:
            raise RuntimeError("simulated CUDA error")
        return super()._generate_tokens(attributes, prompt_tokens, progress)


def _gen_json(tmp_path: Path, n: int = 6, extra: dict | None = None) -> Path:
    js = tmp_path / "test.json"
    js.write_text(json.dumps({**{f"{i:03d}.mp3": f"{DESC} {i}" for i in range(n)}, **(extra or {})}))
    return js


# the fake model stands in for audiocraft's two generation stages: audiocraft's decoder path calls them
GEN = GenerationConfig(duration=1.0, batch_size=2, sample_rate=16000, decoder="audiocraft")


def test_generate_refuses_unwritable_names_before_any_model_work(tmp_path):
    js = tmp_path / "t.json"
    js.write_text(json.dumps({LONG_ID: DESC, LONGER_ID: DESC, SURROGATE_ID: DESC, "d.mp3": "x \ud800"}))
    fake = CountingFake()
    summary = generate("fake", js, tmp_path / "o", GEN, model=fake, quiet=True)
    assert fake.batches == 0 and set(summary["refused"]) == {LONG_ID, LONGER_ID, SURROGATE_ID, "d.mp3"}


def test_generate_regenerates_garbage_and_truncated_existing_files(tmp_path):
    js = _gen_json(tmp_path, 4)
    out = tmp_path / "o"
    generate("fake", js, out, GEN, model=CountingFake(), quiet=True)
    (out / "000.mp3").write_bytes(b"ID3garbage-18bytes")          # garbage already there
    good = (out / "002.mp3").read_bytes()
    (out / "002.mp3").write_bytes(good[: len(good) - 400])         # cut short (full disk, killed copy)
    with pytest.warns(UserWarning, match="not a finished clip"):
        summary = generate("fake", js, out, GEN, model=CountingFake(), quiet=True)
    assert sorted(summary["regenerated_invalid"]) == ["000.mp3", "002.mp3"] and summary["written"] == 2
    for f in out.glob("*.mp3"):
        assert sf.info(str(f)).frames == 16000


def test_generate_one_failing_batch_does_not_stop_the_others(tmp_path):
    js = _gen_json(tmp_path, 6)
    summary = generate("fake", js, tmp_path / "o", GEN, model=CountingFake(fail_on=f"{DESC} 2"), quiet=True)
    assert set(summary["failed"]) == {"002.mp3", "003.mp3"} and summary["written"] == 4
    assert "simulated CUDA error" in summary["refused"]["002.mp3"]
    listed = json.loads((tmp_path / "o" / "failures.json").read_text())  # every id in full, beside the clips
    assert summary["failures_file"] == str(tmp_path / "o" / "failures.json")
    assert set(listed["failed"]) == {"002.mp3", "003.mp3"} and listed["refused"] == {}
    again = generate("fake", js, tmp_path / "o", GEN, model=CountingFake(), quiet=True)  # the rerun retries them
    assert again["written"] == 2 and again["failures_file"] is None
    assert not (tmp_path / "o" / "failures.json").exists()


def test_concurrent_run_waits_for_a_batch_another_run_holds(tmp_path):
    """A second process holds the lock of the first batch and writes it: this run must not redo it."""
    js = _gen_json(tmp_path, 4)
    out = tmp_path / "o"
    out.mkdir()
    from zalo_music.batches import batch_seed

    offset = batch_seed(0, ["000.mp3", "001.mp3"]) % (2**40)
    # the holder is another machine sharing --out: its own temp folder (the lock must live in --out)
    code = f"""
import fcntl, os, sys, time
from pathlib import Path
from zalo_music.batches import BatchLocks as _BatchLocks
fd = os.open(_BatchLocks(Path({str(out)!r})).path, os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, {offset})
print("locked", flush=True)
time.sleep(1.5)
for name in ("000.mp3", "001.mp3"):
    os.replace({str(tmp_path)!r} + "/pre/" + name, {str(out)!r} + "/" + name)
"""
    two = tmp_path / "two"
    two.mkdir()
    generate("fake", _gen_json(two, 2), tmp_path / "pre", GEN, model=CountingFake(), quiet=True)  # its clips
    other_tmp = tmp_path / "other_tmp"
    other_tmp.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=PROJECT,
                              env=dict(os.environ, TMPDIR=str(other_tmp)))
    assert holder.stdout.readline().strip() == "locked"
    fake = CountingFake()
    summary = generate("fake", js, out, GEN, model=fake, quiet=True)
    holder.wait(10)
    assert summary["by_other_run"] == 2 and summary["written"] == 2 and fake.batches == 1


def _fake_loader(monkeypatch, fake=None):
    import zalo_music.generate as g

    monkeypatch.setattr(g, "load_model", lambda spec, device=None: fake or CountingFake())


def test_generate_zip_with_refused_ids_writes_none_and_names_zip_partial(tmp_path, monkeypatch, capsys):
    _fake_loader(monkeypatch)
    js = _gen_json(tmp_path, 2, {"../evil.mp3": DESC})
    base = ["generate", "--json", str(js), "--out", str(tmp_path / "o"), "--duration", "1", "--sample-rate",
            "16000", "--batch-size", "2", "--decoder", "audiocraft"]
    assert cli.main([*base, "--zip", str(tmp_path / "s.zip")]) == 1
    out = capsys.readouterr().out
    assert not (tmp_path / "s.zip").exists() and "--zip-partial" in out and "../evil.mp3" in out
    assert "rerun the same command" not in out and "run `zalo-music generate` again" not in out
    assert cli.main([*base, "--zip-partial", str(tmp_path / "p.zip")]) == 0
    assert sorted(zipfile.ZipFile(tmp_path / "p.zip").namelist()) == ["000.mp3", "001.mp3"]


@pytest.mark.skipif(os.geteuid() != 0 or not sys.platform.startswith("linux"),
                    reason="disk-full case mounts a small tmpfs: needs root on Linux")
def test_disk_full_never_commits_a_truncated_clip_and_resume_finishes(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        js = _gen_json(tmp_path, 8)
        gen = GenerationConfig(duration=2.0, batch_size=8, sample_rate=16000, decoder="audiocraft")  # ~16 KB a clip: 64 KB holds ~3
        with pytest.raises(OSError) as exc:  # named as a full disk whatever library failed (libsndfile here)
            generate("fake", js, mnt, gen, model=CountingFake(), quiet=True)
        assert exc.value.errno == 28 and "on the file system of" in str(exc.value)
        left = 8 - len(list(mnt.glob("*.mp3")))  # ... and the room the clips left need (mean clip size so far)
        assert f"the {left} clips left need about" in str(exc.value), str(exc.value)
        for f in mnt.glob("*.mp3"):  # whatever was committed is complete
            assert sf.info(str(f)).frames == 32000 and len(sf.read(str(f))[0]) == 32000
        assert not list(mnt.glob(".*.tmp.mp3"))
        subprocess.run(["mount", "-o", "remount,size=4m", str(mnt)], check=True)  # space freed
        summary = generate("fake", js, mnt, gen, model=CountingFake(), quiet=True)
        assert len(list(mnt.glob("*.mp3"))) == 8 and not summary["refused"]
    finally:
        subprocess.run(["umount", str(mnt)])


# -------------------------------------------------------------------------------------------------- validator

def _mp3_bytes(tmp_path: Path, channels: int = 1, fmt: str = "MP3", seconds: float = 10.0) -> bytes:
    p = tmp_path / f"clip.{fmt.lower()}"
    x = 0.3 * np.sin(np.arange(int(seconds * SR_IN)) / SR_IN * 2 * np.pi * 440).astype(np.float32)
    if channels == 2:
        x = np.stack([x, x], 1)
    sf.write(str(p), x, SR_IN, format=fmt)
    return p.read_bytes()


@pytest.mark.parametrize(("case", "problem"), [
    ("wav_named_mp3", "is WAV audio"), ("flac_named_mp3", "is FLAC audio"), ("stereo", "2 channels"),
    ("oversize", "not decoded"), ("random_zip", "not a readable ZIP"), ("truncated_zip", "not a readable ZIP"),
])
def test_validator_names_each_problem(tmp_path, case, problem):
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"a.mp3": DESC}))
    z = tmp_path / "s.zip"
    if case in ("random_zip", "truncated_zip"):
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr("a.mp3", _mp3_bytes(tmp_path))
        data = z.read_bytes()
        z.write_bytes(os.urandom(4096) if case == "random_zip" else data[: len(data) // 2])
    else:
        payload = {"wav_named_mp3": lambda: _mp3_bytes(tmp_path, fmt="WAV"),
                   "flac_named_mp3": lambda: _mp3_bytes(tmp_path, fmt="FLAC"),
                   "stereo": lambda: _mp3_bytes(tmp_path, channels=2),
                   "oversize": lambda: b"\0" * (MAX_ENTRY_BYTES + 10)}[case]()
        with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("a.mp3", payload)
    report = validate(z, js)
    assert not report.ok and problem in " ".join(p for ps in report.problems.values() for p in ps)


def _peak_rss_mb(code: str) -> float:
    """Run `code` in a fresh interpreter; its peak RSS in MB.

    VmHWM of the child's own memory map: ru_maxrss would also count the forked copy of this (large) pytest
    process, which Linux carries across exec.
    """
    wrapper = code + ("\nprint('RSS', next(ln.split()[1] for ln in open('/proc/self/status') "
                      "if ln.startswith('VmHWM')))")
    proc = subprocess.run([sys.executable, "-c", wrapper], cwd=PROJECT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RSS")).split()[1]) / 1024


def test_zip_bomb_is_validated_in_bounded_memory(tmp_path):
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"a.mp3": DESC}))
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("a.mp3")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as f:
            zero = b"\0" * (1 << 20)
            for _ in range(200):  # 200 MB uncompressed, ~200 KB on disk
                f.write(zero)
    assert z.stat().st_size < 1_000_000
    rss = _peak_rss_mb(f"from zalo_music.submission import validate\n"
                       f"r = validate({str(z)!r}, {str(js)!r})\nassert not r.ok, r\n"
                       f"print(r.problems)")
    print(f"validate-submission on a 200 MB zip bomb: peak RSS {rss:.0f} MB")
    assert rss < 300  # the bound asked for is 600 MB; reading the entry whole would cost > 400 MB


@pytest.mark.slow  # keeps `make test-fast` under 3 minutes; `make test` runs it
@pytest.mark.parametrize("channels", [1, None])
def test_crafted_header_entry_is_validated_in_bounded_memory(tmp_path, channels):
    """A 12-s Ogg Vorbis entry with 255 channels at 96 kHz (~40 KB in the ZIP, 1.2 GB as float32) is judged on its
    header (not MP3, 255 channels, 12 s) without being decoded, whether or not a channel count is expected."""
    sr, ch = 96000, 255
    ogg = tmp_path / "b.ogg"
    with sf.SoundFile(str(ogg), "w", sr, ch, format="OGG") as f:
        block = np.zeros((sr, ch), np.float32)
        block[:, 0] = 0.1 * np.sin(np.arange(sr) / 10)
        for _ in range(12):
            f.write(block)
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"b.mp3": DESC}))
    z = tmp_path / "sub.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(ogg, "b.mp3")
    rss = _peak_rss_mb(f"from zalo_music.submission import validate\n"
                       f"r = validate({str(z)!r}, {str(js)!r}, channels={channels!r})\n"
                       f"p = str(r.problems)\n"
                       f"assert 'OGG audio named .mp3' in p and '12.000s' in p, p\n"
                       f"assert ({channels!r} == 1) == ('255 channels' in p), p")
    print(f"validate-submission, 255-channel 96-kHz entry (channels={channels}): peak RSS {rss:.0f} MB")
    assert rss < 300  # decoding the expected window whole took 2.4 GB


@pytest.mark.slow  # keeps `make test-fast` under 3 minutes; `make test` runs it
def test_three_hour_recording_is_prepared_whole_in_bounded_memory(tmp_path):
    audio = tmp_path / "a"
    audio.mkdir()
    with sf.SoundFile(str(audio / "long.wav"), "w", SR_IN, 1, subtype="PCM_16") as f:
        block = _noise(60.0)
        for _ in range(180):  # 3 hours, written a minute at a time
            f.write(block)
    (tmp_path / "t.json").write_text(json.dumps({"long.wav": DESC}))
    rss = _peak_rss_mb(f"from zalo_music.data.prepare import prepare\n"
                       f"r = prepare({str(tmp_path / 't.json')!r}, {str(audio)!r}, 'long', workers=1, "
                       f"data_dir={str(tmp_path / 'd')!r}, manifest_dir={str(tmp_path / 'm')!r}, quiet=True)\n"
                       f"assert r['prepared'] == 1 and r['segments'] == 1080, r\n"
                       f"assert r['audio_seconds']['dropped'] == {{}}, r")
    print(f"prepare of a 3-hour recording (1080 windows): peak RSS {rss:.0f} MB")
    assert rss < 300  # the bound asked for is 600 MB; decoding the whole recording would cost > 2 GB


# ---------------------------------------------------------------------------------------- CLI error boundary

@pytest.fixture
def bad_files(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    model = tmp_path / "model"
    model.mkdir()
    (model / "state_dict.bin").write_bytes(b"PK\x03\x04truncated")
    return {"deep": deep, "folder": folder, "model": model, "audio": tmp_path}


@pytest.mark.parametrize(("argv", "expected"), [
    (["prepare", "--json", "{deep}", "--audio-dir", "{audio}", "--name", "x"], "nested too deeply"),
    (["prepare", "--json", "{folder}", "--audio-dir", "{audio}", "--name", "x"], "is a folder"),
    (["prepare-test", "--json", "{deep}", "--name", "x"], "nested too deeply"),
    (["validate-submission", "{folder}", "--json", "{deep}"], "nested too deeply"),
    (["generate", "--model", "{model}", "--json", "{json}", "--out", "/proc/version/out"], "Not a directory"),
    (["generate", "--model", "{model}", "--json", "{json}", "--out", "{audio}/o"], "truncated or corrupt"),
])
def test_cli_errors_are_one_line_with_exit_2(bad_files, tmp_path, capsys, argv, expected):
    js = tmp_path / "ok.json"
    js.write_text(json.dumps({"a.mp3": DESC}))
    argv = [a.format(json=js, **bad_files) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize(("argv", "expected"), [
    (["prepare", "--json", "j", "--audio-dir", "a", "--name", "n", "--valid-fraction", "2"], "out of range"),
    (["prepare", "--json", "j", "--audio-dir", "a", "--name", "n", "--clip-seconds", "-1"], "out of range"),
    (["generate", "--json", "j", "--out", "o", "--batch-size", "0"], "out of range"),
    (["generate", "--json", "j", "--out", "o", "--shard", "abc"], "expected i/n"),
    (["generate", "--json", "j", "--out", "o", "--shard", "2/2"], "0 <= i < n"),
])
def test_cli_option_validation(capsys, argv, expected):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and expected in capsys.readouterr().err


def test_debug_flag_shows_the_traceback(bad_files, tmp_path, monkeypatch):
    monkeypatch.delenv("ZALO_MUSIC_DEBUG", raising=False)
    with pytest.raises(ValueError, match="nested too deeply"):
        cli.main(["--debug", "prepare-test", "--json", str(bad_files["deep"]), "--name", "x"])
    # --debug reaches the processes the command starts, not the caller's later ones (a leak here once made every
    # later test's dora run print the upstream warnings)
    assert "ZALO_MUSIC_DEBUG" not in os.environ


# ---------------------------------------------------------------------------------------------- safe loading

def test_malicious_pickle_is_refused_even_when_the_environment_disables_safe_loading(tmp_path):
    pwned = tmp_path / "pwned"
    code = f"""
import os, pickle, torch
class Evil:
    def __reduce__(self):
        return (os.system, ("touch {pwned}",))
torch.save({{"best_state": {{}}, "xp.cfg": "", "evil": Evil()}}, "{tmp_path}/state_dict.bin")
from zalo_music.runtime import prepare
prepare()  # the patch
try:  # exactly how audiocraft/models/loaders.py calls it: no weights_only, which the variable would flip
    torch.load("{tmp_path}/state_dict.bin", map_location="cpu")
except pickle.UnpicklingError:
    print("refused")
"""
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert "refused" in proc.stdout, proc.stderr[-2000:]
    assert not pwned.exists()


# ------------------------------------------------------------------------------------------------- misc fileio

def test_atomic_path_refuses_what_fails_verification(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def verify(p: Path) -> None:
        raise OSError("short write")

    with pytest.raises(OSError, match="short write"), atomic_path(target, verify=verify) as tmp:
        tmp.write_bytes(b"new but broken")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_killed_writers_leftovers_of_one_output_are_removed_when_old(tmp_path):
    """Outputs without a lock (a score report, an export folder): an hour-old temporary of theirs is a killed
    run's and goes; a young one may be a live writer's and stays; other files that look alike stay."""
    from zalo_music.fileio import remove_stale_temps_of

    report, export = tmp_path / "score.json", tmp_path / "best"
    old_tmp = tmp_path / ".score.json.a1b2c3d4.tmp.json"
    young_tmp = tmp_path / ".score.json.e5f6g7h8.tmp.json"
    old_dir = tmp_path / ".best.k2j3h4g5"
    lookalikes = [tmp_path / ".score.json.notes", tmp_path / ".best.lock", tmp_path / "score.json.bak"]
    for f in (old_tmp, young_tmp, *lookalikes):
        f.write_text("x")
    old_dir.mkdir()
    (old_dir / "state_dict.bin").write_bytes(b"half")
    hour_ago = time.time() - 3700
    for f in (old_tmp, old_dir, *lookalikes):
        os.utime(f, (hour_ago, hour_ago))
    assert remove_stale_temps_of(report) == 1 and remove_stale_temps_of(export) == 1
    assert not old_tmp.exists() and not old_dir.exists() and young_tmp.exists()
    assert all(f.exists() for f in lookalikes)


def test_write_zip_is_verified_and_deterministic(tmp_path):
    js = _gen_json(tmp_path, 2)
    generate("fake", js, tmp_path / "o", GEN, model=CountingFake(), quiet=True)
    a = write_zip(tmp_path / "o", js, tmp_path / "a.zip").read_bytes()
    b = write_zip(tmp_path / "o", js, tmp_path / "b.zip").read_bytes()
    assert a == b and zipfile.ZipFile(io.BytesIO(a)).testzip() is None


def test_check_output_name_limits():
    with pytest.raises(ValueError, match="too long"):
        check_output_name("/tmp", "a" * 240 + ".mp3")
    check_output_name("/tmp", "a" * 200 + ".mp3")
