r"""The training loop shared by the ``torch-slt`` command line, the examples and the benchmarks.

:func:`fit` trains the masks of a gated model (its weights stay frozen), or the weights as well with
``train_weights=True`` (the weak-ticket variant; the default of the one-shot methods, whose mask is
fixed at ``apply``), or every weight of an ungated model (the dense baseline). The loss is cross
entropy plus :func:`torch_slt.penalty`. Each epoch ends with an evaluation
on the validation split and, when ``checkpoint`` is given, a resume checkpoint, so that a killed run
started again with ``resume=True`` ends with exactly the ticket of an uninterrupted run.

Settings left at ``None`` in :class:`TrainConfig` come from :data:`METHOD_DEFAULTS`, one row per method,
taken from the reference implementations (see ``docs/cli.md`` for the table and its sources).

Example:
    >>> import torch, torch_slt
    >>> from torch.utils.data import TensorDataset
    >>> from torch_slt.experiment.train import TrainConfig, accuracy, fit
    >>> data = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
    >>> model = torch_slt.apply(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
    ...                                             torch.nn.Linear(8, 2)), "stg")
    >>> result = fit(model, data, data, TrainConfig(epochs=2, batch_size=16, quiet=True))
    >>> [row["epoch"] for row in result.history]
    [1, 2]
    >>> 0.0 <= accuracy(model, data) <= 1.0
    True
"""

# evaluate: the deprecated name of accuracy, importable for one more release.
from torch_slt.experiment.train.batches import (TensorBatches, accuracy, evaluate,  # noqa: F401
                                                method_of, resolve_device)
from torch_slt.experiment.train.config import (METHOD_DEFAULTS, FitResult, MethodDefaults, TrainConfig,
                                               method_defaults)
from torch_slt.experiment.train.loop import fit

__all__ = ["METHOD_DEFAULTS", "FitResult", "MethodDefaults", "TensorBatches", "TrainConfig", "accuracy",
           "fit", "method_defaults", "method_of", "resolve_device"]
