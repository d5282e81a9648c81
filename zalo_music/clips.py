"""One generated clip, from the model's waveform to a committed MP3 that reads back complete.

Every MP3 a run keeps goes through here: `postprocess` (mono, the submission's rate and exact length, -1 dBFS
peak), then an atomic write that is re-read (container, rate, mono, exact frame count, decodes to its end)
before its rename. A clip cut short by a full disk is never committed, and `clip_problem` is also what a rerun
uses to decide whether an existing file is finished.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .decoding import GenerationConfig
from .fileio import AudioCheckError, atomic_path, check_audio

PEAK = 10 ** (-1.0 / 20)  # -1 dBFS: no clipping after MP3 encoding


def postprocess(wav: torch.Tensor, from_rate: int, to_rate: int, duration: float) -> np.ndarray:
    """Mono float32 at `to_rate`, exactly `duration` seconds, peak-normalised to -1 dBFS.

    Args:
        wav: `[C, T]` or `[T]` samples at `from_rate`.
        from_rate: the model's rate.
        to_rate: the clip's rate.
        duration: the clip's seconds (cut or zero-padded to it).
    """
    import julius

    x = wav.float().mean(dim=0) if wav.dim() == 2 else wav.float()
    if from_rate != to_rate:
        x = julius.resample_frac(x, from_rate, to_rate)
    n = int(round(duration * to_rate))
    x = torch.nn.functional.pad(x[:n], (0, max(0, n - x.shape[-1])))
    y = x.cpu().numpy()
    peak = float(np.abs(y).max()) if y.size else 0.0
    if peak > 1e-6:
        y = y / peak * PEAK
    return y.astype(np.float32)


def clip_problem(path: Path, sample_rate: int, duration: float) -> str | None:
    """Why an MP3 is not a finished clip (None when it is): container, rate, mono, exact length, decodes.

    libsndfile writes MP3s of exactly `round(duration * rate)` frames; a shorter decode means a truncated
    write (a full disk that LAME's flush did not report). Decoding a 10-s clip takes ~5 ms.

    Args:
        path: the MP3.
        sample_rate: expected rate.
        duration: expected seconds.
    """
    try:
        check_audio(path, sample_rate=sample_rate, channels=1, frames=int(round(duration * sample_rate)),
                    container="MP3", deep=True)
    except AudioCheckError as exc:
        return str(exc)
    return None


def _verifier(target: Path, sample_rate: int, duration: float):
    """The check `atomic_path` runs on the temporary file before renaming it onto `target`."""
    def verify(tmp: Path) -> None:
        problem = clip_problem(tmp, sample_rate, duration)
        if problem:
            raise OSError(f"{target}: the MP3 written does not read back ({problem}); is the disk full?")

    return verify


def write_mp3(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write a mono MP3 atomically, refusing to commit it unless it reads back complete.

    Args:
        path: destination.
        audio: float samples.
        sample_rate: its rate.
    """
    with atomic_path(path, verify=_verifier(path, sample_rate, audio.shape[-1] / sample_rate)) as tmp:
        sf.write(str(tmp), audio, sample_rate, format="MP3")


def write_clip(target: Path, wav: torch.Tensor, model_rate: int, gen: GenerationConfig) -> bool:
    """Post-process and write one clip unless a finished one is already there.

    Args:
        target: the clip's path.
        wav: the model's waveform.
        model_rate: its rate.
        gen: the run's settings (rate and duration of the clip).
    Returns:
        Whether a file was written.
    """
    if target.exists() and clip_problem(target, gen.sample_rate, gen.duration) is None:
        return False  # a finished clip from an earlier run (identical bytes: same seed, same batch)
    write_mp3(target, postprocess(wav, model_rate, gen.sample_rate, gen.duration), gen.sample_rate)
    return True


def write_candidate(path: Path, wav: torch.Tensor, model_rate: int, gen: GenerationConfig) -> None:
    """One best-of-N candidate, encoded exactly as `write_clip` encodes a clip, so the bytes the judge scores
    are the bytes committed (written in place: candidates are temporary files the run removes).

    Args:
        path: the candidate's file (`rerank.candidate_path`).
        wav: the model's waveform.
        model_rate: its rate.
        gen: the run's settings.
    """
    audio = postprocess(wav, model_rate, gen.sample_rate, gen.duration)
    sf.write(str(path), audio, gen.sample_rate, format="MP3")
    problem = clip_problem(path, gen.sample_rate, audio.shape[-1] / gen.sample_rate)
    if problem:
        raise OSError(f"{path}: the candidate MP3 written does not read back ({problem}); is the disk full?")


def commit_candidate(candidate: Path, target: Path, gen: GenerationConfig) -> None:
    """Copy the chosen candidate's bytes onto the output name, atomically and verified like `write_mp3`.

    Args:
        candidate: the chosen candidate's file.
        target: the clip's path.
        gen: the run's settings.
    """
    with atomic_path(target, verify=_verifier(target, gen.sample_rate, gen.duration)) as tmp:
        shutil.copyfile(candidate, tmp)
