"""`score` with a stand-in CLAP whose text and audio towers agree on a planted signal.

The stand-in maps a clip to the one-hot of its dominant tone (found by FFT of the real CLAP window) and a
description "tone <k>" to the one-hot of k. A correct pipeline pairs each clip with its own description, so
CLAP is ~1; any mix-up of items (wrong order, reversed pairing, a clip scored against another's text) pulls
it towards 0. The real CLAP's numbers cannot show this: random weights score every pairing alike.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from zalo_music.metrics.audio import CLAP_SAMPLE_RATE

TONES = [220.0 * 2 ** (k / 4) for k in range(8)]  # far apart on an FFT of a 10-s window


class ToneClap:
    """A stand-in `ClapEmbedder`: 8-dim embeddings, text and audio agreeing on the planted tone."""

    def __init__(self):
        from zalo_music.metrics.clap import ClapSpec

        self.spec = ClapSpec(checkpoint="tone-standin", batch_size=3)
        self.checkpoint = Path("tone-standin")
        self.checkpoint_sha256 = "0" * 64
        self.identity = "tone-standin/v1"
        self.windows_seen = 0

    def embed_windows(self, windows: np.ndarray, batch_size: int | None = None, dtype: str = "float32") -> np.ndarray:
        self.windows_seen += len(windows)
        spec = np.abs(np.fft.rfft(windows, axis=-1))
        freqs = np.fft.rfftfreq(windows.shape[-1], 1 / CLAP_SAMPLE_RATE)
        out = np.full((len(windows), len(TONES)), 0.05)
        for i, row in enumerate(spec):
            out[i, int(np.argmin(np.abs(np.asarray(TONES) - freqs[np.argmax(row)])))] = 1.0
        return 2.5 * out / np.linalg.norm(out, axis=1, keepdims=True)  # not unit length: the scorer normalises

    def embed_text(self, texts, batch_size: int | None = None) -> np.ndarray:
        out = np.full((len(texts), len(TONES)), 0.05)
        for i, t in enumerate(texts):
            found = re.search(r"tone (\d+)", t)
            if found:  # else: no tone named, the flat vector
                out[i, int(found.group(1))] = 1.0
        return 1.7 * out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def tone_clap(monkeypatch):
    from zalo_music.metrics import clap

    standin = ToneClap()
    monkeypatch.setattr(clap, "get_embedder", lambda spec: standin)
    return standin


def _write_tones(folder: Path, n: int, sr: int = 16_000, seconds: float = 2.0) -> dict[str, int]:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    out = {}
    for i in range(n):
        k = (3 * i + 1) % len(TONES)
        key = f"{1_700_000_000 + i}.5.wav"
        sf.write(folder / key, (0.5 * np.sin(2 * np.pi * TONES[k] * t)).astype(np.float32), sr)
        out[key] = k
    return out


def _json(path: Path, tones: dict[str, int], shift: int = 0) -> Path:
    keys = sorted(tones)
    # shift > 0: each clip gets the description of another clip (a shuffled submission)
    path.write_text(json.dumps({k: f"a pure tone {tones[keys[(i + shift) % len(keys)]]}"
                                for i, k in enumerate(keys)}))
    return path


def test_right_pairing_scores_higher_than_a_shuffled_one(tmp_path, tone_clap):
    from zalo_music.metrics.score import score_folder

    tones = _write_tones(tmp_path / "clips", 8)
    right = score_folder(tmp_path / "clips", _json(tmp_path / "right.json", tones), out=None)
    shuffled = score_folder(tmp_path / "clips", _json(tmp_path / "shuffled.json", tones, shift=3), out=None)
    assert 0.95 < right["metrics"]["clap"] <= 1.0  # every clip against its own description; a cosine
    assert all(item["clap"] > 0.95 for item in right["items"].values())
    assert shuffled["metrics"]["clap"] < 0.3
    assert right["metrics"]["clap"] - shuffled["metrics"]["clap"] > 0.6


def test_undecodable_clip_is_named_and_the_rest_is_scored(tmp_path, tone_clap):
    from zalo_music.metrics.score import score_folder

    tones = _write_tones(tmp_path / "clips", 5)
    victim = sorted(tones)[2]
    (tmp_path / "clips" / victim).write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    report = score_folder(tmp_path / "clips", _json(tmp_path / "j.json", tones), out=tmp_path / "r.json")
    assert list(report["failed"]) == [victim] and victim in report["failed"][victim]
    assert victim not in report["items"] and len(report["items"]) == 4
    assert all(item["clap"] > 0.95 for item in report["items"].values())  # pairing intact around the hole
    c = report["completeness"]
    assert not c["complete"] and c["n_failed"] == 1
    assert c["clap_missing_as_zero"] == pytest.approx(report["metrics"]["clap"] * 4 / 5)
    assert "1 undecodable" in report["summary"]
    assert json.loads((tmp_path / "r.json").read_text())["failed"] == report["failed"]


def test_reference_change_in_place_changes_the_next_fad(tmp_path, tone_clap):
    """Overwriting one reference clip (same size, same mtime) gives new statistics, hence a new FAD."""
    import os

    import soundfile as sf

    from zalo_music.metrics.evaluator import ClasSettings
    from zalo_music.metrics.score import score_folder

    tones = _write_tones(tmp_path / "clips", 6)
    _write_tones(tmp_path / "ref", 6)
    zalo = _json(tmp_path / "j.json", tones)
    settings = ClasSettings(stats_cache=str(tmp_path / "cache"))
    first = score_folder(tmp_path / "clips", zalo, reference=tmp_path / "ref", settings=settings)
    victim = tmp_path / "ref" / sorted(tones)[0]
    st = victim.stat()
    data, sr = sf.read(victim, dtype="float32")
    t = np.arange(data.size) / sr
    sf.write(victim, (0.5 * np.sin(2 * np.pi * TONES[0] * t)).astype(np.float32), sr)  # another tone
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert victim.stat().st_size == st.st_size
    second = score_folder(tmp_path / "clips", zalo, reference=tmp_path / "ref", settings=settings)
    assert second["settings"]["stats_cache_hit"] is False
    assert second["metrics"]["fad"] != pytest.approx(first["metrics"]["fad"], abs=1e-6)
    third = score_folder(tmp_path / "clips", zalo, reference=tmp_path / "ref", settings=settings)
    assert third["settings"]["stats_cache_hit"] is True and third["metrics"]["fad"] == second["metrics"]["fad"]


def test_empty_description_rule_is_shared():
    from zalo_music.metrics.evaluator import is_empty_description

    assert is_empty_description("") and is_empty_description("  \n") and is_empty_description(None)
    assert not is_empty_description("calm piano")


def test_score_exit_status_and_extra_files(tmp_path, tone_clap, capsys):
    import argparse

    from zalo_music.metrics.cli import register

    tones = _write_tones(tmp_path / "clips", 4)
    zalo = json.loads(_json(tmp_path / "j.json", tones).read_text())
    zalo["1699999999.9.mp3"] = "a pure tone 1"  # no such clip
    (tmp_path / "j.json").write_text(json.dumps(zalo))
    (tmp_path / "clips" / "stray.wav").write_bytes((tmp_path / "clips" / sorted(tones)[0]).read_bytes())
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    argv = ["score", "--audio-dir", str(tmp_path / "clips"), "--json", str(tmp_path / "j.json"),
            "--stats-cache", "none"]
    args = parser.parse_args(argv)
    assert args.func(args) == 1
    out = capsys.readouterr()
    assert "1 missing" in out.err and "CLAP 0" in out.err and "--allow-missing" in out.err
    report = json.loads((tmp_path / "clips" / "score.json").read_text())
    assert report["extra_files"] == ["stray.wav"] and report["missing"] == ["1699999999.9.mp3"]
    args = parser.parse_args(argv + ["--allow-missing"])
    assert args.func(args) == 0
    assert re.search(r"^score: 4 of 5 clips scored, 1 missing, 1 extra files ignored; CLAP", capsys.readouterr().out,
                     re.M)


def test_embedding_pass_shows_a_progress_bar_with_eta(tmp_path, tone_clap, capsys):
    from zalo_music.metrics.evaluator import embed_files

    tones = _write_tones(tmp_path / "clips", 7)
    emb, infos, failed = embed_files(tone_clap, sorted((tmp_path / "clips").iterdir()), batch_size=3,
                                     progress=True, desc="CLAP: scored clips")
    err = capsys.readouterr().err
    assert emb.shape == (7, len(TONES)) and not failed and len(infos) == len(tones)
    assert "CLAP: scored clips" in err and "7/7" in err and "<" in err  # tqdm: done/total [elapsed<remaining]


def test_evaluate_stage_applies_the_same_empty_description_rule(tmp_path, tone_clap):
    """The solver's evaluate stage leaves out the items `score` leaves out, and counts them."""
    import types

    import omegaconf
    import torch

    from zalo_music.metrics.evaluator import ClasSettings
    from zalo_music.metrics.solver_eval import evaluate_clas

    sr = 16_000
    _write_tones(tmp_path / "ref", 4)
    t = torch.arange(2 * sr) / sr
    batches = []
    for b in range(2):
        meta = []
        for i in range(3):
            k = (b * 3 + i) % len(TONES)
            text = "  " if (b, i) == (1, 2) else f"a pure tone {k}"  # one empty description
            meta.append(types.SimpleNamespace(description=text, seek_time=0.0,
                                              meta=types.SimpleNamespace(path=f"clip{b}{i}.wav"), k=k))
        batches.append((torch.zeros(3, 1, 2 * sr), meta))

    def generate(batch, gen_duration, **kwargs):
        _, meta = batch
        return {"gen_audio": torch.stack([0.5 * torch.sin(2 * np.pi * TONES[m.k] * t)[None] for m in meta])}

    cfg = omegaconf.OmegaConf.create({
        "seed": 0, "sample_rate": sr, "device": "cpu", "evaluate": {"fixed_generation_duration": None},
        "generate": {"audio": {"format": "wav", "strategy": "peak"}},
        "datasource": {"evaluate": str(tmp_path / "ref")},
        "zalo": {"eval": {"reference": None, "reference_max": None, "candidates": None}}})
    solver = types.SimpleNamespace(cfg=cfg, device="cpu", dataloaders={"evaluate": batches}, log_updates=1,
                                   generation_params={}, run_generate_step=generate,
                                   log_progress=lambda name, loader, total, updates: loader)
    metrics = evaluate_clas(solver, ClasSettings(stats_cache=None))
    assert metrics["n_items"] == 5 and metrics["n_empty_descriptions"] == 1
    assert metrics["clap"] > 0.95  # the empty item was not scored against "" (or against a neighbour's text)
