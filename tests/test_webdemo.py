"""The web demo without a browser or a real model: validation, model listing, CLI defaults, seeding."""

from __future__ import annotations

import argparse
import types
import warnings

import numpy as np
import pytest
import soundfile as sf

from tests.helpers.fakes import FakeMusicGen
from zalo_music import webdemo
from zalo_music.data.zalo_json import MAX_DESCRIPTION_CHARS


@pytest.fixture
def backend(tmp_path, monkeypatch):
    """A backend over a fake model; counts how often a model is loaded."""
    import zalo_music.generate as g

    loads: list[str] = []

    def fake_load(spec, device=None):
        loads.append(spec)
        return FakeMusicGen()

    monkeypatch.setattr(g, "load_model", fake_load)
    # the fake stands in for audiocraft's two generation stages: it runs through audiocraft's decoder path
    b = webdemo.DemoBackend(["fake/model"], out_dir=tmp_path / "out", max_chars=50, decoder="audiocraft")
    b.loads = loads
    return b


def test_description_validation():
    assert webdemo.validate_description("  a calm piano  ") == "a calm piano"
    for empty in ("", "   \n", None):
        with pytest.raises(ValueError, match="enter a description"):
            webdemo.validate_description(empty)
    limit = MAX_DESCRIPTION_CHARS  # the web demo accepts what generate uses untruncated, no more
    with pytest.raises(ValueError, match=f"{limit + 1} characters long; the limit is {limit}"):
        webdemo.validate_description("x" * (limit + 1))
    assert webdemo.validate_description("x" * limit) == "x" * limit
    with pytest.raises(ValueError, match="limit is 10"):
        webdemo.validate_description("x" * 11, max_chars=10)
    with pytest.raises(ValueError, match="max_chars"):
        webdemo.DemoBackend(max_chars=0)


def test_model_choices(tmp_path):
    (tmp_path / "exports" / "best").mkdir(parents=True)
    (tmp_path / "exports" / "best" / "state_dict.bin").write_bytes(b"")
    (tmp_path / "exports" / "half-written").mkdir()  # no state_dict.bin: not offered
    for sig, trained in (("abc123", True), ("def456", False)):
        (tmp_path / "xps" / sig).mkdir(parents=True)
        if trained:
            (tmp_path / "xps" / sig / "checkpoint.th").write_bytes(b"")
    extra = ["my/model", "facebook/musicgen-small"]
    choices = webdemo.list_models(extra, dora_dir=tmp_path)
    assert choices == ["my/model", "facebook/musicgen-small", str(tmp_path / "exports" / "best"),
                       "//sig/abc123", "facebook/musicgen-medium", "facebook/musicgen-large"]
    assert webdemo.list_models(dora_dir=tmp_path / "missing") == list(webdemo.PRETRAINED)


def test_cli_defaults_bind_loopback_and_document_every_option():
    parser = argparse.ArgumentParser()
    d = webdemo.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo"])
    assert (args.host, args.port, args.share, args.model, args.max_chars) == ("127.0.0.1", 7860, False, None,
                                                                               MAX_DESCRIPTION_CHARS)
    assert args.func is webdemo._cmd_demo
    assert parser.parse_args(["demo", "--model", "a", "--model", "b"]).model == ["a", "b"]
    from zalo_music.helpfmt import HelpFormatter

    assert d.formatter_class is HelpFormatter  # honest defaults, as every command
    assert all(a.help for a in d._actions)
    assert webdemo.is_loopback("127.0.0.1") and webdemo.is_loopback("localhost") and webdemo.is_loopback("::1")
    assert not webdemo.is_loopback("0.0.0.0") and not webdemo.is_loopback("example.org")


def test_non_loopback_host_warns(monkeypatch):
    class App:
        zalo_backend = types.SimpleNamespace(out_dir="unused")

        def launch(self, **kwargs):
            self.kwargs = kwargs

    monkeypatch.setattr(webdemo, "build_app", lambda *a, **k: App())
    with pytest.warns(UserWarning, match="no authentication"):
        app = webdemo.serve(host="0.0.0.0", block=False)
    assert app.kwargs["server_name"] == "0.0.0.0" and app.kwargs["share"] is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert webdemo.serve(block=False).kwargs["server_name"] == "127.0.0.1"


def test_same_seed_same_audio_and_cached_model(backend):
    a, info = backend.generate("a calm piano", "fake/model", duration=1.0, seed=3)
    b, _ = backend.generate("a calm piano", "fake/model", duration=1.0, seed=3)
    c, _ = backend.generate("a calm piano", "fake/model", duration=1.0, seed=4, fmt="wav")
    assert backend.loads == ["fake/model"]  # loaded once, then cached
    assert a != b and a.parent == b.parent == c.parent == backend.out_dir  # one file per request, in out_dir
    assert a.read_bytes() == b.read_bytes()
    wav, sr = sf.read(str(c))
    assert sr == 32000 and len(wav) == 32000
    assert not np.allclose(sf.read(str(a))[0][:1000], wav[:1000], atol=1e-2)
    assert info["duration"] == 1.0 and info["seed"] == 3 and info["load_seconds"] >= 0
    assert "Generated 1 s of audio in" in webdemo.format_info(info)


def test_generate_refuses_bad_requests(backend):
    with pytest.raises(ValueError, match="enter a description"):
        backend.generate("  ", "fake/model")
    with pytest.raises(ValueError, match="limit is 50"):
        backend.generate("x" * 51, "fake/model")
    with pytest.raises(ValueError, match="Unknown model"):
        backend.generate("a calm piano", "/etc")  # the picker never loads an arbitrary path
    for bad in ({"duration": 0}, {"duration": 31}, {"temperature": 0}, {"seed": -1}, {"fmt": "flac"}):
        with pytest.raises(ValueError):
            backend.generate("a calm piano", "fake/model", **bad)
    assert backend.loads == [] and not list(backend.out_dir.iterdir())


def test_page_builds_without_loading_a_model(backend):
    app = webdemo.build_app(backend=backend)
    assert app.zalo_backend is backend and backend.loads == []
    api = {fn.api_name for fn in app.fns.values()}
    assert "generate" in api
