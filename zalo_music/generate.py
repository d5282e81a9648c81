"""`zalo-music generate`: one MP3 per description, batched, resumable, sharded, deterministic.

The run reads top to bottom in `generate`: the test JSON's ids become sorted, seeded batches (`batches.py`:
determinism, sharding and the per-batch locks that let concurrent runs share one `--out`); each batch not yet
finished is sampled in one LM pass (`generate_batch`) and its clips written (`clips.py`: every MP3 is re-read
before its atomic rename, and a rerun re-checks existing files the same way). A failure inside one batch or clip
becomes those ids' reason; the other batches go on. Ids whose file name cannot be written are refused before the
model loads. Which model and decoding a run uses is read in `generate_settings.py`.

Speed: the LM samples a whole batch at once; the per-clip work (CPU codec decode, resampling, MP3
encoding) runs one clip per core in a thread pool (torch and LAME release the GIL).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import functools
import pickle
import time
import typing as tp
import warnings
import zipfile
from pathlib import Path

import torch

from . import clips
from .batch_size import CPU_BATCH, auto_batch_size
from .batches import BatchLocks, Item, batch_seed, check_items, make_batches, remove_stale_temps, shard
from .data.zalo_json import read_zalo_json
from .decoding import AUTO, GenerationConfig  # declared in decoding.py, with every option's help and range
from .fileio import DiskFull, write_json
from .procutil import usable_cores

#: T5's training length: what MusicGen's text encoder takes (audiocraft's T5Conditioner never truncates).
#: (`data/zalo_json.MAX_DESCRIPTION_CHARS` is a first, model-free bound; `text_truncator` cuts to tokens.)
T5_MAX_TOKENS = 512
#: errno values of a full disk or quota: every later clip would fail the same way, so the run stops.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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


def _text_tokenizer(model) -> tuple[tp.Any, int] | None:
    """(T5 tokenizer, the positions T5 takes) of the model's description conditioner, or None (the LUT of the tiny
    recipe has none)."""
    providers = getattr(getattr(model, "lm", None), "condition_provider", None)
    conditioners = getattr(providers, "conditioners", {})  # an nn.ModuleDict: no .get()
    conditioner = conditioners["description"] if "description" in conditioners else None
    tokenizer = getattr(conditioner, "t5_tokenizer", None)
    if tokenizer is None:
        return None
    # tokenizers built from a bare vocabulary report a huge sentinel: fall back to T5's length
    return tokenizer, tokenizer.model_max_length if tokenizer.model_max_length <= 100_000 else T5_MAX_TOKENS


def text_truncator(model) -> tp.Callable[[str], tuple[str, int]]:
    """A function `text -> (text cut to what the model's text encoder takes, original token count or 0)`.

    audiocraft's T5Conditioner (audiocraft/modules/conditioners.py) tokenizes without truncation, so a very long
    description would reach T5 beyond the 512 tokens it was trained on. Models whose description conditioner
    has no T5 tokenizer (the LUT of the tiny recipe) take any text: identity.

    Args:
        model: a MusicGen.
    """
    found = _text_tokenizer(model)
    if found is None:
        return lambda text: (text, 0)
    tokenizer, limit = found

    def truncate(text: str) -> tuple[str, int]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) < limit:  # one position is left for the end-of-sequence token
            return text, 0
        return tokenizer.decode(ids[:limit - 1], skip_special_tokens=True), len(ids)

    return truncate


def text_length(model) -> tp.Callable[[str], int]:
    """A function `text -> positions the model's text encoder gets for it` (its tokens and end-of-sequence, at most
    what it takes: a batch pads to its longest); characters for a model without a T5 tokenizer.

    Args:
        model: a MusicGen.
    """
    found = _text_tokenizer(model)
    if found is None:
        return len
    tokenizer, limit = found
    return lambda text: min(len(tokenizer(text)["input_ids"]), limit)


def generate_batch(model, texts: list[str], decoder: str = "fast") -> torch.Tensor:
    """Waveforms [B, C, T] for `texts`: all tokens in one batched LM pass, then the codec decode.

    This is audiocraft's `BaseGenModel.generate` (audiocraft/models/genmodel.py, 1.3.0) split in its two
    stages, because the decode parallelises differently from the LM. The tokens come from
    `fast_decoder.generate_tokens` (the same codes for the same seed) or, with `decoder="audiocraft"`, from
    audiocraft's own loop. On GPU the batch is decoded in calls of `DECODE_ROWS` clips (a batch of 256 in one
    call would hold tens of GB of codec activations).
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
    elif decoder == "graph":
        from . import graph_decoder

        tokens = graph_decoder.generate_tokens(model, attributes)
    else:
        tokens = model._generate_tokens(attributes, prompt_tokens, progress=False)
    if tokens.device.type != "cpu":
        return decode_in_chunks(model, tokens, DECODE_ROWS)
    pool = _cpu_pool(torch.get_num_threads())
    return torch.cat(list(pool.map(_decode_one, [model] * len(tokens), tokens.split(1))))


