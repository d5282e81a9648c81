"""The one place where upstream warnings are silenced.

Each filter names the warning, the upstream code that emits it and why it is harmless in zalo-music. They are
installed by `runtime.prepare()` (so in the `zalo-music` commands, in `dora -P zalo_music ...` and in every
process those start) unless the user asked to see everything: `zalo-music --debug`, `ZALO_MUSIC_DEBUG=1`, or
Python's own `-W` / `PYTHONWARNINGS`. Warnings raised by zalo-music itself are never filtered here.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class Filter:
    """One silenced upstream warning.

    Args:
        message: regex matched against the start of the warning's text.
        module: regex matched against the module the warning is attributed to.
        why: why it is harmless here (documentation; shown by `describe()`).
    """

    message: str
    module: str
    why: str

    def __post_init__(self) -> None:
        # the test suite hands these to pytest's `filterwarnings`, whose fields are separated by ':'
        if ":" in self.message + self.module:
            raise ValueError(f"quiet.Filter {self.message!r}: no ':' in the patterns ('.' matches it)")

    def pytest_line(self) -> str:
        """This filter in pytest's `filterwarnings` syntax (pytest resets Python's filters around each test)."""
        return f"ignore:{self.message}:Warning:{self.module}"


FILTERS: tuple[Filter, ...] = (
    Filter(r"\s*version_base=\"1\.1\" selects Hydra 1\.1 compatibility", r"dora\.hydra",
           "Hydra14MigrationWarning from dora/hydra.py: dora itself composes every config with "
           "version_base='1.1' (as audiocraft's configs require); nothing in zalo-music can change it."),
    Filter(r"Future Hydra versions will no longer change working directory", r"hydra\._internal\.hydra",
           "hydra/_internal/hydra.py under version_base 1.1: audiocraft and dora run each XP inside its own "
           "folder on purpose (the 1.1 behaviour this announces a change of)."),
    Filter(r"Up to version 1\.0\.1, the _prepare_tokens_and_attributes", r"audiocraft\.solvers\.musicgen",
           "audiocraft/solvers/musicgen.py notes a change made in its release 1.1.0 on every first batch; "
           "zalo-music pins a later release, so there is nothing to compare against."),
    Filter(r"torch\.meshgrid. in an upcoming release, it will be required to pass the indexing argument",
           r"torch\.functional",
           "laion_clap's HTSAT audio tower (laion_clap/clap_module/htsat.py, window attention) calls "
           "torch.meshgrid without `indexing`; the default it gets, 'ij', is the one it was written for."),
    Filter(r"Converting a tensor with requires_grad=True to a scalar", r"flashy\.utils",
           "flashy/utils.py's averager calls float() on each logged loss; the value logged is right, only "
           "autograd's bookkeeping is skipped, which logging does not need."),
)


def debug_requested() -> bool:
    """Whether the user asked to see every warning (`--debug`, ZALO_MUSIC_DEBUG=1, or Python's -W options)."""
    return os.environ.get("ZALO_MUSIC_DEBUG") == "1" or bool(sys.warnoptions)


def install() -> bool:
    """Install `FILTERS` (idempotent: `warnings.filterwarnings` replaces an equal filter). Returns whether it did."""
    if debug_requested():
        return False
    for f in FILTERS:
        warnings.filterwarnings("ignore", message=f.message, category=Warning, module=f.module)
    return True


def describe() -> str:
    """Every filter, one paragraph each (for `zalo-music doctor` and the docs)."""
    return "\n".join(f"- {f.module}: /{f.message}/ -- {f.why}" for f in FILTERS)
