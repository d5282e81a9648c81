"""Faults a careless cluster causes: SIGTERM/SIGHUP mid-run, kill -9 leftovers, a full disk, two runs at once.

Each test runs the real `zalo-music prepare` in a child process and checks what is on disk afterwards: no
temporary file anywhere, and a rerun that ends with the bytes an uninterrupted run writes.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import PROJECT
from zalo_music.data.prepare import prepare
from zalo_music.fileio import is_temp

pytestmark = pytest.mark.slow
SR_IN = 44100


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    """48 stereo 44.1-kHz recordings of 30 s (3 windows each) and their JSON: a few seconds of prepare work."""
    root = tmp_path_factory.mktemp("faults_src")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    descs = {}
    for i in range(48):
        x = (rng.standard_normal((30 * SR_IN, 2)) * 0.1).astype(np.float32)
        sf.write(str(root / "audio" / f"r{i:02d}.wav"), x, SR_IN, subtype="PCM_16")
        descs[f"r{i:02d}.wav"] = f"recording {i}: {['jazz', 'rock', 'ambient', 'pop'][i % 4]} with piano"
    (root / "t.json").write_text(json.dumps(descs))
    return root


def _argv(src: Path, root: Path) -> list[str]:
    return [sys.executable, "-m", "zalo_music.cli", "prepare", "--json", str(src / "t.json"), "--audio-dir",
            str(src / "audio"), "--name", "f", "--workers", "2"]


def _env(root: Path) -> dict:
    return dict(os.environ, ZALO_MUSIC_DATA_DIR=str(root / "d"), ZALO_MUSIC_MANIFEST_DIR=str(root / "m"))


def _outputs(root: Path) -> dict[str, bytes]:
    """Every output file by relative path (manifest rows without the root: paths are absolute)."""
    out = {}
    for p in sorted((root / "d").rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = p.read_bytes()
    for p in sorted((root / "m").rglob("data.jsonl.gz")):
        out[str(p.relative_to(root))] = gzip.decompress(p.read_bytes()).replace(str(root).encode(), b"ROOT")
    return out


def _leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if is_temp(p) or p.name.endswith(".partial")]


@pytest.fixture(scope="module")
def reference_run(recordings, tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("faults_ref")
    proc = subprocess.run(_argv(recordings, root), cwd=PROJECT, env=_env(root), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _outputs(root)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_termination_mid_prepare_leaves_nothing_half_written_and_rerun_finishes(recordings, reference_run,
                                                                                 tmp_path, sig):
    proc = subprocess.Popen(_argv(recordings, tmp_path), cwd=PROJECT, env=_env(tmp_path), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(list((tmp_path / "d").rglob("*.flac"))) < 6:  # workers are writing
        assert proc.poll() is None and time.time() < deadline, "prepare ended before it could be signalled"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert f"interrupted by {signal.Signals(sig).name} (a rerun resumes)" in err
    assert not _leftovers(tmp_path), _leftovers(tmp_path)
    again = subprocess.run(_argv(recordings, tmp_path), cwd=PROJECT, env=_env(tmp_path), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _outputs(tmp_path) == reference_run


def test_kill_9_leftovers_are_removed_and_never_read(recordings, tmp_path):
    """What a killed run leaves (a temporary FLAC with a garbage header, an uncommitted segment folder) is
    removed by the next prepare, and a FAD reference folder never lists a temporary file."""
    from zalo_music.metrics.reference import reference_files

    audio = tmp_path / "d" / "f" / "audio"
    (audio / "r00.wav.segments.partial").mkdir(parents=True)
    (audio / "r00.wav.segments.partial" / "00000.flac").write_bytes(b"fLaC" + b"\xff" * 100)
    (audio / ".r01.flac.abcd1234.tmp.flac").write_bytes(b"fLaC" + b"\xff" * 100)
    sf.write(str(audio / "real.flac"), np.zeros(320000, np.float32) + 0.1, 32000)
    files, _ = reference_files(audio)
    assert [p.name for p in files] == ["real.flac"]
    one = tmp_path / "one"
    (one / "audio").mkdir(parents=True)
    os.link(recordings / "audio" / "r00.wav", one / "audio" / "r00.wav")
    (one / "t.json").write_text(json.dumps({"r00.wav": "one recording"}))
    report = prepare(one / "t.json", one / "audio", "f", data_dir=tmp_path / "d", manifest_dir=tmp_path / "m",
                     workers=1, quiet=True)
    assert report["stale_temps_removed"] == 2 and not _leftovers(tmp_path)


def test_second_prepare_of_the_same_dataset_is_refused_while_the_first_runs(recordings, tmp_path):
    proc = subprocess.Popen(_argv(recordings, tmp_path), cwd=PROJECT, env=_env(tmp_path), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lock = tmp_path / "m" / "f" / ".prepare.lock"
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text().startswith("pid")):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    try:
        with pytest.raises(ValueError, match=rf"dataset 'f' .* is in use by another run \(pid {proc.pid} on "):
            prepare(recordings / "t.json", recordings / "audio", "f", data_dir=tmp_path / "d",
                    manifest_dir=tmp_path / "m", quiet=True)
    finally:
        proc.communicate(timeout=600)
    assert proc.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="the full-disk case mounts a small tmpfs: needs root on Linux")
def test_full_disk_stops_prepare_with_one_line_and_rerun_after_freeing_space(recordings, reference_run,
                                                                             tmp_path):
    mnt = tmp_path / "d"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        proc = subprocess.run(_argv(recordings, tmp_path), cwd=PROJECT, env=_env(tmp_path), capture_output=True,
                              text=True, timeout=600)
        lines = [ln for ln in proc.stderr.splitlines() if "zalo-music prepare: error" in ln]
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert len(lines) == 1 and "on the file system of" in lines[0] and "rerun" in lines[0], proc.stderr[-2000:]
        assert not _leftovers(tmp_path), _leftovers(tmp_path)
        # the line names the room the rest needs: estimated from the output/source ratio of the recordings done
        # (within 2x of what the reference run's remaining files really take) or, when the disk filled before
        # any was done (2 workers, a 2-MB disk, ~1.9 MB a recording), bounded from the recordings' lengths
        need = re.search(r"the (\d+) recordings left need (about|at most) ([\d.]+) (kB|MB|GB) more", lines[0])
        assert need, lines[0]
        kept = sum(p.stat().st_size for p in mnt.rglob("*") if p.is_file())
        really = sum(len(v) for k, v in reference_run.items() if k.startswith("d/")) - kept
        estimate = float(need[3]) * {"kB": 1e3, "MB": 1e6, "GB": 1e9}[need[4]]
        low, high = (0.5, 2) if need[2] == "about" else (1, 2)
        assert low < estimate / really < high, (estimate, really, lines[0])
        subprocess.run(["mount", "-o", "remount,size=256m", str(mnt)], check=True)  # space freed
        again = subprocess.run(_argv(recordings, tmp_path), cwd=PROJECT, env=_env(tmp_path), capture_output=True,
                               text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-2000:]
        assert _outputs(tmp_path) == reference_run
    finally:
        subprocess.run(["umount", str(mnt)])


def test_hostile_ids_cannot_forge_terminal_lines(tmp_path):
    """An id with an ESC sequence and a newline (its file missing) is printed escaped, on one line."""
    (tmp_path / "audio").mkdir()
    evil = "x\x1b[2J\x1b[31mOK\nprepared 999 of 999 clips.wav"
    (tmp_path / "t.json").write_text(json.dumps({evil: "a description"}))
    proc = subprocess.run([sys.executable, "-m", "zalo_music.cli", "prepare", "--json", str(tmp_path / "t.json"),
                           "--audio-dir", str(tmp_path / "audio"), "--name", "evil", "--workers", "1"],
                          cwd=PROJECT, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "\x1b" not in proc.stdout + proc.stderr
    assert not any(ln.startswith("prepared 999") for ln in proc.stdout.splitlines())
    assert "  skipped 'x\\x1b[2J\\x1b[31mOK\\nprepared 999 of 999 clips.wav': audio file not found" in proc.stdout


def test_reasons_say_what_the_value_is(tmp_path):
    """A number, control/formatting characters only, and a FIFO named like a clip: each reason says what it is."""
    from zalo_music.data.zalo_json import check_test_item

    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("num.wav", "ctl.wav", "rtl.wav", "ok.wav"):
        sf.write(str(audio / name), np.random.default_rng(0).standard_normal(SR_IN * 10) * 0.1, SR_IN)
    os.mkfifo(audio / "pipe.wav")
    (tmp_path / "t.json").write_text(json.dumps({"num.wav": 42, "ctl.wav": "\x07\x1b\t", "rtl.wav": "\u202e\u202c",
                                                 "ok.wav": "a calm piano piece", "pipe.wav": "a pipe"}))
    report = prepare(tmp_path / "t.json", audio, "why", data_dir=tmp_path / "d", manifest_dir=tmp_path / "m",
                     workers=1, quiet=True)
    reasons = {e["id"]: e["reason"] for e in report["errors"]}
    assert reasons["num.wav"].startswith("description is a number ('42')")
    assert "no visible text" in reasons["ctl.wav"] and "no visible text" in reasons["rtl.wav"]
    assert reasons["pipe.wav"] == "not a regular file: pipe.wav is a FIFO (named pipe)"
    assert report["prepared"] == 1
    with pytest.raises(ValueError, match="description is a number"):
        check_test_item(tmp_path, "a.mp3", 7)
    with pytest.raises(ValueError, match="no visible text"):
        check_test_item(tmp_path, "a.mp3", "\u202e")
