"""Upstream code our patches and re-implementations are written against: fail when the installed release differs.

zalo_music patches, wraps or re-implements specific functions of audiocraft 1.3.0, laion-clap 1.1.7, torch 2.9.1
and dora-search 0.1.13 (zalo_music/patches.py, the solvers, generate, export, metrics/clap.py, data/manifest.py,
gridlocal.py). Each one is listed in
`UPSTREAM` with a fingerprint of the installed upstream source (sha256 of that function's or class's source
text, found with `ast` in the installed file: nothing is imported). When an upgrade changes one, this test names
our code to re-read and the upstream function to compare it with:

    upstream changed: re-sync zalo_music/patches.py:LINE with audiocraft/models/musicgen.py:MusicGen.__init__

After checking (and fixing) our side, run `python tests/test_upstream_fingerprint.py` to print the new
fingerprints and paste them into `UPSTREAM`.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import re
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent

#: (upstream "package/file.py:Qual.name", our "zalo_music/file.py:anchor", fingerprint). `Qual.name` is a
#: function, class or method; `<module>` is the file's module-level code without its function and class
#: bodies. The anchor is a string on the line of our code that depends on it (the line is found at test time).
UPSTREAM: list[tuple[str, str, str]] = [
    # patches.py: laion_clap import guard (tokenizers loaded from the hub at import; audiocraft catches only
    # ImportError around `import laion_clap`)
    ("laion_clap/training/data.py:<module>", "zalo_music/patches.py:class _LaionClapImportGuard", "371daf01ff30"),
    ("audiocraft/metrics/clap_consistency.py:<module>", "zalo_music/patches.py:class _LaionClapImportGuard",
     "8fe3636a2b71"),
    ("audiocraft/modules/conditioners.py:CLAPEmbeddingConditioner.__init__",
     "zalo_music/patches.py:class _LaionClapImportGuard", "2255ec9fca89"),
    # patches.py: safe loading (allow-list of what audiocraft pickles; weights_only forced at its call sites)
    ("audiocraft/utils/checkpoint.py:save_checkpoint", "zalo_music/patches.py:def safe_globals", "69cdc676f605"),
    ("audiocraft/utils/checkpoint.py:load_checkpoint", "zalo_music/patches.py:def _always_weights_only",
     "c9ebb1cade8d"),
    ("audiocraft/models/loaders.py:_get_state_dict", "zalo_music/patches.py:def _always_weights_only",
     "1668df4ceb82"),
    ("audiocraft/utils/export.py:export_pretrained_compression_model",
     "zalo_music/patches.py:def _always_weights_only", "e334ead4411b"),
    ("audiocraft/utils/cache.py:CachedBatchLoader._load_one", "zalo_music/patches.py:def _always_weights_only",
     "8c1e6477dc86"),
    ("torch/serialization.py:load", "zalo_music/patches.py:def _always_weights_only", "0c7a2bbd3f4f"),
    # patches.py: DataLoader workers die with their parent (worker_init_fn is the 11th positional argument)
    ("torch/utils/data/dataloader.py:DataLoader.__init__", "zalo_music/patches.py:def workers_die_with_parent",
     "7fd7498b692e"),
    # patches.py: MusicGen from a 10-s checkpoint (extend_stride default asserted below max_duration)
    ("audiocraft/models/musicgen.py:MusicGen.__init__", "zalo_music/patches.py:def allow_short_segment_musicgen",
     "b4783823045a"),
    ("audiocraft/models/musicgen.py:MusicGen.set_generation_params",
     "zalo_music/patches.py:def allow_short_segment_musicgen", "09cf3d942418"),
    # patches.py: the cosine schedule's last step when it has no decay steps (division by zero)
    ("audiocraft/optim/cosine_lr_scheduler.py:CosineLRScheduler._get_sched_lr",
     "zalo_music/patches.py:def cosine_schedule_without_decay_steps", "c15bcd1b30ac"),
    # solvers: our dispatch replaces audiocraft's closed dict; grad_acc re-implements run_step; token data
    ("audiocraft/solvers/builders.py:get_solver", "zalo_music/solvers/registry.py:def get_solver", "dfa585e62c9a"),
    ("audiocraft/solvers/musicgen.py:MusicGenSolver.run_step",
     "zalo_music/solvers/classic_options.py:def run_step", "2f86522b3414"),
    ("audiocraft/solvers/musicgen.py:MusicGenSolver._prepare_tokens_and_attributes",
     "zalo_music/solvers/tokens.py:def _prepare_tokens_and_attributes", "ebd1c7c8aba1"),
    ("audiocraft/solvers/builders.py:get_audio_datasets", "zalo_music/tokens/dataset.py:Same merge as audiocraft/solvers/builders.py:get_audio_datasets",
     "cdbfc44732a6"),
    ("audiocraft/data/music_dataset.py:MusicDataset.__getitem__", "zalo_music/tokens/dataset.py:paraphraser.sample",
     "cec36b6efa4e"),
    # generate.py: BaseGenModel.generate split in its two stages; T5 tokenizes without truncation
    ("audiocraft/models/genmodel.py:BaseGenModel.generate", "zalo_music/generate.py:def generate_batch",
     "606f01394e0d"),
    ("audiocraft/modules/conditioners.py:T5Conditioner.tokenize", "zalo_music/generate.py:def text_truncator",
     "28b1ce8a4c98"),
    # export.py: the same package as export_lm; debug_codec.py: the debug codec rebuilt from its (absent) config
    ("audiocraft/utils/export.py:export_lm", "zalo_music/export.py:def export_lm_state", "20008f32a5ba"),
    ("audiocraft/models/builders.py:get_debug_compression_model", "zalo_music/debug_codec.py:def config",
     "34dfc8e2bc77"),
    # patches.py: the `words` tokenizer (LUTConditioner's tokenizer switch; WhiteSpaceTokenizer's attributes)
    ("audiocraft/modules/conditioners.py:LUTConditioner.__init__", "zalo_music/patches.py:def offline_word_tokenizer",
     "4203da5aac16"),
    ("audiocraft/modules/conditioners.py:WhiteSpaceTokenizer.__call__",
     "zalo_music/patches.py:class BlankEnglishWordTokenizer", "4da2363fbf84"),
    # debug_codec.py: the codebooks refitted through init_embed_ (in eval mode, no EMA step after it)
    ("audiocraft/quantization/core_vq.py:EuclideanCodebook.forward", "zalo_music/debug_codec.py:def fit_codebooks",
     "db0fead28e9f"),
    # conditioning.py: the solver's cross-entropy per clip; compute_predictions' NaN logits at invalid positions
    ("audiocraft/solvers/musicgen.py:MusicGenSolver._compute_cross_entropy",
     "zalo_music/conditioning.py:def clip_cross_entropy", "2e8a78213a4e"),
    ("audiocraft/models/lm.py:LMModel.compute_predictions", "zalo_music/conditioning.py:Invalid positions",
     "6f43228d0d29"),
    # metrics/clap.py: laion-clap's checkpoint loading and audio preparation, done our way
    ("laion_clap/clap_module/factory.py:load_state_dict", "zalo_music/metrics/clap.py:Same treatment as laion-clap's",
     "b8dcc31088bc"),
    ("laion_clap/hook.py:CLAP_Module.get_audio_embedding_from_filelist",
     "zalo_music/metrics/clap.py:get_audio_embedding_from_filelist", "ea7519683f38"),
    # data/manifest.py: audiocraft's manifest format, written and read without importing audiocraft
    ("audiocraft/data/audio_dataset.py:AudioMeta", "zalo_music/data/manifest.py:FIELDS = (", "a50049cb914f"),
    ("audiocraft/data/audio_dataset.py:save_audio_meta", "zalo_music/data/manifest.py:def write_manifest",
     "21279984ed58"),
    ("audiocraft/data/audio_dataset.py:load_audio_meta", "zalo_music/data/manifest.py:def parse_manifest",
     "35a0501f66ec"),
    # gridlocal.py: a grid's explorer found as `dora grid` finds it (Dora's own lookup is private)
    ("dora/grid.py:_get_explore", "zalo_music/gridlocal.py:def load_explorer", "212c86f0d7be"),
    # grids/_explorers.py: ranks rows in place, relying on monitor building every row before it prints them
    ("dora/grid.py:monitor", "grids/_explorers.py:def process_sheep", "70d49bd5d18a"),
]


def upstream_file(rel: str) -> Path:
    """The installed file `package/sub/file.py`, located without importing the package."""
    top, rest = rel.split("/", 1)
    spec = importlib.util.find_spec(top)
    assert spec is not None and spec.submodule_search_locations, f"{top} is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / rest


def _module_level(tree: ast.Module, text: str) -> str:
    keep = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return "\n".join(ast.get_source_segment(text, n) or "" for n in keep)


def upstream_source(target: str) -> str:
    """Source text of `package/file.py:Qual.name` (or `:<module>`) in the installed release."""
    rel, qual = target.split(":", 1)
    text = upstream_file(rel).read_text(encoding="utf-8")
    tree = ast.parse(text)
    if qual == "<module>":
        return _module_level(tree, text)
    body: list[ast.stmt] = tree.body
    node = None
    for part in qual.split("."):
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == part), None)
        if node is None:
            raise LookupError(f"{qual} not found in {rel}")
        body = node.body
    return ast.get_source_segment(text, node) or ""


def fingerprint(target: str) -> str:
    return hashlib.sha256(upstream_source(target).encode("utf-8")).hexdigest()[:12]


def our_location(ours: str) -> str:
    """`zalo_music/file.py:LINE` of the first line holding the anchor."""
    rel, anchor = ours.split(":", 1)
    lines = (PROJECT / rel).read_text(encoding="utf-8").splitlines()
    line = next((i for i, ln in enumerate(lines, 1) if anchor in ln), None)
    assert line is not None, f"{rel}: anchor {anchor!r} not found: update UPSTREAM in {Path(__file__).name}"
    return f"{rel}:{line}"


@pytest.mark.parametrize("target,ours,recorded", UPSTREAM, ids=[u[0] for u in UPSTREAM])
def test_upstream_source_is_the_one_our_code_was_written_against(target, ours, recorded):
    where = our_location(ours)
    try:
        now = fingerprint(target)
    except LookupError as exc:
        pytest.fail(f"upstream changed: re-sync {where} with {target} ({exc})")
    assert now == recorded, (f"upstream changed: re-sync {where} with {target} (fingerprint {recorded} -> {now}; "
                             f"then update UPSTREAM in tests/{Path(__file__).name})")


def test_fingerprints_are_of_the_pinned_releases():
    """The recorded fingerprints were taken on these versions (pyproject.toml, scripts/setup.sh)."""
    from importlib.metadata import version

    assert version("audiocraft") == "1.3.0" and version("laion-clap") == "1.1.7"
    assert version("dora-search") == "0.1.13"
    assert re.match(r"2\.9\.1(\+.*)?$", version("torch"))


if __name__ == "__main__":
    for target, ours, _ in UPSTREAM:
        print(f'    ("{target}", "{ours}", "{fingerprint(target)}"),')