#: Clips per codec call on a GPU. EnCodec's last layers hold 64 channels at the audio rate: ~80 MB per 10-s clip
#: per activation in fp32, so a whole batch of 256 would ask for ~20 GB per tensor; 32 rows keep it near 2.6 GB
#: and the GPU still full.
DECODE_ROWS = 32


def decode_in_chunks(model, tokens: torch.Tensor, rows: int) -> torch.Tensor:
    """The codec decode of `tokens` [B, K, T] in calls of at most `rows` clips (each clip decodes alone in
    EnCodec, so the result is the whole batch's decode; tests/test_fast_decoder.py).

    Args:
        model: a MusicGen.
        tokens: the LM's codes.
        rows: clips per call.
    """
    return torch.cat([model.generate_audio(part) for part in tokens.split(rows)])


@functools.lru_cache(maxsize=2)
def _cpu_pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    # Per-clip work (CPU decode, resampling, MP3 encoding) runs here, one clip per core. torch's intra-op
    # thread count is per thread, so each worker stays on one core: on 2 cores the debug codec decodes 16
    # clips in 0.27 s this way vs 0.83 s as one batched call (scripts/bench_generate.py, `decode`).
    # torch ops and libsndfile release the GIL.
    return concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="clip",
                                                 initializer=torch.set_num_threads, initargs=(1,))


def _overlap_writes(model) -> bool:
    """Whether a batch's MP3s are written while the next batch is generated: where the LM runs on a GPU, whose
    host thread only feeds the device and leaves the cores to LAME. On a CPU the two would share the cores, and
    overlapping them starved torch's threads and was slower overall (measured), so there they take turns.

    Args:
        model: the loaded MusicGen.
    """
    device = getattr(model, "device", None)  # audiocraft's models record their LM's device
    return device is not None and torch.device(device).type == "cuda"


def _remove_candidates(files: list[list[Path]]) -> None:
    """Delete best-of-N's candidate files of a batch (the chosen ones were copied onto their outputs)."""
    for group in files:
        for f in group:
            f.unlink(missing_ok=True)


