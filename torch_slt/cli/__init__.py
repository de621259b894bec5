"""The ``torch-slt`` command line (also ``python -m torch_slt``).

Layout: ``main.py`` (root parser, command table, exit codes), ``settings.py`` (the typed
:class:`RunSettings` built once from the flags), ``flags.py`` (the run flags), ``prepare.py`` (settings
-> data, model, method arguments, training config), ``output.py`` (run folders), ``reports.py``
(markdown), and ``commands/`` (one module per command). See ``docs/architecture.md``.
"""

from torch_slt.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
