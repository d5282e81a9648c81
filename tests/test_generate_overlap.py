"""MP3s written while the next batch is generated (on a GPU): the same files, each batch locked until written.

`generate._overlap_writes` turns it on where the LM runs on CUDA; here it is forced on the CPU, and the clip
writer waits for the next batch's LM pass to start, so the test only passes if the writes really overlap it.
"""

from __future__ import annotations

import threading

import pytest

from tests.helpers import clap_fixture  # noqa: F401  (points HF_HOME at the stand-in cache: import first)
from tests.helpers.data import write_demo_texts


@pytest.fixture(scope="module")
def tiny(tiny_random_musicgen):
    return tiny_random_musicgen


def test_overlapped_writes_give_the_same_files_and_keep_each_batch_locked_until_written(tiny, tmp_path,
                                                                                        monkeypatch):
    from zalo_music import batches, clips
    from zalo_music import generate as g

    texts = write_demo_texts(tmp_path, 7, seed=4)
    gen = g.GenerationConfig(duration=1.0, batch_size=3, seed=5)
    assert g.generate("tiny", texts, tmp_path / "turns", gen, model=tiny, quiet=True)["written"] == 7

    log: list[tuple] = []
    second_pass = threading.Event()
    real_batch, real_write = g.generate_batch, clips.write_clip
    real_keep, real_release = batches.BatchLocks.keep, batches.BatchLocks.release

    def lm_pass(model, rows, decoder):
        log.append(("lm", len(rows)))
        if sum(e[0] == "lm" for e in log) == 2:
            second_pass.set()
        return real_batch(model, rows, decoder)

    first_batch: set[str] = set()
    real_write_clips = g._Run.write_clips

    def write_clips(self, batch, wavs):
        if not first_batch:
            first_batch.update(target.name for _, _, target in batch)
        return real_write_clips(self, batch, wavs)

    def write(target, *args):
        first = target.name in first_batch
        if first:  # the first batch's clips wait for the second LM pass: only overlapped writes see it start
            log.append(("overlapped", second_pass.wait(timeout=5)))
        result = real_write(target, *args)
        log.append(("written", target.name, first))
        return result

    monkeypatch.setattr(g, "_overlap_writes", lambda model: True)
    monkeypatch.setattr(g, "generate_batch", lm_pass)
    monkeypatch.setattr(clips, "write_clip", write)
    monkeypatch.setattr(g._Run, "write_clips", write_clips)
    monkeypatch.setattr(batches.BatchLocks, "keep", lambda self, b: (log.append(("keep",)), real_keep(self, b)))
    monkeypatch.setattr(batches.BatchLocks, "release",
                        lambda self, b: (log.append(("release", len(self.kept))), real_release(self, b)))
    summary = g.generate("tiny", texts, tmp_path / "overlap", gen, model=tiny, quiet=True)

    assert summary["written"] == 7 and not summary["failed"]
    overlapped = [e[1] for e in log if e[0] == "overlapped"]
    assert overlapped and all(overlapped), log  # the first batch's MP3s were written during the second LM pass
    kinds = [e[0] for e in log]
    # batch 1's lock is kept past its loop body and released only once its 3 clips are written, after LM pass 2
    first_release, passes = kinds.index("release"), [i for i, k in enumerate(kinds) if k == "lm"]
    assert kinds.index("keep") < passes[1] < first_release
    assert sum(1 for e in log[:first_release] if e[0] == "written" and e[2]) == 3
    assert log[first_release] == ("release", 1)  # the kept one (the loop body's own release skipped it)
    assert kinds.count("keep") == kinds.count("release") == 3  # every batch kept, then released: none left held
    files = {p.name: p.read_bytes() for p in sorted((tmp_path / "turns").glob("*.mp3"))}
    assert {p.name: p.read_bytes() for p in sorted((tmp_path / "overlap").glob("*.mp3"))} == files
