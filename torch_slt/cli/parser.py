"""An ``argparse`` parser that refuses abbreviated flags and suggests the flag a typo meant.

``argparse`` accepts any unambiguous prefix of a long flag by default, so ``sweep --sparsity 0.5``
silently meant ``--sparsities 0.5`` (and a later flag could turn it ambiguous), while a typo such as
``find --sparsty 0.9`` got only "unrecognized arguments". Here a flag must be typed in full, and an
unknown one is answered with the command's closest flags (:func:`difflib.get_close_matches`).
"""

from __future__ import annotations

import argparse
import difflib
from typing import Sequence


class SuggestingParser(argparse.ArgumentParser):
    """``ArgumentParser`` with ``allow_abbrev=False`` and "did you mean" for unknown flags."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Sequence[str] | None = None, namespace=None):  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._command_parser(parsed)
            command.error(unknown_arguments_message(command, extras))
        return parsed

    def _command_parser(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The sub-command's parser (its flags are the ones to suggest), else this one."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                name = getattr(parsed, action.dest, None)
                if name in action.choices:
                    return action.choices[name]
        return self


def flags_of(parser: argparse.ArgumentParser) -> list[str]:
    """Every long flag the parser takes, as typed (hidden ones excluded)."""
    return [opt for action in parser._actions if action.help is not argparse.SUPPRESS
            for opt in action.option_strings if opt.startswith("--")]


def suggestion(parser: argparse.ArgumentParser, typed: str) -> str | None:
    """The closest flag of ``parser`` to ``typed`` (``--sparsty`` -> ``--sparsity``), if any is close."""
    flag = typed.split("=", 1)[0]
    known = flags_of(parser)
    close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
    if not close:  # a prefix of one flag (an abbreviation, no longer accepted)
        close = [k for k in known if k.startswith(flag) and len(flag) > 2][:1]
    return close[0] if close else None


def unknown_arguments_message(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """``unrecognized arguments: --sparsty 0.9 (did you mean --sparsity?)``"""
    hints = []
    for typed in extras:
        if typed.startswith("--"):
            close = suggestion(parser, typed)
            if close:
                hints.append((typed.split("=", 1)[0], close))
    text = f"unrecognized arguments: {' '.join(extras)}"
    if len(hints) == 1:
        text += f" (did you mean {hints[0][1]}?)"
    elif hints:
        text += " (did you mean " + ", ".join(f"{close} for {typed}" for typed, close in hints) + "?)"
    return text + f". Flags are typed in full; see '{parser.prog} --help'."
