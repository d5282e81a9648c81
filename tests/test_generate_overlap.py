"""MP3s written while the next batch is generated (on a GPU): the same files, each batch locked until written.

`generate._overlap_writes` turns it on where the LM runs on CUDA; here it is forced on the CPU, and the clip
writer waits for the next batch's LM pass to start, so the test only passes if the writes really overlap it.
Best-of-N's candidates overlap the same way; their choice (CLAP) and commit follow the next LM pass.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tests.helpers import clap_fixture
from tests.helpers.data import write_demo_texts


@pytest.fixture(scope="module")
def tiny(tiny_random_musicgen):
    return tiny_random_musicgen


@pytest.fixture(scope="module")
def rerank():
    from zalo_music.metrics.clap import ClapSpec
    from zalo_music.rerank import RerankOptions

    ckpt = clap_fixture.build_clap_checkpoint(clap_fixture.HF_ROOT / "ckpt" / "clap_tiny_random.pt")
    return RerankOptions(clap=ClapSpec(checkpoint=str(ckpt), amodel="HTSAT-tiny", device="cpu"))


def _outputs(folder: Path) -> dict:
    out = {p.name: p.read_bytes() for p in sorted(folder.glob("*.mp3"))}
    report = folder / "candidates.json"
    if report.exists():
        out["candidates.json"] = json.loads(report.read_text())["items"]
    return out


@pytest.mark.parametrize("candidates", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_overlapped_writes_give_the_same_files_and_keep_each_batch_locked_until_written(candidates, tiny, rerank,
                                                                                        tmp_path, monkeypatch):
    from zalo_music import batches, clips
    from zalo_music import generate as g

    texts = write_demo_texts(tmp_path, 7, seed=4)
    gen = g.GenerationConfig(duration=1.0, batch_size=3, seed=5, candidates=candidates)
    summary = g.generate("tiny", texts, tmp_path / "turns", gen, model=tiny, quiet=True, rerank=rerank)
    assert summary["written"] == 7

    log: list[tuple] = []
    second_pass = threading.Event()
    real_batch, real_write = g.generate_batch, g._Run.write
    real_keep, real_release = batches.BatchLocks.keep, batches.BatchLocks.release
    first_batch: set[str] = set()

    def lm_pass(model, rows, decoder):
        log.append(("lm", len(rows)))
        if sum(e[0] == "lm" for e in log) == 2:
            second_pass.set()
        return real_batch(model, rows, decoder)

    def write(self, batch, wavs):
        if not first_batch:
            first_batch.update(target.name for _, _, target in batch)
        return real_write(self, batch, wavs)

    def spy(real):
        def encode(path, *args):
            first = any(name in path.name for name in first_batch)  # a clip, or one of its candidates
            if first:  # the first batch's files wait for the second LM pass: only overlapped writes see it start
                log.append(("overlapped", second_pass.wait(timeout=5)))
            result = real(path, *args)
            log.append(("written", path.name, first))
            return result
        return encode

    monkeypatch.setattr(g, "_overlap_writes", lambda model: True)
    monkeypatch.setattr(g, "generate_batch", lm_pass)
    monkeypatch.setattr(g._Run, "write", write)
    monkeypatch.setattr(clips, "write_clip", spy(clips.write_clip))
    monkeypatch.setattr(clips, "write_candidate", spy(clips.write_candidate))
    monkeypatch.setattr(batches.BatchLocks, "keep", lambda self, b: (log.append(("keep",)), real_keep(self, b)))
    monkeypatch.setattr(batches.BatchLocks, "release",
                        lambda self, b: (log.append(("release", len(self.kept))), real_release(self, b)))
    summary = g.generate("tiny", texts, tmp_path / "overlap", gen, model=tiny, quiet=True, rerank=rerank)

    assert summary["written"] == 7 and not summary["failed"]
    overlapped = [e[1] for e in log if e[0] == "overlapped"]
    assert len(overlapped) == 3 * candidates and all(overlapped), log  # written during the second LM pass
    kinds = [e[0] for e in log]
    # batch 1's lock is kept past its loop body and released only once its files are written, after LM pass 2
    first_release, passes = kinds.index("release"), [i for i, k in enumerate(kinds) if k == "lm"]
    assert kinds.index("keep") < passes[1] < first_release
    assert sum(1 for e in log[:first_release] if e[0] == "written" and e[2]) == 3 * candidates
    assert log[first_release] == ("release", 1)  # the kept one (the loop body's own release skipped it)
    assert kinds.count("keep") == kinds.count("release") == 3  # every batch kept, then released: none left held
    assert _outputs(tmp_path / "overlap") == _outputs(tmp_path / "turns")  # clips and best-of-N's choices
    assert not list((tmp_path / "overlap").glob(".*.tmp.mp3"))  # no candidate left behind


@pytest.mark.slow
def test_an_error_during_the_next_pass_lets_the_writes_in_flight_land_and_drops_candidates(tiny, rerank, tmp_path,
                                                                                           monkeypatch):
    """Ctrl-C during LM pass 2: batch 1's candidates are encoded, not chosen (no CLAP pass on the way out),
    deleted, and its lock released; a rerun then finishes the whole JSON."""
    from zalo_music import generate as g

    texts = write_demo_texts(tmp_path, 7, seed=4)
    gen = g.GenerationConfig(duration=1.0, batch_size=3, seed=5, candidates=2)
    real_batch = g.generate_batch
    passes = []

    def interrupted(model, rows, decoder):
        passes.append(len(rows))
        if len(passes) == 2:
            raise KeyboardInterrupt
        return real_batch(model, rows, decoder)

    monkeypatch.setattr(g, "_overlap_writes", lambda model: True)
    monkeypatch.setattr(g, "generate_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        g.generate("tiny", texts, tmp_path / "out", gen, model=tiny, quiet=True, rerank=rerank)
    assert not list((tmp_path / "out").glob("*.mp3")) and not list((tmp_path / "out").glob(".*.tmp.mp3"))
    monkeypatch.setattr(g, "generate_batch", real_batch)
    assert g.generate("tiny", texts, tmp_path / "out", gen, model=tiny, quiet=True, rerank=rerank)["written"] == 7


def test_no_batch_is_kept_while_waiting_for_another_run_s_batch(tiny, tmp_path, monkeypatch):
    """Two runs that each kept a batch while waiting for the other's would wait forever: before waiting, the
    kept batch's writes are finished and its lock released. Here the first batch looks taken by another run."""
    from zalo_music import batches
    from zalo_music import generate as g

    texts = write_demo_texts(tmp_path, 7, seed=4)
    gen = g.GenerationConfig(duration=1.0, batch_size=3, seed=5)
    real_acquire = batches.BatchLocks.acquire
    taken: list = []
    waits: list[int] = []

    def acquire(self, batch, block):
        if not taken:
            taken.append(self._offset(batch))
        if self._offset(batch) == taken[0] and not block:
            return False  # another run on the folder is generating it
        if block:
            waits.append(len(self.kept))
        return real_acquire(self, batch, block)

    monkeypatch.setattr(g, "_overlap_writes", lambda model: True)
    monkeypatch.setattr(batches.BatchLocks, "acquire", acquire)
    summary = g.generate("tiny", texts, tmp_path / "out", gen, model=tiny, quiet=True)
    assert summary["written"] == 7
    assert waits == [0]  # one wait, for the batch the other run had, with no batch of ours kept


def test_writes_overlap_only_where_the_lm_runs_on_a_gpu(tiny):
    from types import SimpleNamespace

    from zalo_music.generate import _overlap_writes

    assert _overlap_writes(SimpleNamespace(device="cuda:0"))
    assert not _overlap_writes(tiny)  # the CPU: the LM and LAME take turns on the cores
    assert not _overlap_writes(SimpleNamespace())  # a stand-in model with no device: no overlap
