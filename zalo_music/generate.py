"""`zalo-music generate`: one MP3 per description, batched, resumable, sharded, deterministic.

Determinism: items are sorted by id and cut into fixed batches of `batch_size`; each batch is seeded from
(seed, its ids). A batch is skipped only when all its files exist, otherwise it is regenerated whole, so an
interrupted run finishes with the same bytes as an uninterrupted one (for the same batch size and device).
`--shard i/n` hands out those whole batches (batch k to shard k mod n), so the shards' files together are
the unsharded run's bytes.

Safety: every MP3 is re-read before its atomic rename (container, rate, mono, exact frame count, decodes to
its end), and a rerun re-checks existing files the same way and regenerates the ones that fail (a clip cut short
by a full disk is never kept). Ids whose file name cannot be written are refused before the model loads. A
failure inside one batch or clip becomes those ids' reason; the other batches go on. Concurrent runs on one
`--out` share the work through per-batch locks instead of both generating everything.

Speed: the LM samples a whole batch at once; the per-clip work (CPU codec decode, resampling, MP3
encoding) runs one clip per core in a thread pool (torch and LAME release the GIL).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import errno
import fcntl
import functools
import glob
import hashlib
import os
import pickle
import time
import typing as tp
import warnings
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from . import decoding
from .data.zalo_json import MAX_DESCRIPTION_CHARS, check_test_item, read_zalo_json
from .decoding import GenerationConfig  # declared in decoding.py, with every option's help and range
from .decoding import from_cfg as generation_config_from_cfg
from .fileio import AudioCheckError, DiskFull, atomic_path, check_audio, write_json
from .metrics.eval_settings import rerank_options_from_cfg  # noqa: F401  (re-exported: generation's settings)

# MAX_DESCRIPTION_CHARS (data/zalo_json.py): a first, model-free bound on the work per description;
# `text_truncator` then cuts to the encoder's tokens.
#: T5's training length: what MusicGen's text encoder takes (audiocraft's T5Conditioner never truncates).
T5_MAX_TOKENS = 512
PEAK = 10 ** (-1.0 / 20)  # -1 dBFS: no clipping after MP3 encoding


def from_xp(sig: str) -> tuple[str, GenerationConfig, tp.Any, dict]:
    """What `generate --from-xp SIG` reuses: the model an XP scored, its decoding and its reranking CLAP.

    An eval-only XP (`execute_only=evaluate`) scores its `continue_from` (`//sig/<S>` of a training XP, or
    `//pretrained/<name>`); any other XP scores its own best state (`//sig/SIG`).

    Args:
        sig: the XP's Dora signature.
    Returns:
        `(model spec for load_model, GenerationConfig, RerankOptions, info)`; info holds the XP's last evaluate
        metrics (when it has some) and its folder.
    Raises:
        ValueError: unknown signature, or an XP whose `continue_from` is not a model `generate` can load.
    """
    import json as _json

    from .train import main

    try:
        xp = main.get_xp_from_sig(sig)
    except Exception as exc:  # noqa: BLE001 - dora raises a bare RuntimeError for unknown signatures
        raise ValueError(f"--from-xp {sig}: no such XP in {main.dora.dir}/xps ({exc})") from exc
    cfg = xp.cfg
    source = cfg.get("continue_from") if cfg.get("execute_only") == "evaluate" else None
    if source is None:
        spec = f"//sig/{sig}"
    elif str(source).startswith("//pretrained/"):
        spec = str(source)[len("//pretrained/"):]
    else:
        spec = str(source)
    from .metrics.eval_settings import reference_path

    reference = reference_path(cfg)
    info: dict = {"folder": str(xp.folder), "model": spec}
    history = xp.folder / "history.json"
    if history.is_file():
        evals = [h["evaluate"] for h in _json.loads(history.read_text()) if "evaluate" in h]
        if evals:
            info["evaluate"] = evals[-1]
    return spec, generation_config_from_cfg(cfg), rerank_options_from_cfg(cfg, reference), info


def load_model(spec: str, device: str | None = None):
    """A MusicGen from a hub name (`facebook/musicgen-small`), an exported folder, or `//sig/<S>`.

    Args:
        spec: model reference.
        device: torch device (default: cuda if available).
    """
    from .runtime import prepare

    prepare()  # audiocraft's environment, import guard and safe-load allow-list, before audiocraft (notebooks)
    from audiocraft.models import MusicGen

    from . import env
    from .export import export_xp
    from .patches import allow_short_segment_musicgen

    allow_short_segment_musicgen()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    from .patches import check_safe_loading

    check_safe_loading()
    if spec.startswith("//sig/") or (Path(spec).is_dir() and (Path(spec) / "checkpoint.th").is_file()):
        sig = spec[len("//sig/"):] if spec.startswith("//sig/") else Path(spec).name
        spec = str(export_xp(spec, env.dora_dir() / "exports" / sig))
    try:
        return MusicGen.get_pretrained(spec, device=device)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"--model {spec}: a model file holds objects the safe loader refuses "
                         f"({str(exc).splitlines()[0][:160]}); only load models you trust") from exc
    except (EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"--model {spec}: a model file is truncated or corrupt ({exc}); re-export it") from exc
    except RuntimeError as exc:
        if "PytorchStreamReader" in str(exc) or "zip archive" in str(exc):
            raise ValueError(f"--model {spec}: a model file is truncated or corrupt "
                             f"({str(exc).splitlines()[0][:160]}); re-export it") from exc
        raise


def check_items(descriptions: dict, out_dir: Path) -> tuple[list[tuple[str, str, Path]], dict[str, str]]:
    """Valid (id, text, output path) items sorted by id, and a reason for each refused id."""
    items, errors = [], {}
    for key, text in descriptions.items():
        try:  # the same check as prepare-test: ids stay inside out_dir, storable, .mp3, usable description
            target = check_test_item(out_dir, key, text)
        except ValueError as exc:
            errors[key] = str(exc)
            continue
        if len(text) > MAX_DESCRIPTION_CHARS:
            warnings.warn(f"{key}: description of {len(text)} characters truncated to {MAX_DESCRIPTION_CHARS}",
                          stacklevel=2)
            text = text[:MAX_DESCRIPTION_CHARS]
        items.append((key, text, target))
    items.sort(key=lambda it: it[0])
    return items, errors


def make_batches(items: list, batch_size: int) -> list[list]:
    """The sorted items cut into consecutive batches of `batch_size` (the last one may be shorter).

    Args:
        items: (id, text, output path) items, sorted by id (`check_items`).
        batch_size: items per batch (>= 1).
    """
    return [items[k:k + batch_size] for k in range(0, len(items), batch_size)]


def shard(batches: list[list], spec: str | None) -> list[list]:
    """The batches of shard `i/n` (0-based): batch k of the unsharded run goes to shard k mod n.

    Whole batches, never items: a batch's seed comes from its ids (`batch_seed`), so a shard must hold exactly
    the batches the unsharded run builds, cut from the full sorted item list *before* sharding. Then the union of
    the shards' files is byte-identical to an unsharded run (same batch size and device). Round-robin rather than
    contiguous ranges so that shards stay balanced when batches cost differently along the sorted ids.

    Args:
        batches: every batch of the run, from `make_batches` on the full sorted item list.
        spec: the `--shard` value `i/n`, or None/"" for all batches.
    """
    if not spec:
        return batches
    i, n = parse_shard(spec)
    return batches[i::n]


def parse_shard(spec: str) -> tuple[int, int]:
    """`"i/n"` -> (i, n), with a clear error for anything else.

    Args:
        spec: the `--shard` value.
    """
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard {spec!r}: expected i/n with integers 0 <= i < n, e.g. 0/2") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {spec}: expected i/n with 0 <= i < n")
    return i, n


def text_truncator(model) -> tp.Callable[[str], tuple[str, int]]:
    """A function `text -> (text cut to what the model's text encoder takes, original token count or 0)`.

    audiocraft's T5Conditioner (audiocraft/modules/conditioners.py) tokenizes without truncation, so a very long
    description would reach T5 beyond the 512 tokens it was trained on. Models whose description conditioner
    has no T5 tokenizer (the LUT of the tiny recipe) take any text: identity.

    Args:
        model: a MusicGen.
    """
    providers = getattr(getattr(model, "lm", None), "condition_provider", None)
    conditioners = getattr(providers, "conditioners", {})  # an nn.ModuleDict: no .get()
    conditioner = conditioners["description"] if "description" in conditioners else None
    tokenizer = getattr(conditioner, "t5_tokenizer", None)
    if tokenizer is None:
        return lambda text: (text, 0)
    # tokenizers built from a bare vocabulary report a huge sentinel: fall back to T5's length
    limit = tokenizer.model_max_length if tokenizer.model_max_length <= 100_000 else T5_MAX_TOKENS

    def truncate(text: str) -> tuple[str, int]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) < limit:  # one position is left for the end-of-sequence token
            return text, 0
        return tokenizer.decode(ids[:limit - 1], skip_special_tokens=True), len(ids)

    return truncate


def batch_seed(seed: int, keys: list[str]) -> int:
    digest = hashlib.sha256((str(seed) + "\n" + "\n".join(keys)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**63)


def postprocess(wav: torch.Tensor, from_rate: int, to_rate: int, duration: float) -> np.ndarray:
    """Mono float32 at `to_rate`, exactly `duration` seconds, peak-normalised to -1 dBFS."""
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


def write_mp3(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write a mono MP3 atomically, refusing to commit it unless it reads back complete.

    Args:
        path: destination.
        audio: float samples.
        sample_rate: its rate.
    """
    def verify(tmp: Path) -> None:
        problem = clip_problem(tmp, sample_rate, audio.shape[-1] / sample_rate)
        if problem:
            raise OSError(f"{path}: the MP3 written does not read back ({problem}); is the disk full?")

    with atomic_path(path, verify=verify) as tmp:
        sf.write(str(tmp), audio, sample_rate, format="MP3")


