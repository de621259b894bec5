"""One module per ``torch-slt`` command. Each has ``NAME``, ``HELP``, ``add_parser(subparsers)`` and
``run(args) -> int``; :data:`torch_slt.cli.main.COMMANDS` lists them in ``--help`` order."""
