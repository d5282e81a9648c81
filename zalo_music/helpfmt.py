"""The one `--help` formatter of every `zalo-music` command: each option says its default, honestly.

argparse's `ArgumentDefaultsHelpFormatter` appends "(default: None)" to required options and to options whose
help already explains what None means ("(default: all cores) (default: None)"). This one appends:

- "(required)" to a required option;
- nothing when the help text already says "(default: ...)" itself (the None options: what happens then);
- "(default: off)" to an on/off flag;
- "(default: VALUE)" otherwise.
An optional option with default None and no "(default: ...)" of its own is a bug `tests/test_cli_help.py` finds.
"""

from __future__ import annotations

import argparse


def default_note(action: argparse.Action) -> str:
    """The note appended to `action`'s help ('' when its help already says it).

    Args:
        action: one argparse option.
    """
    text = action.help or ""
    if not action.option_strings:  # argparse marks a `nargs="*"` positional required; it is not
        if action.nargs not in ("?", "*") or "(default:" in text:
            return ""
        return " (default: none)" if action.default in (None, []) else " (default: %(default)s)"
    if action.required:
        return " (required)"
    if "(default:" in text or action.default is argparse.SUPPRESS:
        return ""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return f" (default: {'on' if action.default else 'off'})"
    if action.default is None:
        return ""
    return " (default: %(default)s)"


class HelpFormatter(argparse.HelpFormatter):
    """`--help` with honest defaults (see the module docstring)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return (action.help or "") + default_note(action)


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`HelpFormatter` that keeps the description's own line breaks (commands with a long description)."""