def generate_batch(model, texts: list[str], decoder: str = "fast") -> torch.Tensor:
    """Waveforms [B, C, T] for `texts`: all tokens in one batched LM pass, then the codec decode.

    This is audiocraft's `BaseGenModel.generate` (audiocraft/models/genmodel.py, 1.3.0) split in its two
    stages, because the decode parallelises differently from the LM. The tokens come from
    `fast_decoder.generate_tokens` (the same codes for the same seed) or, with `decoder="audiocraft"`, from
    audiocraft's own loop. On GPU the batch is decoded in one call.
    On CPU a batched decode gains nothing (the codec's 1-D convolutions are compute-bound and their
    activations over 10 s of audio leave the cache as the batch grows), so the clips are decoded in parallel
    instead, one per core, each single-threaded (see `_cpu_pool`).

    Args:
        model: a MusicGen with its generation parameters set.
        texts: descriptions.
        decoder: one of `fast_decoder.DECODERS`.
    """
    from . import fast_decoder

    attributes, prompt_tokens = model._prepare_tokens_and_attributes(texts, None)
    fast_decoder.check_decoder(decoder)
    if decoder == "fast":
        tokens = fast_decoder.generate_tokens(model, attributes)
    else:
        tokens = model._generate_tokens(attributes, prompt_tokens, progress=False)
    if tokens.device.type != "cpu":
        return model.generate_audio(tokens)
    pool = _cpu_pool(torch.get_num_threads())
    return torch.cat(list(pool.map(_decode_one, [model] * len(tokens), tokens.split(1))))


