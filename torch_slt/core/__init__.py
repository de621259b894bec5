"""The gating core: the method protocol, the registry, target selection, state and reports.

Everything here depends only on torch (and on the methods registered in :mod:`torch_slt.methods`). It
never imports the experiment layer (:mod:`torch_slt.experiment`), the subsystems built on top of it or
the command line: ``tests/test_architecture.py`` checks that rule. See ``docs/architecture.md``.
"""
