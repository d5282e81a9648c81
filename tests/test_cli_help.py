"""`zalo-music --help` stays light (no torch/audiocraft import), and every option's help shows its default."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from tests.helpers import PROJECT
from zalo_music.cli import build_parser

#: Packages a help screen must not import: each costs seconds (torch ~1 s, audiocraft, gradio and laion_clap
#: several) and none is needed to list options.
HEAVY = ("torch", "torchaudio", "audiocraft", "gradio", "laion_clap", "transformers", "dora", "omegaconf",
         "hydra", "scipy")

#: Runs `python -m zalo_music.cli ARGS...` (one command line per JSON argument) in this process and prints,
#: per command line, which HEAVY packages were imported by then.
WRAPPER = r"""
import json, runpy, sys
heavy, lines = json.loads(sys.argv[1]), json.loads(sys.argv[2])
seen = []
for args in lines:
    sys.argv = ["zalo-music", *args]
    try:
        runpy.run_module("zalo_music.cli", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        assert exc.code in (0, None), (args, exc.code)
    seen.append(sorted({m.split(".")[0] for m in sys.modules} & set(heavy)))
print("IMPORTED=" + json.dumps(seen))
"""


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _imported_by(lines: list[list[str]]) -> list[list[str]]:
    proc = subprocess.run([sys.executable, "-c", WRAPPER, json.dumps(HEAVY), json.dumps(lines)], cwd=PROJECT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("IMPORTED="))
    return json.loads(line[len("IMPORTED="):])


def test_top_level_help_imports_no_heavy_package():
    seen = _imported_by([["--help"]])
    assert seen == [[]], f"`zalo-music --help` imported {seen[0]}: keep those imports inside the sub-commands"


def test_sub_command_help_imports_no_heavy_package():
    """Each sub-command's --help, one after the other in one process: none imports torch & co."""
    commands = list(_subparsers(build_parser()))
    assert {"generate", "export", "train", "demo", "tokenize", "standins", "doctor", "score"} <= set(commands)
    seen = _imported_by([[c, "--help"] for c in commands])
    culprits = {c: s for c, s in zip(commands, seen, strict=True) if s}
    assert not culprits, f"--help imported heavy packages (first offender first): {culprits}"


def test_help_is_fast():
    """`zalo-music --help` and `zalo-music score --help` each answer in under a second (a fresh interpreter)."""
    for args in (["--help"], ["score", "--help"]):
        best = min(_wall_seconds(args) for _ in range(2))  # best of two: the machine is shared
        assert best < 1.0, f"zalo-music {' '.join(args)} took {best:.2f} s"


def _wall_seconds(args: list[str]) -> float:
    import time

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "zalo_music.cli", *args], cwd=PROJECT, capture_output=True,
                          text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    return elapsed


def test_every_option_of_every_sub_command_shows_its_default_honestly():
    """Required options say "(required)", flags "(default: on|off)", None-default options say in words what
    happens ("(default: all cores)"), the others show their value; never "(default: None)", never two."""
    parser = build_parser()
    commands = _subparsers(parser)
    assert len(commands) >= 16
    problems = []
    for name, sub in commands.items():
        help_text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.option_strings and action.nargs not in ("?", "*"):
                continue  # a required positional: no default to show
            formatter = sub._get_formatter()
            formatter.add_argument(action)
            shown = " ".join(formatter.format_help().split())
            label = f"zalo-music {name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help != argparse.SUPPRESS, f"{label}: no help"
            assert shown.split(" ")[0] in help_text, label
            if action.required and action.option_strings:
                expected = "(required)"
            elif isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
                expected = f"(default: {'on' if action.default else 'off'})"
            elif action.default is None:
                expected = "(default: "
            else:
                expected = f"(default: {action.default})"
            if expected not in shown or "(default: None)" in shown or shown.count("(default:") > 1:
                problems.append(f"{label}: {shown[-90:]!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("command", ["score", "generate"])
def test_sub_command_help_lists_its_options(command, capsys):
    from zalo_music.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: zalo-music {command}" in out and "(default:" in out