@functools.lru_cache(maxsize=2)
def _cpu_pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    # Per-clip work (CPU decode, resampling, MP3 encoding) runs here, one clip per core. torch's intra-op
    # thread count is per thread, so each worker stays on one core: on 2 cores the debug codec decodes 16
    # clips in 0.27 s this way vs 0.83 s as one batched call (scripts/bench_generate.py, `decode`).
    # torch ops and libsndfile release the GIL.
    return concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="clip",
                                                 initializer=torch.set_num_threads, initargs=(1,))


def _decode_one(model, tokens: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.generate_audio(tokens)


def remove_stale_temps(items: list[tuple[str, str, Path]]) -> int:
    """Delete the temporary files a killed run left for these items (`fileio.atomic_path` names them
    `.<id>.<random>.tmp<suffix>`); only these items', because other shards may be writing beside them.

    Args:
        items: (id, text, output path) of this run.
    Returns:
        How many files were removed.
    """
    removed = 0
    for key, _, target in items:
        for tmp in target.parent.glob(f".{glob.escape(key)}.*.tmp{glob.escape(target.suffix)}"):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def generate(model_spec: str, json_path: str | Path, out_dir: str | Path, gen: GenerationConfig | None = None,
             shard_spec: str | None = None, device: str | None = None, model=None, quiet: bool = False,
             rerank=None) -> dict:
    """Generate one MP3 per description (best of `gen.candidates` by CLAP when it is above 1).

    Args:
        model_spec: hub name, exported folder or `//sig/<S>`.
        json_path: `{"<id>.mp3": "<description>"}`.
        out_dir: output folder (files named by the ids).
        gen: sampling options.
        shard_spec: `i/n` to do only every n-th batch starting at batch i (`shard`).
        device: torch device.
        model: an already loaded MusicGen (tests, benchmarks).
        quiet: no progress bar.
        rerank: `rerank.RerankOptions` for `gen.candidates` > 1 (default: the judge's default CLAP).
    Returns:
        Summary: counts, timings, refused ids (and, best-of-N, the report's summary).
    """
    from tqdm import tqdm

    gen = gen or GenerationConfig()
    if gen.batch_size < 1:
        raise ValueError(f"--batch-size {gen.batch_size}: must be at least 1")
    if not gen.duration > 0 or gen.sample_rate <= 0:
        raise ValueError(f"--duration {gen.duration} / --sample-rate {gen.sample_rate}: must be positive")
    from .fast_decoder import check_decoder, check_supported

    check_decoder(gen.decoder)
    best_of = gen.candidates > 1
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    descriptions, duplicates = read_zalo_json(json_path)
    items, errors = check_items({k: v for k, v in descriptions.items() if k not in duplicates}, out)
    errors.update({k: f"duplicate id ({n} times in the JSON)" for k, n in duplicates.items()})
    # Batch first, then shard: sharding items would regroup them into other batches, with other seeds.
    batches = shard(make_batches(items, gen.batch_size), shard_spec)
    items = [it for batch in batches for it in batch]  # this shard's items (temp cleanup below)
    stale = remove_stale_temps(items)
    invalid: list[str] = []
    settings: dict = {}
    if best_of:
        from . import rerank as rr

        rerank = rerank or rr.RerankOptions()
        # Everything the chosen bytes depend on: a resumed run with other settings would mix two experiments.
        # (not the decoder: both decoders draw the same codes, tests/test_fast_decoder.py)
        settings = {**{k: v for k, v in vars(gen).items() if k != "decoder"}, **rerank.settings()}
        rr.check_settings(out, settings)

    def unfinished(batch: list) -> bool:
        bad = False
        # best-of-N: a clip is finished only once the report records its choice (the report is written after
        # the clip, so a run killed in between regenerates the batch: same seed, same bytes).
        recorded = (rr.read_report(out) or {}).get("items", {}) if best_of else None
        for key, _, target in batch:
            if target.exists():
                problem = clip_problem(target, gen.sample_rate, gen.duration)
                if problem is None and (recorded is None or key in recorded):
                    continue
                if problem is None:
                    bad = True
                    continue
                if key not in invalid:
                    invalid.append(key)
                    warnings.warn(f"{target}: existing file is not a finished clip ({problem}): regenerating it",
                                  stacklevel=3)
            bad = True
        return bad

    todo = [b for b in batches if unfinished(b)]
    start = time.time()
    reranker = rerank.build() if best_of and todo else None  # before the model: fail fast on a missing CLAP
    if todo and model is None:
        model = load_model(model_spec, device)
    if model is not None:
        model.set_generation_params(**gen.sampling_params())
        if todo and gen.decoder == "fast":
            check_supported(model)  # one clear error before any batch, not one failure per batch
    written = 0
    failed: dict[str, str] = {}
    bar = tqdm(total=sum(len(b) for b in todo), desc="generate", unit="clip", disable=quiet)
    pool = _cpu_pool(torch.get_num_threads())
    truncate = text_truncator(model) if model is not None else None
    truncated: list[str] = []
    by_other = 0

    def run_batch(batch: list) -> int:
        texts = []
        for key, text, _ in batch:
            text, n_tokens = truncate(text)
            if n_tokens and key not in truncated:
                truncated.append(key)
                warnings.warn(f"{key}: description of {n_tokens} tokens truncated to what the text encoder "
                              f"takes ({len(text)} characters kept)", stacklevel=3)
            texts.append(text)
        if best_of:  # item-major: the N candidates of an item are consecutive rows of one batched LM pass
            texts = [t for t in texts for _ in range(gen.candidates)]
        torch.manual_seed(batch_seed(gen.seed, [k for k, _, _ in batch]))
        try:
            with torch.inference_mode():  # no autograd bookkeeping at all: faster than no_grad on CPU
                wavs = generate_batch(model, texts, gen.decoder).cpu()
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - this batch's ids get the reason, the next batch goes on
            for key, _, _ in batch:
                failed[key] = f"generation failed: {type(exc).__name__}: {str(exc)[:200]}"
            return 0
        if best_of:
            return run_candidates(batch, wavs)
        # The clips are encoded side by side, one per core, and only then does the next batch start:
        # overlapping LAME with the LM on a small CPU starves torch's threads and is slower overall.
        futures = {key: pool.submit(_write_one, target, wav, model.sample_rate, gen)
                   for (key, _, target), wav in zip(batch, wavs, strict=True)}
        done = 0
        try:
            for key, fut in futures.items():
                try:
                    done += fut.result()
                except OSError as exc:
                    if exc.errno in (28, 122):  # ENOSPC, EDQUOT: every later clip would fail the same way
                        raise
                    failed[key] = f"cannot write: {exc}"
                except Exception as exc:  # noqa: BLE001
                    failed[key] = f"cannot write: {type(exc).__name__}: {str(exc)[:200]}"
        finally:  # on an error that ends the run, let the batch's other clips land (atomically) first
            concurrent.futures.wait(list(futures.values()))
        return done

    def run_candidates(batch: list, wavs: torch.Tensor) -> int:
        n = gen.candidates
        files = [[rr.candidate_path(target, i) for i in range(n)] for _, _, target in batch]
        futures = {(j, i): pool.submit(_write_candidate, files[j][i], wavs[j * n + i], model.sample_rate, gen)
                   for j in range(len(batch)) for i in range(n)}
        bad: dict[str, str] = {}
        try:
            for (j, _), fut in futures.items():
                try:
                    fut.result()
                except OSError as exc:
                    if exc.errno in (28, 122):  # ENOSPC, EDQUOT
                        raise
                    bad.setdefault(batch[j][0], f"cannot write: {exc}")
                except Exception as exc:  # noqa: BLE001
                    bad.setdefault(batch[j][0], f"cannot write: {type(exc).__name__}: {str(exc)[:200]}")
            keep = [j for j, (key, _, _) in enumerate(batch) if key not in bad]
            done, records = 0, {}
            if keep:
                try:  # the judge's text: the JSON's description, as `score` reads it
                    chosen = reranker.choose([descriptions[batch[j][0]] for j in keep], [files[j] for j in keep])
                except (KeyboardInterrupt, MemoryError):
                    raise
                except Exception as exc:  # noqa: BLE001 - this batch's ids get the reason
                    for j in keep:
                        bad[batch[j][0]] = f"CLAP reranking failed: {type(exc).__name__}: {str(exc)[:200]}"
                    chosen, keep = [], []
                for j, rec in zip(keep, chosen, strict=True):
                    key, _, target = batch[j]
                    try:
                        _commit_candidate(files[j][rec["chosen"]], target, gen)
                    except OSError as exc:
                        if exc.errno in (28, 122):
                            raise
                        bad[key] = f"cannot write: {exc}"
                        continue
                    records[key] = rec
                    done += 1
            if records:
                locks.report_lock_update(out, settings, records)
        finally:
            concurrent.futures.wait(list(futures.values()))
            for group in files:
                for f in group:
                    f.unlink(missing_ok=True)
        failed.update(bad)
        return done

    try:
        with _BatchLocks(out) as locks:
            for batch in locks.held(todo):
                if unfinished(batch):  # re-checked under the lock: the other run may just have finished it
                    written += run_batch(batch)
                else:
                    by_other += len(batch)
                bar.update(len(batch))
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise _disk_need(exc, out, items, gen) from exc
    bar.close()
    seconds = time.time() - start
    audio_seconds = written * gen.duration
    errors.update(failed)
    report = rr.read_report(out) if best_of else None
    summary = {"total": len(items), "written": written, "candidates": gen.candidates,
               "skipped_existing": len(items) - sum(len(b) for b in todo), "by_other_run": by_other,
               "regenerated_invalid": invalid, "refused": errors, "failed": sorted(failed),
               "truncated": truncated, "stale_temps_removed": stale, "seconds": round(seconds, 2),
               "out_dir": str(out),
               "realtime_factor": round(seconds / audio_seconds, 4) if audio_seconds else None}
    if report is not None:
        summary["rerank"] = report.get("summary", {})
        summary["report"] = str(out / rr.REPORT_NAME)
    summary["failures_file"] = _write_failures(out, shard_spec, {k: v for k, v in errors.items() if k not in failed},
                                               failed)
    if not quiet:
        print(f"generated {written} clips ({summary['skipped_existing']} already there, {by_other} by another "
              f"run, {len(errors) - len(failed)} refused, {len(failed)} failed) in {seconds:.1f}s -> {out}")
        if stale:
            print(f"  removed {stale} temporary files an interrupted run had left")
        if invalid:
            print(f"  {len(invalid)} existing files were not finished clips and were regenerated "
                  f"(first: {invalid[:3]})")
        shown = sorted(errors.items(), key=lambda kv: (kv[0] not in failed, kv[0]))[:10]  # failures first
        for k, why in shown:
            print(f"  {'failed' if k in failed else 'refused'} {k!r}: {why!r}")
        if errors:
            more = f"the other {len(errors) - len(shown)} and " if len(errors) > len(shown) else ""
            print(f"  {more}all of them in full: {summary['failures_file']}")
        if report is not None and report.get("summary", {}).get("n"):
            r = report["summary"]
            print(f"best-of-{gen.candidates}: {r['n']} clips chosen by CLAP, mean CLAP {r['mean_clap_chosen']:.4f} "
                  f"chosen vs {r['mean_clap_first']:.4f} for candidate 0 (mean of all {r['mean_clap_all']:.4f}); "
                  f"report {summary['report']}")
    return summary


def _write_failures(out: Path, shard_spec: str | None, refused: dict[str, str], failed: dict[str, str]) -> str | None:
    """Write every refused and failed id with its reason to `<out>/failures.json` (one file per shard); remove a
    previous run's file when nothing failed. Returns its path, or None.

    Args:
        out: the output folder.
        shard_spec: `i/n` when this run is one shard.
        refused: ids whose input cannot be generated, with the reason.
        failed: ids whose generation or write failed (a rerun retries them), with the reason.
    """
    suffix = f".shard{shard_spec.replace('/', 'of')}" if shard_spec else ""
    path = out / f"failures{suffix}.json"
    if not refused and not failed:
        path.unlink(missing_ok=True)
        return None
    write_json(path, {"refused": dict(sorted(refused.items())), "failed": dict(sorted(failed.items()))})
    return str(path)


class _BatchLocks:
    """Per-batch advisory locks shared by every `generate` writing into one folder.

    One lock file inside the output folder (`.generate.lock`: shards on different machines sharing a network
    `--out` see the same file, where a file in each machine's temp folder would lock nothing), one POSIX
    byte-range lock (fcntl, which NFS and Lustre carry across clients) per batch at an offset derived from the
    batch's ids: two runs on the same `--out` (with or without the same shards) never generate the same batch
    at once, and a lock held by a killed run is released by the kernel.
    """

    #: The lock file's name in `--out` (a dot file: no audio reader or ZIP ever lists it).
    NAME = ".generate.lock"

    def __init__(self, out: Path) -> None:
        self.path = out / self.NAME
        self.fd = -1

    def __enter__(self) -> _BatchLocks:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def held(self, batches: list) -> tp.Iterator[list]:
        """Each batch with its lock held while the caller's loop body runs: the free ones first, then, waiting for
        the other run, those it held (it may have finished them: the caller re-checks)."""
        deferred = []
        for batch in batches:
            if not self.acquire(batch, block=False):  # another run on this --out is generating it
                deferred.append(batch)
                continue
            try:
                yield batch
            finally:
                self.release(batch)
        for batch in deferred:
            self.acquire(batch, block=True)
            try:
                yield batch
            finally:
                self.release(batch)

    @staticmethod
    def _offset(batch: list) -> int:
        return batch_seed(0, [k for k, _, _ in batch]) % (2**40)

    def acquire(self, batch: list, block: bool) -> bool:
        flags = fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB)
        try:
            fcntl.lockf(self.fd, flags, 1, self._offset(batch))
        except OSError:
            return False
        return True

    def release(self, batch: list) -> None:
        with contextlib.suppress(OSError):
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, self._offset(batch))

    #: Byte of the lock file guarding the best-of-N report (batch offsets are below 2**40).
    REPORT_OFFSET = 2**40 + 1

    @contextlib.contextmanager
    def report_lock(self) -> tp.Iterator[None]:
        """Held while a run reads, merges and rewrites the folder's best-of-N report."""
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, self.REPORT_OFFSET)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, self.REPORT_OFFSET)

    def report_lock_update(self, out: Path, settings: dict, records: dict) -> None:
        """Merge a batch's best-of-N records into the report under the report lock.

        Args:
            out: the output folder.
            settings: the run's settings.
            records: `{id: record}`.
        """
        from .rerank import update_report

        update_report(out, settings, records, self.report_lock())


