"""Build, on the development machine, what a lent GPU machine needs to run the project's device checks.

The device image (see /work/.library/device/KINDS.md) has Python 3.12, torch, torchaudio, numpy, scipy, einops,
sentencepiece and torchmetrics, but not audiocraft, dora, hydra, flashy, laion-clap or soundfile, and its
transformers (5.x) and huggingface_hub (1.x) are newer than the project runs with. Nothing there reaches a
package index, so this writes `.device/` here (ignored by git; it travels with `run(carry=[".device"])`):

- `wheels/`: the missing part of the pinned stack, at the versions installed in this environment, as wheels for
  the device's Python (binary wheels for its platform; a pure-Python package published only as a source archive
  is built into a wheel here);
- `src/`: audiocraft 1.3.0's package and its `config/` (its wheel ships no `config/`, and dora composes from it);
- `texts/`: the public-test descriptions and a 2,000-description job (the 1,000 public-test ones, then training
  descriptions under new ids: the private test's size), from ../shared/data/zalo2023 (the device machine has no
  ../shared);
- `stubs/`: import-only stand-ins for what audiocraft imports at module level but the measured paths never call:
  `xformers` (the recipe uses torch's attention), `spacy` (no spaCy tokenizer in the recipe), `av` (audio is
  read and written through libsndfile). Using one raises an error that names the stub.

Then `scripts/device/checks.sh` is the one command to run there (its header says how).

    .venv/bin/python scripts/device/kit.py                      # for the device (Python 3.12)
    .venv/bin/python scripts/device/kit.py --python-version 3.11 --out /tmp/devkit311   # to rehearse it here
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
SHARED = PROJECT.parent / "shared" / "data" / "zalo2023"
#: Descriptions of the end-to-end job: the size of the private test.
JOB_SIZE = 2000

#: Distributions the device image lacks (or has at versions the project does not run with), with what needs
#: them. Their versions are this environment's: the ones the test suite ran with.
PACKAGES = {
    "transformers": "T5 and the stand-ins (the image's 5.x returns degenerate tokenizers offline)",
    "tokenizers": "transformers 4.57 needs < 0.23",
    "huggingface_hub": "transformers 4.57 needs < 1.0",
    "hydra-core": "dora and audiocraft's configs",
    "omegaconf": "hydra",
    "antlr4-python3-runtime": "omegaconf",
    "hydra-colorlog": "audiocraft's config",
    "colorlog": "hydra-colorlog",
    "dora-search": "the experiment manager",
    "retrying": "dora",
    "treetable": "dora",
    "submitit": "dora",
    "flashy": "audiocraft's solvers",
    "julius": "audiocraft's resampling",
    "num2words": "audiocraft's text normalizer",
    "docopt": "num2words",
    "soundfile": "audio reading and MP3 writing (libsndfile inside the wheel)",
    "cffi": "soundfile",
    "pycparser": "cffi",
    "laion-clap": "CLAP scoring and reranking",
    "braceexpand": "laion-clap",
    "webdataset": "laion-clap",
    "wget": "laion-clap",
    "ftfy": "laion-clap",
    "wcwidth": "ftfy",
    "progressbar": "laion-clap",
    "torchlibrosa": "laion-clap",
    "librosa": "laion-clap and the metrics",
    "audioread": "librosa",
    "soxr": "librosa and prepare's resampling",
    "pooch": "librosa",
    "platformdirs": "pooch",
    "decorator": "librosa",
}

#: Import-only stubs: module -> {submodule: {name: its source, or None for a name that raises when called}}.
#: With `efficient_attention_backend=torch` (the recipe's), audiocraft still imports xformers' attention names,
#: builds a `LowerTriangularMask` only to test it against None, and splits q/k/v with `ops.unbind`
#: (audiocraft/modules/transformer.py): a marker class and torch's own unbind (the same views) stand in for them.
STUBS: dict[str, dict[str, dict[str, str | None]]] = {
    "xformers": {"ops": {
        "LowerTriangularMask": "class LowerTriangularMask:  # a marker: the torch backend tests it against None\n"
                               "    pass",
        "unbind": "from torch import unbind  # noqa: E402  xformers.ops.unbind returns the same views",
        "memory_efficient_attention": None}},
    "spacy": {},
    "av": {},
}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def wheels(out: Path, python_version: str) -> list[str]:
    """Download (or build) one wheel per `PACKAGES` entry into `out`; returns `name==version` of each."""
    out.mkdir(parents=True, exist_ok=True)
    pins = []
    for name in PACKAGES:
        pin = f"{name}=={importlib.metadata.version(name)}"
        pins.append(pin)
        platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
        proc = _pip("download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
                    "--implementation", "cp", *platforms, "-d", str(out), pin)
        if proc.returncode != 0:  # published as a source archive only: pure Python, built into a wheel here
            proc = _pip("wheel", "-q", "--no-deps", "-w", str(out), pin)
        if proc.returncode != 0:
            raise SystemExit(f"{pin}: no wheel for Python {python_version} and none could be built:\n"
                             f"{proc.stderr[-2000:]}")
    return pins


def audiocraft_sources(out: Path) -> Path:
    """Copy the installed audiocraft package and its `config/` into `out`."""
    spec = importlib.util.find_spec("audiocraft")
    if spec is None or spec.origin is None:
        raise SystemExit("audiocraft is not installed here: run `bash scripts/setup.sh` first")
    package = Path(spec.origin).parent
    config = package.parent / "config"
    if not config.is_dir():
        raise SystemExit(f"{config}: audiocraft's config folder is missing (scripts/setup.sh installs the sdist)")
    shutil.rmtree(out, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(package, out / "audiocraft", ignore=ignore)
    shutil.copytree(config, out / "config", ignore=ignore)
    return out


def texts(out: Path) -> None:
    """Write `public_test.json` and `job2000.json` (public test, then training descriptions under new ids)."""
    import json

    if not (SHARED / "public_test.json").is_file():
        raise SystemExit(f"{SHARED}: the competition descriptions are not beside this checkout")
    public = json.loads((SHARED / "public_test.json").read_text())
    train = json.loads((SHARED / "train.json").read_text())
    job = dict(public)
    for k, text in enumerate(sorted(set(train.values()) - set(public.values()))[:JOB_SIZE - len(public)]):
        job[f"job{k:05d}.mp3"] = text
    out.mkdir(parents=True, exist_ok=True)
    (out / "public_test.json").write_text(json.dumps(public, ensure_ascii=False))
    (out / "job2000.json").write_text(json.dumps(job, ensure_ascii=False))


def stubs(out: Path) -> None:
    """Write the import-only stubs of `STUBS` into `out`: the package imports its submodules (for `from x import
    sub`); a declared name is defined (or raises when called); any other attribute raises an ImportError naming
    the stub, which code probing an optional dependency (`try: import av; av.logging...` in torchvision) takes
    for its absence."""
    shutil.rmtree(out, ignore_errors=True)
    for name, submodules in STUBS.items():
        folder = out / name
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text(_stub_source(name, imports=tuple(submodules)))
        for sub, names in submodules.items():
            (folder / f"{sub}.py").write_text(_stub_source(f"{name}.{sub}", names=names))


def _stub_source(module: str, imports: tuple = (), names: dict | None = None) -> str:
    """The source of one stub module."""
    error = (f'ImportError("{module}: a stub on this machine (scripts/device/kit.py); this path needs the real '
             f'package")')
    lines = [f'"""Import-only stub of `{module}` for the device checks (scripts/device/kit.py)."""', ""]
    lines += [f"from . import {sub}  # noqa: F401" for sub in imports]
    for attr, source in (names or {}).items():
        lines += ["", ""]
        if source is None:  # a class: calling it, as a function or a constructor, raises
            lines += [f"class {attr}:", "    def __init__(self, *args, **kwargs):", f"        raise {error}"]
        else:
            lines += [source]
    lines += ["", "", "def __getattr__(attr):",
              "    if attr.startswith('__'):  # the import system's probes (`__path__`, ...): plain absence",
              "        raise AttributeError(attr)", f"    raise {error}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=PROJECT / ".device", help="the kit's folder (default: .device)")
    p.add_argument("--python-version", default="3.12", help="the device's Python (default: 3.12)")
    a = p.parse_args(argv)
    pins = wheels(a.out / "wheels", a.python_version)
    audiocraft_sources(a.out / "src")
    texts(a.out / "texts")
    stubs(a.out / "stubs")
    size = sum(f.stat().st_size for f in a.out.rglob("*") if f.is_file())
    print(f"[kit] {len(pins)} wheels for Python {a.python_version}, audiocraft sources, {len(STUBS)} stubs: "
          f"{size / 2**20:.1f} MiB in {a.out} (the device tool carries at most 64 MiB with the checkout)")
    print("[kit] on the device: run(command='bash scripts/device/checks.sh all', carry=['.device'], timeout_s=570)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
