"""One module per ``torch-slt`` command. Each has ``NAME``, ``HELP``, ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args) -> int``; :data:`torch_slt.cli.main.COMMANDS` lists them in
``--help`` order and creates their parsers."""