def _write_candidate(path: Path, wav: torch.Tensor, model_rate: int, gen: GenerationConfig) -> None:
    # Encoded exactly as `_write_one` encodes a clip, so the bytes the judge scores are the bytes committed.
    audio = postprocess(wav, model_rate, gen.sample_rate, gen.duration)
    sf.write(str(path), audio, gen.sample_rate, format="MP3")
    problem = clip_problem(path, gen.sample_rate, audio.shape[-1] / gen.sample_rate)
    if problem:
        raise OSError(f"{path}: the candidate MP3 written does not read back ({problem}); is the disk full?")


def _commit_candidate(candidate: Path, target: Path, gen: GenerationConfig) -> None:
    """Copy the chosen candidate's bytes onto the output name, atomically and verified like `write_mp3`."""
    import shutil

    def verify(tmp: Path) -> None:
        problem = clip_problem(tmp, gen.sample_rate, gen.duration)
        if problem:
            raise OSError(f"{target}: the MP3 written does not read back ({problem}); is the disk full?")

    with atomic_path(target, verify=verify) as tmp:
        shutil.copyfile(candidate, tmp)


def _disk_need(exc: OSError, out: Path, items: list, gen: GenerationConfig) -> DiskFull:
    """A full disk met by `generate`, naming the room the clips not yet in `out` need: the mean size of those
    there, or, with none yet, the size of a clip at MP3's highest bitrate (320 kb/s)."""
    full = exc if isinstance(exc, DiskFull) else DiskFull(out, Path(exc.filename or "").name or "a clip", None)
    sizes = [t.stat().st_size for _, _, t in items if t.exists()]
    left = len(items) - len(sizes)
    if sizes:
        return full.with_need(left, "clips", sum(sizes) / len(sizes))
    return full.with_need(left, "clips", 320_000 / 8 * gen.duration, bound="at most")


