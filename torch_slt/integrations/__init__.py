"""Integrations with training frameworks. Each submodule imports its framework lazily, on use:

* :mod:`torch_slt.integrations.hf`: :class:`~torch_slt.integrations.hf.SLTTrainer`, a
  ``transformers.Trainer`` that adds the penalty to the loss and optimizes the gates.
* :mod:`torch_slt.integrations.lightning`: :class:`~torch_slt.integrations.lightning.SLTCallback`, a
  Lightning callback that gates the module at ``setup``, logs sparsity and can finalize at the end.
"""
