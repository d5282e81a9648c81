"""The CLAP checkpoint loader: laion's real training-script layout loads under torch's safe loader, nothing else
is ever fully unpickled unless its sha256 is pinned, and `doctor` loads and identifies the checkpoint."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle

import numpy as np
import pytest
import torch

from tests.helpers import clap_fixture
from zalo_music.metrics.errors import MetricUnavailableError


@pytest.fixture(scope="module")
def base_checkpoint():
    """A random HTSAT-base checkpoint (the official music checkpoint's tower) in laion's layout (~320 MB)."""
    path = clap_fixture.build_clap_checkpoint(clap_fixture.HF_ROOT / "ckpt" / "clap_base_random.pt",
                                              amodel="HTSAT-base", seed=0)
    yield path
    path.unlink(missing_ok=True)  # 320 MB: do not leave it in the temp folder for the rest of the session


@pytest.fixture(scope="module")
def tiny_checkpoint():
    return clap_fixture.build_clap_checkpoint(clap_fixture.HF_ROOT / "ckpt" / "clap_tiny_random.pt")


def test_standin_has_laions_training_script_layout(base_checkpoint):
    ckpt = torch.load(base_checkpoint, map_location="cpu", weights_only=False)  # our own file: trusted here
    assert sorted(ckpt) == ["epoch", "name", "optimizer", "state_dict"]
    state = ckpt["state_dict"]
    assert all(k.startswith("module.") for k in state)
    assert "module.text_branch.embeddings.position_ids" in state
    assert any(k.startswith("module.audio_branch.") for k in state)
    lrs = [g["lr"] for g in ckpt["optimizer"]["param_groups"]]
    assert len(lrs) == 2 and all(type(lr) is np.float64 for lr in lrs)  # laion's cosine scheduler's values
    assert ckpt["optimizer"]["state"]  # a real optimizer state, not an empty dict
    with pytest.raises(pickle.UnpicklingError):  # what the official file does to a plain safe load
        torch.load(base_checkpoint, map_location="cpu", weights_only=True)


def test_laion_layout_loads_under_the_safe_loader_into_htsat_base(base_checkpoint):
    from zalo_music.metrics.clap import ClapEmbedder, ClapSpec, load_clap_state

    before = set(map(str, torch.serialization.get_safe_globals()))
    state = load_clap_state(base_checkpoint)
    assert "text_branch.embeddings.position_ids" not in state and not any(k.startswith("module.") for k in state)
    # numpy's types were allowed for that call only, never added to torch's global allow-list
    assert set(map(str, torch.serialization.get_safe_globals())) == before
    assert not any("numpy" in s for s in before)
    embedder = ClapEmbedder(ClapSpec(checkpoint=str(base_checkpoint), amodel="HTSAT-base", device="cpu"))
    loaded = embedder.module.model.state_dict()
    for key in ("audio_branch.patch_embed.proj.weight", "logit_scale_a", "text_projection.0.weight"):
        assert torch.equal(loaded[key], state[key])
    assert embedder.checkpoint_sha256 == hashlib.sha256(base_checkpoint.read_bytes()).hexdigest()
    assert embedder.checkpoint_sha256 in embedder.identity and "HTSAT-base" in embedder.identity


class _Boom:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, protocol):
    from zalo_music.metrics.clap import load_clap_state

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Boom(str(marker))}, evil, pickle_protocol=protocol)
    with pytest.raises(MetricUnavailableError, match="refusing CLAP checkpoint .*not a pinned official"):
        load_clap_state(evil)
    assert not marker.exists()
    raw = tmp_path / "raw.pt"  # a bare pickle (not torch's zip format)
    raw.write_bytes(pickle.dumps(_Boom(str(marker)), protocol=protocol))
    with pytest.raises(MetricUnavailableError):
        load_clap_state(raw)
    assert not marker.exists()


def test_protocol4_checkpoint_needs_a_pinned_sha256(tmp_path, monkeypatch, caplog):
    from zalo_music.metrics import clap

    p4 = tmp_path / "p4.pt"
    torch.save({"epoch": 1, "state_dict": {"module.w": torch.ones(2)}}, p4, pickle_protocol=4)
    with pytest.raises(MetricUnavailableError, match="sha256"):
        clap.load_clap_state(p4)  # torch's safe loader refuses protocol 4; not pinned: refused
    digest = hashlib.sha256(p4.read_bytes()).hexdigest()
    monkeypatch.setitem(clap.OFFICIAL_CHECKPOINTS, digest, ("p4.pt", p4.stat().st_size))
    with caplog.at_level(logging.WARNING, logger="zalo_music.metrics.clap"):
        state = clap.load_clap_state(p4)
    assert torch.equal(state["w"], torch.ones(2))
    assert "pinned" in caplog.text and digest in caplog.text
    assert "fae3e9c087f2909c28a09dc31c8dfcdacbc42ba44c70e972b58c1bd1caf6dedd" in clap.OFFICIAL_CHECKPOINTS


def test_truncated_checkpoint_is_a_clear_error(tmp_path, tiny_checkpoint):
    from zalo_music.metrics.clap import load_clap_state

    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_checkpoint.read_bytes()[:100_000])
    with pytest.raises(MetricUnavailableError, match="cut.pt"):
        load_clap_state(cut)


def test_file_sha256_is_remembered_by_path_size_mtime(tmp_path, monkeypatch):
    from zalo_music.metrics import clap

    f = tmp_path / "weights.bin"
    f.write_bytes(b"a" * 1000)
    calls = []
    real = hashlib.file_digest

    def counting(fileobj, name):
        calls.append(name)
        return real(fileobj, name)

    monkeypatch.setattr(hashlib, "file_digest", counting)
    first = clap.file_sha256(f)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest() and len(calls) == 1
    assert clap.file_sha256(f) == first and len(calls) == 1  # remembered
    st = f.stat()
    f.write_bytes(b"b" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # any mtime change: hashed again
    assert clap.file_sha256(f) == hashlib.sha256(b"b" * 1000).hexdigest() and len(calls) == 2


def test_doctor_loads_the_checkpoint_and_prints_its_sha256(tiny_checkpoint, monkeypatch, tmp_path):
    from zalo_music import doctor
    from zalo_music.metrics import clap

    monkeypatch.setenv("ZALO_MUSIC_CLAP_CHECKPOINT", str(tiny_checkpoint))
    check = doctor.clap_check()
    digest = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert check.ok and digest in check.detail and "NOT the official" in check.detail
    monkeypatch.setitem(clap.OFFICIAL_CHECKPOINTS, digest, ("music_audioset_epoch_15_esc_90.14.pt", 0))
    assert "the official music_audioset_epoch_15_esc_90.14.pt" in doctor.clap_check().detail
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    monkeypatch.setenv("ZALO_MUSIC_CLAP_CHECKPOINT", str(broken))
    check = doctor.clap_check()
    assert not check.ok and "does not load" in check.detail and check.fix
    monkeypatch.setenv("ZALO_MUSIC_CLAP_CHECKPOINT", str(tmp_path / "absent.pt"))
    assert "not found" in doctor.clap_check().detail
