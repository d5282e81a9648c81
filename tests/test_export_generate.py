"""Export round trip through audiocraft's public API, batched resumable generation, submission ZIP."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.helpers import SHARED
from zalo_music.batches import BatchLocks as _BatchLocks

pytestmark = pytest.mark.e2e
LOCK = _BatchLocks.NAME  # the batch-lock file every generate keeps in --out


@pytest.fixture(scope="module")
def exported(tiny_xp, tmp_path_factory) -> Path:
    from zalo_music.export import export_xp

    return export_xp(tiny_xp["sig"], tmp_path_factory.mktemp("export") / "tiny")


@pytest.fixture(scope="module")
def model(exported):
    from zalo_music.generate import load_model

    return load_model(str(exported), device="cpu")


@pytest.fixture(scope="module")
def test_json(tmp_path_factory) -> Path:
    """48 real public-test descriptions (or demo-style ones when ../shared is absent)."""
    path = tmp_path_factory.mktemp("json") / "test.json"
    src = SHARED / "public_test.json"
    if src.is_file():
        data = dict(list(json.loads(src.read_text()).items())[:48])
    else:
        from zalo_music.data.demo import make_specs

        data = {s.key_id: s.description for s in make_specs(48, seed=3)}
    path.write_text(json.dumps(data))
    return path


def test_export_is_small_and_round_trips(tiny_xp, exported, model):
    from audiocraft.models import MusicGen

    from zalo_music import debug_codec

    assert sorted(p.name for p in exported.iterdir()) == ["compression_state_dict.bin", "state_dict.bin",
                                                           "zalo_export.json"]
    lm_pkg = torch.load(exported / "state_dict.bin", weights_only=True)
    assert "optimizer" not in lm_pkg and "best_state" in lm_pkg
    assert json.loads((exported / "zalo_export.json").read_text())["sig"] == tiny_xp["sig"]
    assert isinstance(model, MusicGen) and model.sample_rate == 32000
    # the LM weights are the XP's best state
    ckpt = torch.load(tiny_xp["folder"] / "checkpoint.th", weights_only=True)
    for k, v in ckpt["best_state"]["model"].items():
        torch.testing.assert_close(model.lm.state_dict()[k].cpu(), v.cpu())
    # the codec is the very one the XP trained with (the recipe's persisted debug EnCodec)
    ref = debug_codec.load(debug_codec.checkpoint_file(ckpt["xp.cfg"].compression_model_checkpoint))
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(model.compression_model.state_dict()[k], v)
    model.set_generation_params(duration=1.0)
    wav = model.generate(["a calm piano melody"], progress=False)
    assert wav.shape[0] == 1 and wav.shape[-1] == 32000


def test_generate_writes_exact_clips_and_a_valid_zip(model, exported, test_json, tmp_path):
    from zalo_music.generate import GenerationConfig, generate
    from zalo_music.submission import validate, write_zip

    gen = GenerationConfig(batch_size=16, sample_rate=16000, seed=1)
    summary = generate(str(exported), test_json, tmp_path / "out", gen, model=model, quiet=True)
    ids = sorted(json.loads(test_json.read_text()))
    assert summary["written"] == len(ids) and not summary["refused"]
    audio, sr = sf.read(str(tmp_path / "out" / ids[0]))
    assert sr == 16000 and abs(len(audio) / sr - 10.0) < 0.1
    assert np.abs(audio).max() < 1.0
    zpath = write_zip(tmp_path / "out", test_json, tmp_path / "sub.zip")
    with zipfile.ZipFile(zpath) as zf:
        assert sorted(zf.namelist()) == ids
    report = validate(zpath, test_json, sample_rate=16000)
    assert report.ok and report.checked == len(ids)


def test_interrupted_run_finishes_with_identical_bytes(model, exported, test_json, tmp_path, monkeypatch):
    from zalo_music import clips
    from zalo_music import generate as g

    gen = g.GenerationConfig(batch_size=16, seed=7)
    g.generate(str(exported), test_json, tmp_path / "full", gen, model=model, quiet=True)

    real_write, calls = clips.write_mp3, {"n": 0}

    def dying_write(path, audio, sr):
        calls["n"] += 1
        if calls["n"] == 20:  # interrupted in the middle of the second batch
            raise KeyboardInterrupt
        real_write(path, audio, sr)

    monkeypatch.setattr(clips, "write_mp3", dying_write)
    with pytest.raises(KeyboardInterrupt):
        g.generate(str(exported), test_json, tmp_path / "resumed", gen, model=model, quiet=True)
    monkeypatch.setattr(clips, "write_mp3", real_write)
    left = sorted(p.name for p in (tmp_path / "resumed").iterdir() if p.name != LOCK)
    assert 16 <= len(left) < 32 and all(not n.startswith(".") for n in left)  # no partial file
    summary = g.generate(str(exported), test_json, tmp_path / "resumed", gen, model=model, quiet=True)
    assert summary["written"] == 48 - len(left) and summary["skipped_existing"] == 16
    for f in (tmp_path / "full").glob("*.mp3"):
        assert (tmp_path / "resumed" / f.name).read_bytes() == f.read_bytes(), f.name


def test_stale_temp_files_of_a_killed_run_are_removed(model, exported, test_json, tmp_path):
    from zalo_music.generate import GenerationConfig, generate

    ids = sorted(json.loads(test_json.read_text()))
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".{ids[0]}.abc123.tmp.mp3"  # what atomic_path leaves when SIGKILLed mid-write
    stale.write_bytes(b"half an mp3")
    other = out / ".not-ours.abc.tmp.mp3"  # another shard's in-flight file: left alone
    other.write_bytes(b"x")
    summary = generate(str(exported), test_json, out, GenerationConfig(batch_size=16, duration=1.0), model=model,
                       quiet=True)
    assert not stale.exists() and other.exists() and summary["stale_temps_removed"] == 1


def test_bad_input_is_refused_per_item(model, exported, tmp_path):
    from zalo_music.generate import GenerationConfig, generate

    js = tmp_path / "bad.json"
    js.write_text(json.dumps({"../escape.mp3": "x", "empty.mp3": " ", "noext": "a piano",
                              "ok.mp3": "Une mélodie calme au piano ♪ " * 200}))
    with pytest.warns(UserWarning, match="truncated"):
        summary = generate(str(exported), js, tmp_path / "o", GenerationConfig(batch_size=4, duration=2.0),
                           model=model, quiet=True)
    assert set(summary["refused"]) == {"../escape.mp3", "empty.mp3", "noext"}
    assert sorted(p.name for p in (tmp_path / "o").iterdir() if p.name != LOCK) == ["failures.json", "ok.mp3"]
    assert set(json.loads((tmp_path / "o" / "failures.json").read_text())["refused"]) == set(summary["refused"])
    assert not (tmp_path / "escape.mp3").exists()


def test_validator_catches_problems(tmp_path, test_json):
    from zalo_music.submission import validate

    ids = sorted(json.loads(test_json.read_text()))
    sr = 16000
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        def add(name, audio):
            p = tmp_path / "x.mp3"
            sf.write(str(p), audio, sr, format="MP3")
            zf.write(p, name)
        tone = 0.5 * np.sin(np.arange(sr * 10) / sr * 2 * np.pi * 440).astype(np.float32)
        add(ids[0], tone)
        add(ids[1], tone[: sr * 5])                      # too short
        add(ids[2], np.zeros(sr * 10, np.float32))       # silent
        add(ids[3], np.clip(tone * 4, -1, 1))            # clipping
        add("extra.mp3", tone)
        zf.writestr(ids[4], b"garbage")
    report = validate(tmp_path / "bad.zip", test_json)
    p = report.problems
    assert ids[0] not in p
    assert "expected 10.0s" in p[ids[1]][0]
    assert "silent" in " ".join(p[ids[2]])
    assert "clipping" in " ".join(p[ids[3]])
    assert "not an id" in p["extra.mp3"][0]
    assert "does not decode" in p[ids[4]][0]
    assert "missing" in p[ids[5]][0] and not report.ok


#: The real competition test set (1,000 descriptions); absent from a clone without ../shared.
needs_public_test = pytest.mark.skipif(
    not (SHARED / "public_test.json").is_file(),
    reason="needs ../shared/data/zalo2023/public_test.json (the real competition test set)")
#: Real descriptions generated at full length, twice, in the kill-and-resume test: 10 batches of 16 (all 1,000
#: twice took 490 s of a 2-core CI run; the proof is the same over any number of whole batches).
PUBLIC_SUBSET = 160


@needs_public_test
def test_every_public_test_description_goes_through_the_cli(exported, tmp_path, capsys):
    """All 1,000 real descriptions through `zalo-music generate --zip` (short clips): none refused, none
    truncated, one clip per id, and the ZIP passes the validator. The full 10-s length and the kill/resume
    determinism are proven on an evenly spaced subset of these ids in the next test."""
    from zalo_music.cli import main

    src = SHARED / "public_test.json"
    ids = sorted(json.loads(src.read_text()))
    assert len(ids) == 1000
    out = tmp_path / "out"
    argv = ["generate", "--model", str(exported), "--json", str(src), "--out", str(out), "--zip",
            str(tmp_path / "sub.zip"), "--device", "cpu", "--duration", "0.5", "--batch-size", "100",
            "--sample-rate", "16000", "--seed", "3"]
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(argv)
    text = capsys.readouterr().out
    assert code == 0, text[-3000:]
    assert not [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert "generated 1000 clips (0 already there, 0 by another run, 0 refused, 0 failed)" in text
    assert "1000 files, valid" in text
    assert sorted(p.name for p in out.iterdir() if p.name != LOCK) == ids


@needs_public_test
def test_public_test_killed_halfway_resumes_to_the_same_bytes(exported, tmp_path):
    """Real descriptions at full length through the CLI: an uninterrupted run, and a run SIGKILLed halfway then
    rerun, give the same MP3 and ZIP bytes, and the ZIP passes the validator.

    160 of the 1,000 ids, evenly spaced over the sorted test set (10 batches of 16, killed after at least 5; the
    previous test sends all 1,000 through the same CLI). The two runs go side by side, one core each (OMP_NUM_THREADS=1 for both, so
    both compute alike).
    """
    import os
    import signal
    import subprocess
    import sys
    import time

    from zalo_music.submission import validate

    everything = json.loads((SHARED / "public_test.json").read_text())
    every_id = sorted(everything)
    ids = [every_id[i * len(every_id) // PUBLIC_SUBSET] for i in range(PUBLIC_SUBSET)]
    assert len(set(ids)) == PUBLIC_SUBSET and ids[0] == every_id[0]
    src = tmp_path / "public_test_subset.json"
    src.write_text(json.dumps({k: everything[k] for k in ids}, ensure_ascii=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cli(name: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "zalo_music.cli", "generate", "--model", str(exported), "--json", str(src),
               "--out", str(tmp_path / name), "--zip", str(tmp_path / f"{name}.zip"), "--device", "cpu",
               "--seed", "3"]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    reference, victim = cli("reference"), cli("resumed")
    deadline = time.time() + 900
    while victim.poll() is None and time.time() < deadline:
        done = [p for p in (tmp_path / "resumed").glob("*.mp3") if not p.name.startswith(".")]
        if len(done) >= len(ids) // 2:
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    assert victim.wait() == -signal.SIGKILL, "the run finished before it could be killed halfway"
    finished_before = len([p for p in (tmp_path / "resumed").glob("*.mp3") if not p.name.startswith(".")])
    assert len(ids) // 2 <= finished_before < len(ids)
    resumed = cli("resumed")
    out_resumed, _ = resumed.communicate(timeout=900)
    out_reference, _ = reference.communicate(timeout=900)
    assert resumed.returncode == 0, out_resumed[-3000:]
    assert reference.returncode == 0, out_reference[-3000:]
    assert f"{len(ids)} files, valid" in out_resumed and f"{len(ids)} files, valid" in out_reference
    assert f"({finished_before - finished_before % 16} already there" in out_resumed  # whole batches skipped

    names = sorted(p.name for p in (tmp_path / "resumed").iterdir() if p.name != LOCK)
    assert names == ids  # nothing extra: no temporary file of the killed run is left
    for i in ids:
        assert (tmp_path / "resumed" / i).read_bytes() == (tmp_path / "reference" / i).read_bytes(), i
    assert (tmp_path / "resumed.zip").read_bytes() == (tmp_path / "reference.zip").read_bytes()
    report = validate(tmp_path / "resumed.zip", src, duration=10.0, sample_rate=32000)
    assert report.ok and report.checked == len(ids)


def test_long_descriptions_are_cut_to_what_t5_takes(tmp_path, model):
    """A real T5Tokenizer (sentencepiece vocabulary trained here, offline) on a MusicGen-like object."""
    import types

    import sentencepiece as spm
    from transformers import T5Tokenizer

    from zalo_music.generate import text_truncator

    corpus = ["a calm piano melody with soft strings", "an energetic rock song with electric guitar and drums",
              "a lo-fi hip hop beat with vinyl crackle", "sad violin over a slow ambient pad"] * 50
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=str(tmp_path / "sp"),
                                   vocab_size=40, minloglevel=2)
    tok = T5Tokenizer(vocab_file=str(tmp_path / "sp.model"), legacy=False)
    tok.model_max_length = 32
    fake = types.SimpleNamespace(lm=types.SimpleNamespace(condition_provider=types.SimpleNamespace(
        conditioners={"description": types.SimpleNamespace(t5_tokenizer=tok)})))
    truncate = text_truncator(fake)

    short = "a calm piano melody"
    assert truncate(short) == (short, 0)
    long = " ".join(corpus[:8])
    n_long = len(tok(long, add_special_tokens=False)["input_ids"])
    cut, n = truncate(long)
    assert n == n_long > 32
    assert len(tok(cut)["input_ids"]) <= 32  # with the end-of-sequence token
    assert long.startswith(cut) and len(cut) > 20
    # the LUT conditioner of the tiny recipe takes any text
    assert text_truncator(model)(long) == (long, 0)
