"""The embedded demo dataset: deterministic, in the Zalo format, and its audio follows its text."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import soundfile as sf

from zalo_music.data.demo import build_demo, load_specs, make_specs, render


def test_zalo_format_and_audio_shape(demo_source):
    data = json.loads(demo_source.read_text())
    assert len(data) == 64
    for key, desc in data.items():
        assert key.endswith(".mp3") and isinstance(desc, str) and len(desc.split()) >= 20
    first = demo_source.parent / "audio" / next(iter(data))
    info = sf.info(str(first))
    assert info.samplerate == 16000 and info.channels == 1
    assert abs(info.frames / info.samplerate - 10.0) < 0.1


def test_same_seed_same_dataset(tmp_path):
    a = build_demo(tmp_path / "a", n=3, seed=5)
    b = build_demo(tmp_path / "b", n=3, seed=5)
    assert a.read_text() == b.read_text()
    for key in json.loads(a.read_text()):
        wa, _ = sf.read(str(a.parent / "audio" / key))
        wb, _ = sf.read(str(b.parent / "audio" / key))
        np.testing.assert_array_equal(wa, wb)
    assert make_specs(3, seed=6)[0].description != make_specs(3, seed=5)[0].description


def test_rerun_only_fills_missing(tmp_path, capsys):
    build_demo(tmp_path, n=3)
    (tmp_path / "audio" / make_specs(3)[1].key_id).unlink()
    build_demo(tmp_path, n=3)
    assert "1 rendered, 2 already there" in capsys.readouterr().out


@pytest.mark.slow  # keeps `make test-fast` under 3 minutes; `make test` runs it
def test_text_and_audio_correlate(demo_source):
    """Words drive the rendering: drums in the text <=> percussive energy; tempo words <=> bpm."""
    specs = load_specs(demo_source.parent)
    perc = {True: [], False: []}
    for s in specs:
        desc = s["description"].lower()
        assert ("kick" in desc) == s["drums"]
        assert s["lead"] in desc and s["backing"] in desc and s["mood"] in desc
        tempo = "slow" if s["bpm"] < 82 else ("medium" if s["bpm"] < 112 else "fast")
        assert f"tempo is {tempo}" in desc
        spec = make_specs(len(specs))[specs.index(s)]
        audio = render(spec, sample_rate=16000, duration=4.0)
        # percussive share of the energy (median-filter HPSS): kicks, snares and hats only exist when
        # the description mentions them
        harmonic, percussive = librosa.decompose.hpss(np.abs(librosa.stft(audio, n_fft=1024)) ** 2)
        perc[s["drums"]].append(percussive.sum() / (harmonic.sum() + percussive.sum()))
    assert np.median(perc[True]) > 2 * np.median(perc[False])
    # rank separation (AUC): a clip described with drums is more percussive than one without
    pairs = [(a > b) for a in perc[True] for b in perc[False]]
    assert np.mean(pairs) > 0.9
