"""`zalo-music` command line: the list of sub-commands, the one error boundary and `main`.

Each sub-command's parser and entry point live beside its code (a module's `register(subparsers)`, listed in
`COMMANDS`); heavy imports happen only inside each command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: The modules that register the sub-commands (`register(subparsers)`), in `--help` order. Each is light at
#: import (torch, audiocraft & co. load inside the commands), so building the whole parser keeps `--help` fast.
COMMANDS = ("zalo_music.doctor", "zalo_music.data.cli", "zalo_music.gridlocal", "zalo_music.quickstart",
            "zalo_music.export_cli", "zalo_music.generate_cli", "zalo_music.metrics.cli", "zalo_music.standins.cli",
            "zalo_music.tokens.cli", "zalo_music.classic_train", "zalo_music.webdemo", "zalo_music.conditioning")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs): every sub-command registered in full.

    Each sub-command's module is light at import (torch, audiocraft & co. are imported inside the command), so
    building the whole parser keeps `zalo-music --help` fast (tests/test_cli_help.py).

    Args:
        command: accepted for callers written when some sub-commands were registered only when chosen; it no
            longer changes the parser.
    """
    del command  # every sub-command is registered the same way now
    from .helpfmt import HelpFormatter as fmt

    p = argparse.ArgumentParser(prog="zalo-music", formatter_class=fmt,
                                description="Fine-tune MusicGen with Audiocraft + Dora; score with CLAS.")
    p.add_argument("--debug", action="store_true",
                   help="show the full traceback of an error and every upstream warning (also: ZALO_MUSIC_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)

    for module in COMMANDS:  # each registers its own sub-commands, beside its code
        importlib.import_module(module).register(sub)
    return p


def describe_error(exc: BaseException) -> str:
    """One line for an error a user can fix: the file involved, what is wrong and what to do.

    Args:
        exc: the exception that ended the command.
    """
    import json as _json
    import pickle
    import zipfile

    from .fileio import friendly_os_error

    if isinstance(exc, pickle.UnpicklingError):
        return (f"a checkpoint holds objects that the safe loader refuses ({str(exc).splitlines()[0][:200]}): "
                "only load model files you trust; zalo-music never unpickles arbitrary code")
    if isinstance(exc, _json.JSONDecodeError):
        return f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}: fix the file"
    if isinstance(exc, zipfile.BadZipFile):
        return f"not a readable ZIP or checkpoint file ({exc}): the file is corrupt or truncated; rebuild it"
    if isinstance(exc, OSError) and exc.errno is not None:
        return friendly_os_error(exc)
    if isinstance(exc, RecursionError):
        return "input nested too deeply to read (a hostile or broken file?)"
    if isinstance(exc, EOFError):
        return f"file ended early ({exc}): it is truncated; re-create or re-download it"
    if isinstance(exc, RuntimeError) and ("PytorchStreamReader" in str(exc) or "zip archive" in str(exc)):
        return f"model file is corrupt or truncated ({str(exc).splitlines()[0][:200]}): re-export or re-download it"
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, (ValueError, OSError, KeyError, UnicodeError)):
        return text or type(exc).__name__
    return f"unexpected {type(exc).__name__}: {text[:300]} (rerun with --debug for the traceback, and report it)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `zalo-music` command.

    One error boundary for every command: an error becomes one line on stderr naming the file and the fix,
    exit code 2; `--debug` (or ZALO_MUSIC_DEBUG=1) re-raises it with its traceback.

    Args:
        argv: the arguments after the program name (None: `sys.argv[1:]`).
    Returns:
        The exit status.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("ZALO_MUSIC_DEBUG") == "1"
    previous = os.environ.get("ZALO_MUSIC_DEBUG")
    if debug:  # also for the processes this one starts (dora, workers): tracebacks and every upstream warning
        os.environ["ZALO_MUSIC_DEBUG"] = "1"
    # After parsing, so `--help` and usage errors stay instant: the environment probe may take 2 s.
    from .runtime import prepare

    prepare()
    from .procutil import Terminated, interrupt_on_termination

    interrupt_on_termination()  # SIGTERM/SIGHUP (SLURM, timeout, a closed terminal) unwind like Ctrl-C
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        signame = exc.args[0] if isinstance(exc, Terminated) else "SIGINT"
        print(f"zalo-music {args.command}: interrupted by {signame} (a rerun resumes)", file=sys.stderr)
        return 128 + (exc.signum if isinstance(exc, Terminated) else 2)
    except Exception as exc:  # noqa: BLE001 - the one boundary: one clear line, the traceback with --debug
        if debug:
            raise
        print(f"zalo-music {args.command}: error: {describe_error(exc)}", file=sys.stderr)
        return 2
    finally:  # an in-process caller (a notebook, the tests) keeps its own environment
        if previous is None:
            os.environ.pop("ZALO_MUSIC_DEBUG", None)
        else:
            os.environ["ZALO_MUSIC_DEBUG"] = previous


if __name__ == "__main__":
    sys.exit(main())
