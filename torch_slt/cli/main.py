"""The ``torch-slt`` entry point: the root parser, the command table and error handling.

``torch-slt find`` builds a network with random weights from a seed, gates it with a method, trains
the masks (weights frozen), evaluates, finalizes and saves the ticket with a report and a plot.
``torch-slt sweep`` does that for several methods and sparsities on one random network, plus the
dense-trained baseline. ``torch-slt imp`` finds a weak ticket by iterative magnitude pruning with
rewinding. ``torch-slt inspect PATH`` reports on a saved ticket or run folder, and
``torch-slt methods`` lists the registered methods. ``torch-slt evaluate`` measures a run's tickets
beyond accuracy and ``torch-slt compare`` their mask overlap. See ``docs/cli.md``.

A command is a module of :mod:`torch_slt.cli.commands` listed in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import torch_slt
from torch_slt.cli.commands import compare, evaluate, find, imp, inspect, methods, sweep
from torch_slt.cli.parser import SuggestingParser
from torch_slt.cli.settings import CLIError

#: The commands, in ``--help`` order: modules with NAME, HELP, DESCRIPTION, add_arguments(parser) and
#: run(args).
COMMANDS = (find, sweep, imp, evaluate, compare, inspect, methods)


def build_parser() -> argparse.ArgumentParser:
    parser = SuggestingParser(
        prog="torch-slt", description="Find strong lottery tickets: sparse subnetworks of frozen random "
        "weights, found by learning which weights to keep.",
        epilog="Run 'torch-slt COMMAND --help' for the flags of a command; docs/cli.md has them all.")
    parser.add_argument("--version", action="version", version=f"torch-slt {torch_slt.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            print(f"torch-slt {args.command}: error: --threads {threads} must be at least 1.",
                  file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(threads)  # a run-time knob: not part of the settings a resume must match
    try:
        return args.func(args)
    except CLIError as err:
        print(f"torch-slt {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"torch-slt {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``torch-slt inspect DIR | head``): not an error of ours.
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (silences the flush at interpreter exit)
        return 0
    except OSError as err:
        # A full disk or a folder that became unwritable mid-run: the files written so far are whole
        # (atomic writes), so the run continues with --resume once the cause is fixed.
        print(f"torch-slt {args.command}: error: {_os_error(err)}", file=sys.stderr)
        return 2


def _os_error(err: OSError) -> str:
    import errno

    what = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return (f"cannot write ({what}); the files written so far are complete: free some space, then "
                f"continue with --resume.")
    return f"{what}."


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