def _write_one(target: Path, wav: torch.Tensor, model_rate: int, gen: GenerationConfig) -> bool:
    if target.exists() and clip_problem(target, gen.sample_rate, gen.duration) is None:
        return False  # a finished clip from an earlier run (identical bytes: same seed, same batch)
    write_mp3(target, postprocess(wav, model_rate, gen.sample_rate, gen.duration), gen.sample_rate)
    return True


def settings_from_args(args: tp.Any) -> tuple[str, GenerationConfig, tp.Any]:
    """Model, decoding and reranking of a `zalo-music generate` command line, `--from-xp` applied.

    With `--from-xp SIG` the model, the `zalo.generate.*` decoding, `zalo.eval.candidates` and the evaluate CLAP
    come from that XP, so the submission is generated exactly as the XP was scored. An option left at its
    default takes the XP's value; an option given with another value than the XP's is refused (naming it).
    `args.duration` / `args.sample_rate` are updated to what will be generated (the ZIP validator reads them).

    Args:
        args: the parsed command line.
    Returns:
        `(model spec, GenerationConfig, RerankOptions)`.
    Raises:
        ValueError: an option contradicts `--from-xp`, or the XP is unknown.
    """
    from .metrics.clap import ClapSpec
    from .rerank import RerankOptions

    if getattr(args, "from_xp", None):
        spec, gen, rerank, info = from_xp(args.from_xp)
        wanted = {**vars(gen), "model": spec, "clap_checkpoint": rerank.clap.checkpoint,
                  "clap_model": rerank.clap.amodel, "fas_weight": rerank.fas_weight}
        defaults = {**decoding.XP_OPTIONS, "model": "facebook/musicgen-small", "clap_checkpoint": None,
                    "clap_model": "HTSAT-base", "fas_weight": 0.0}
        # the decoder is the user's choice, not the XP's: both draw the same codes (tests/test_fast_decoder.py)
        gen = dataclasses.replace(gen, decoder=getattr(args, "decoder", gen.decoder))
        for name, default in defaults.items():
            given = getattr(args, name, default)
            if given != default and given != wanted[name]:
                raise ValueError(f"--{name.replace('_', '-')} {given}: --from-xp {args.from_xp} was scored with "
                                 f"{wanted[name]!r}; drop the option (the submission is generated as the XP was "
                                 "scored) or generate without --from-xp")
        if getattr(args, "rerank_reference", None):
            rerank = dataclasses.replace(rerank, reference=args.rerank_reference)
        scored = info.get("evaluate", {})
        print(f"--from-xp {args.from_xp}: model {spec}, {gen}, CLAP {rerank.clap.amodel} "
              f"{rerank.clap.checkpoint or '(default)'}"
              + (f"; the XP scored clas {scored['clas']:.4f} (clap {scored.get('clap', float('nan')):.4f})"
                 if "clas" in scored else ""))
        args.duration, args.sample_rate = gen.duration, gen.sample_rate
        return spec, gen, rerank
    from .metrics.clap import resolve_reference

    gen = decoding.from_args(args)
    # the reference statistics of the FAS-aware objective are cached where `score` caches them
    cache = str(resolve_reference("//reference/fad_stats", create=True)) if args.fas_weight > 0 else None
    rerank = RerankOptions(clap=ClapSpec(checkpoint=args.clap_checkpoint, amodel=args.clap_model,
                                         device=args.device),
                           fas_weight=args.fas_weight, reference=args.rerank_reference, stats_cache=cache)
    return args.model, gen, rerank