def _decode_one(model, tokens: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.generate_audio(tokens)


def _collect(futures: dict) -> tuple[dict, dict]:
    """Each future's result, or the reason it failed; a full disk is raised again once every future has ended
    (a batch's other clips land, atomically, before the run stops).

    Args:
        futures: `{key: future}`.
    Returns:
        `({key: result}, {key: reason})`.
    """
    results, reasons = {}, {}
    try:
        for key, fut in futures.items():
            try:
                results[key] = fut.result()
            except OSError as exc:
                if exc.errno in _DISK_FULL:
                    raise
                reasons[key] = f"cannot write: {exc}"
            except Exception as exc:  # noqa: BLE001 - this clip's id gets the reason
                reasons[key] = f"cannot write: {type(exc).__name__}: {str(exc)[:200]}"
    finally:
        concurrent.futures.wait(list(futures.values()))
    return results, reasons


@dataclasses.dataclass
class _Run:
    """What the batches of one `generate` call share: its settings, the model, and each id's outcome.

    Args:
        gen: the decoding and clip settings.
        out: the output folder.
        descriptions: the JSON's `{id: description}` (the judge's text for best-of-N).
        settings: what best-of-N's chosen bytes depend on (checked against the folder's report).
    """

    gen: GenerationConfig
    out: Path
    descriptions: dict[str, str]
    settings: dict = dataclasses.field(default_factory=dict)
    model: tp.Any = None
    reranker: tp.Any = None
    locks: BatchLocks | None = None
    truncate: tp.Callable[[str], tuple[str, int]] | None = None
    invalid: list[str] = dataclasses.field(default_factory=list)  # existing files that were not finished clips
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # generation or write failures: retried
    truncated: list[str] = dataclasses.field(default_factory=list)  # descriptions cut to the encoder's tokens
    written: int = 0  # files written by this run
    overlap: bool = False  # MP3s written while the next batch is generated (`_overlap_writes`)
    pending: tuple | None = None  # the batch whose MP3s are being written, their futures, and what ends them

    @property
    def best_of(self) -> bool:
        return self.gen.candidates > 1

    def check_best_of(self, rerank: tp.Any) -> None:
        """Record what best-of-N's chosen bytes depend on and refuse a folder whose report has other settings (a
        resumed run with other settings would mix two experiments).

        Args:
            rerank: the run's `rerank.RerankOptions`.
        """
        from . import rerank as rr

        # not the decoder: the decoders draw the same codes (tests/test_fast_decoder.py, test_graph_decoder.py)
        self.settings = {**{k: v for k, v in vars(self.gen).items() if k != "decoder"}, **rerank.settings()}
        rr.check_settings(self.out, self.settings)

    def load(self, model: tp.Any, model_spec: str, device: str | None, rerank: tp.Any, items: list[Item],
             quiet: bool) -> None:
        """The reranker and the model, unless every clip of the JSON is finished (this shard's batches may need
        the model's tokenizer), and `--batch-size auto` resolved for them.

        Args:
            model: an already loaded MusicGen, or None.
            model_spec, device: what to load otherwise.
            rerank: best-of-N's reranking options.
            items: every valid item of the JSON.
            quiet: no line about the size chosen.
        """
        pending = self.unfinished(items, quiet=True)
        if self.best_of and pending:
            self.reranker = rerank.build()  # before the model: fail fast on a missing CLAP
        self.model = model if model is not None or not pending else load_model(model_spec, device)
        self.overlap = self.model is not None and _overlap_writes(self.model)
        if self.gen.batch_size != AUTO or self.model is None:
            return
        size, why = auto_batch_size(self.model, [text for _, text, _ in items], self.gen.duration,
                                    self.gen.candidates, text_length(self.model))
        self.gen = dataclasses.replace(self.gen, batch_size=size)
        if not quiet:
            print(f"--batch-size auto: {size} ({why})")
        if self.best_of:
            self.check_best_of(rerank)

    def unfinished(self, batch: list[Item], quiet: bool = False) -> bool:
        """Whether some clip of `batch` is missing or not finished (an unfinished one is named, once, unless
        `quiet`)."""
        from .rerank import read_report

        bad = False
        # best-of-N: a clip is finished only once the report records its choice (the report is written after
        # the clip, so a run killed in between regenerates the batch: same seed, same bytes).
        recorded = (read_report(self.out) or {}).get("items", {}) if self.best_of else None
        for key, _, target in batch:
            if target.exists():
                problem = clips.clip_problem(target, self.gen.sample_rate, self.gen.duration)
                if problem is None and (recorded is None or key in recorded):
                    continue
                if problem is None or quiet:
                    bad = True
                    continue
                if key not in self.invalid:
                    self.invalid.append(key)
                    warnings.warn(f"{target}: existing file is not a finished clip ({problem}): regenerating it",
                                  stacklevel=3)
            bad = True
        return bad

    def texts(self, batch: list[Item]) -> list[str]:
        """The LM's input rows for `batch`: each description cut to the text encoder's length, repeated per
        candidate (item-major: the N candidates of an item are consecutive rows of one batched LM pass)."""
        texts = []
        for key, text, _ in batch:
            text, n_tokens = self.truncate(text)
            if n_tokens and key not in self.truncated:
                self.truncated.append(key)
                warnings.warn(f"{key}: description of {n_tokens} tokens truncated to what the text encoder "
                              f"takes ({len(text)} characters kept)", stacklevel=3)
            texts.append(text)
        return [t for t in texts for _ in range(self.gen.candidates)]

    def run(self, batch: list[Item]) -> None:
        """Sample `batch` (seeded from its ids) and write its clips (counted in `written`)."""
        texts = self.texts(batch)
        torch.manual_seed(batch_seed(self.gen.seed, [k for k, _, _ in batch]))
        try:
            with torch.inference_mode():  # no autograd bookkeeping at all: faster than no_grad on CPU
                wavs = generate_batch(self.model, texts, self.gen.decoder).cpu()
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - this batch's ids get the reason, the next batch goes on
            for key, _, _ in batch:
                self.failed[key] = f"generation failed: {type(exc).__name__}: {str(exc)[:200]}"
            return
        self.finish_writes()  # the batch before's MP3s, written while this batch was generated
        self.write(batch, wavs)

    def run_all(self, todo: list[list[Item]], quiet: bool) -> int:
        """Run each batch of `todo` that no other run on the folder finished; returns how many items those
        other runs did."""
        from tqdm import tqdm

        by_other = 0
        with tqdm(total=sum(len(b) for b in todo), desc="generate", unit="clip", disable=quiet) as bar, \
                BatchLocks(self.out) as self.locks:
            try:
                for batch in self.locks.held(todo, before_wait=self.finish_writes):
                    if self.unfinished(batch):  # re-checked under the lock: the other run may just have finished it
                        self.run(batch)
                    else:
                        by_other += len(batch)
                    bar.update(len(batch))
                self.finish_writes()  # the last batch's
            finally:
                self.abandon_writes()  # an error stopped the loop: the writes in flight end before the locks go
        return by_other

    def write(self, batch: list[Item], wavs: torch.Tensor) -> None:
        """Encode the batch's clips (best-of-N: its candidates) side by side, one per core. With `overlap`, return
        at once: they are encoded while the next batch is generated, and the batch's lock is kept until
        `finish_writes` has recorded them (best-of-N: chosen and committed them)."""
        pool, rate = _cpu_pool(self.workers()), self.model.sample_rate
        if self.best_of:
            from .rerank import candidate_path

            n = self.gen.candidates
            files = [[candidate_path(target, i) for i in range(n)] for _, _, target in batch]
            futures = {(j, i): pool.submit(clips.write_candidate, files[j][i], wavs[j * n + i], rate, self.gen)
                       for j in range(len(batch)) for i in range(n)}
            done = functools.partial(self._choose_best, batch, files)
        else:
            files = []
            futures = {key: pool.submit(clips.write_clip, target, wav, rate, self.gen)
                       for (key, _, target), wav in zip(batch, wavs, strict=True)}
            done = self._count_written
        self.pending = (batch, futures, done, files)
        if self.overlap:
            self.locks.keep(batch)
        else:
            self.finish_writes()

    def workers(self) -> int:
        # On a CPU the LM and LAME share the cores, so the MP3s are encoded between batches on all of them; on a
        # GPU the host only feeds the device, so the MP3s take the cores while the next batch is generated.
        return usable_cores() if self.overlap else torch.get_num_threads()

    def finish_writes(self) -> None:
        """Wait for the MP3s in flight, record what was written or why not, and release their batch's lock."""
        if self.pending is None:
            return
        batch, futures, done, _ = self.pending
        self.pending = None
        try:
            done(futures)
        finally:
            if self.overlap:
                self.locks.release(batch)

    def abandon_writes(self) -> None:
        """On an error (Ctrl-C, out of memory): let the MP3s in flight end (each lands whole or not at all), drop
        best-of-N's unchosen candidates, and release the batch: the next run redoes what was not recorded."""
        if self.pending is None:
            return
        batch, futures, _, files = self.pending
        self.pending = None
        concurrent.futures.wait(list(futures.values()))
        _remove_candidates(files)
        if self.overlap:
            self.locks.release(batch)

    def _count_written(self, futures: dict) -> None:
        written, reasons = _collect(futures)
        self.failed.update(reasons)
        self.written += sum(written.values())

    def _choose_best(self, batch: list[Item], files: list[list[Path]], futures: dict) -> None:
        """Once a batch's candidates are written: keep the one the reranker chooses per item, record the choice."""
        try:
            _, reasons = _collect(futures)
            bad: dict[str, str] = {}
            for (j, _), reason in reasons.items():
                bad.setdefault(batch[j][0], reason)
            keep = [j for j, (key, _, _) in enumerate(batch) if key not in bad]
            records = self._choose_and_commit([batch[j] for j in keep], [files[j] for j in keep], bad)
        finally:
            _remove_candidates(files)
        if records:
            self.locks.report_lock_update(self.out, self.settings, records)
        self.failed.update(bad)
        self.written += len(records)

    def _choose_and_commit(self, batch: list[Item], files: list[list[Path]], bad: dict[str, str]) -> dict:
        """Rerank the candidates of `batch` and commit each chosen file; the ids that fail get a reason in `bad`.

        Returns:
            `{id: the reranker's record}` of the clips committed.
        """
        if not batch:
            return {}
        try:  # the judge's text: the JSON's description, as `score` reads it
            chosen = self.reranker.choose([self.descriptions[key] for key, _, _ in batch], files)
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - this batch's ids get the reason
            for key, _, _ in batch:
                bad[key] = f"CLAP reranking failed: {type(exc).__name__}: {str(exc)[:200]}"
            return {}
        records = {}
        for (key, _, target), group, rec in zip(batch, files, chosen, strict=True):
            try:
                clips.commit_candidate(group[rec["chosen"]], target, self.gen)
            except OSError as exc:
                if exc.errno in _DISK_FULL:
                    raise
                bad[key] = f"cannot write: {exc}"
                continue
            records[key] = rec
        return records


def _check_settings(gen: GenerationConfig) -> None:
    from .fast_decoder import check_decoder

    if gen.batch_size != AUTO and gen.batch_size < 1:
        raise ValueError(f"--batch-size {gen.batch_size}: must be at least 1")
    if not gen.duration > 0 or gen.sample_rate <= 0:
        raise ValueError(f"--duration {gen.duration} / --sample-rate {gen.sample_rate}: must be positive")
    check_decoder(gen.decoder)


def _read_items(json_path: str | Path, out: Path) -> tuple[dict[str, str], list[Item], dict[str, str]]:
    """The JSON's descriptions, its valid items sorted by id, and the reason for each refused id."""
    descriptions, duplicates = read_zalo_json(json_path)
    items, refused = check_items({k: v for k, v in descriptions.items() if k not in duplicates}, out)
    refused.update({k: f"duplicate id ({n} times in the JSON)" for k, n in duplicates.items()})
    return descriptions, items, refused


def _batches(items: list[Item], gen: GenerationConfig, model: tp.Any, shard_spec: str | None) -> list[list[Item]]:
    """This shard's batches of `items` (`--batch-order`, `--batch-size`, `--shard`).

    Length order reads the model's tokenizer. Without a model (every clip was already finished, so none was
    loaded) id order stands in: a shard's batch count and sizes, all that the summary reads then, are the same.
    """
    length = text_length(model) if gen.batch_order == "length" and model is not None else None
    size = CPU_BATCH if gen.batch_size == AUTO else gen.batch_size  # auto unresolved: no model, nothing to do
    # Batch first, then shard: sharding items would regroup them into other batches, with other seeds.
    return shard(make_batches(items, size, length), shard_spec)


def generate(model_spec: str, json_path: str | Path, out_dir: str | Path, gen: GenerationConfig | None = None,
             shard_spec: str | None = None, device: str | None = None, model=None, quiet: bool = False,
             rerank=None) -> dict:
    """Generate one MP3 per description (best of `gen.candidates` by CLAP when it is above 1).

    Args:
        model_spec: hub name, exported folder or `//sig/<S>`.
        json_path: `{"<id>.mp3": "<description>"}`.
        out_dir: output folder (files named by the ids).
        gen: sampling options.
        shard_spec: `i/n` to do only every n-th batch starting at batch i (`batches.shard`).
        device: torch device.
        model: an already loaded MusicGen (tests, benchmarks).
        quiet: no progress bar.
        rerank: `rerank.RerankOptions` for `gen.candidates` > 1 (default: the judge's default CLAP).
    Returns:
        Summary: counts, timings, refused ids (and, best-of-N, the report's summary).
    """
    from .fast_decoder import check_supported

    gen = gen or GenerationConfig()
    _check_settings(gen)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    descriptions, all_items, errors = _read_items(json_path, out)
    run = _Run(gen, out, descriptions)
    if run.best_of:
        from . import rerank as rr

        rerank = rerank or rr.RerankOptions()
        if gen.batch_size != AUTO:  # fail fast; with auto, `run.load` checks once the size is known
            run.check_best_of(rerank)
    start = time.time()
    run.load(model, model_spec, device, rerank, all_items, quiet)
    gen = run.gen  # with --batch-size auto resolved
    batches = _batches(all_items, gen, run.model, shard_spec)
    items = [it for batch in batches for it in batch]  # this shard's items
    stale = remove_stale_temps(items)
    todo = [b for b in batches if run.unfinished(b)]
    if run.model is not None:
        run.model.set_generation_params(**gen.sampling_params())
        if todo and gen.decoder != "audiocraft":
            check_supported(run.model, gen.decoder)  # one clear error before any batch, not one failure per batch
        run.truncate = text_truncator(run.model)
    try:
        by_other = run.run_all(todo, quiet)
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        raise _disk_need(exc, out, items, gen) from exc
    seconds = time.time() - start
    written = run.written
    errors.update(run.failed)
    summary = {"total": len(items), "written": written, "candidates": gen.candidates, "batch_size": gen.batch_size,
               "skipped_existing": len(items) - sum(len(b) for b in todo), "by_other_run": by_other,
               "regenerated_invalid": run.invalid, "refused": errors, "failed": sorted(run.failed),
               "truncated": run.truncated, "stale_temps_removed": stale, "seconds": round(seconds, 2),
               "out_dir": str(out),
               "realtime_factor": round(seconds / (written * gen.duration), 4) if written else None}
    report = rr.read_report(out) if run.best_of else None
    if report is not None:
        summary["rerank"] = report.get("summary", {})
        summary["report"] = str(out / rr.REPORT_NAME)
    summary["failures_file"] = _write_failures(
        out, shard_spec, {k: v for k, v in errors.items() if k not in run.failed}, run.failed)
    if not quiet:
        _print_summary(summary, gen)
    return summary


def _print_summary(summary: dict, gen: GenerationConfig) -> None:
    """The lines a `generate` run ends with: counts, where the clips went, the failures and best-of-N's gain."""
    errors, failed = summary["refused"], set(summary["failed"])
    print(f"generated {summary['written']} clips ({summary['skipped_existing']} already there, "
          f"{summary['by_other_run']} by another run, {len(errors) - len(failed)} refused, {len(failed)} failed) "
          f"in {summary['seconds']:.1f}s -> {summary['out_dir']}")
    if summary["stale_temps_removed"]:
        print(f"  removed {summary['stale_temps_removed']} temporary files an interrupted run had left")
    invalid = summary["regenerated_invalid"]
    if invalid:
        print(f"  {len(invalid)} existing files were not finished clips and were regenerated (first: {invalid[:3]})")
    shown = sorted(errors.items(), key=lambda kv: (kv[0] not in failed, kv[0]))[:10]  # failures first
    for k, why in shown:
        print(f"  {'failed' if k in failed else 'refused'} {k!r}: {why!r}")
    if errors:
        more = f"the other {len(errors) - len(shown)} and " if len(errors) > len(shown) else ""
        print(f"  {more}all of them in full: {summary['failures_file']}")
    r = summary.get("rerank") or {}
    if r.get("n"):
        print(f"best-of-{gen.candidates}: {r['n']} clips chosen by CLAP, mean CLAP {r['mean_clap_chosen']:.4f} "
              f"chosen vs {r['mean_clap_first']:.4f} for candidate 0 (mean of all {r['mean_clap_all']:.4f}); "
              f"report {summary['report']}")


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


def _disk_need(exc: OSError, out: Path, items: list, gen: GenerationConfig) -> DiskFull:
    """A full disk met by `generate`, naming the room the clips not yet in `out` need: the mean size of those
    there, or, with none yet, the size of a clip at MP3's highest bitrate (320 kb/s)."""
    full = exc if isinstance(exc, DiskFull) else DiskFull(out, Path(exc.filename or "").name or "a clip", None)
    sizes = [t.stat().st_size for _, _, t in items if t.exists()]
    left = len(items) - len(sizes)
    if sizes:
        return full.with_need(left, "clips", sum(sizes) / len(sizes))
    return full.with_need(left, "clips", 320_000 / 8 * gen.duration, bound="at most")


