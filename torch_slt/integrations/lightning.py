"""A Lightning callback for torch_slt: gate the module at ``setup``, check the optimizer, log sparsity,
optionally finalize when training ends.

The loss stays yours (Lightning's ``training_step`` returns it), so add the penalty there; it is one
term::

    class Net(L.LightningModule):
        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y) + torch_slt.penalty(self)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(torch_slt.mask_parameters(self), lr=0.05)

    trainer = L.Trainer(max_epochs=10, callbacks=[SLTCallback("stg", lam=0.1, finalize=True)])

Why not add the penalty inside the callback: a callback cannot change the loss Lightning backpropagates
(``on_before_backward`` only sees it), and a second ``backward`` for the penalty would bypass Lightning's
loss scaling (16-bit AMP) and gradient-accumulation normalisation. One explicit term is simpler and right
in every configuration.

Gates are created in ``setup``, before ``configure_optimizers`` runs and before Lightning restores a
checkpoint (``trainer.fit(..., ckpt_path=...)``), so a gated checkpoint loads into the gated module
strictly, and ``torch_slt.mask_parameters(self)`` in ``configure_optimizers`` sees the gates.

A sparsity target without ``total_steps`` (``SLTCallback("stg", sparsity=0.9)``) gets the run's
optimiser steps, ``trainer.estimated_stepping_batches``, at train start (said once, at info level); a
``total_steps`` you passed is kept.

BatchNorm: ``stg``, ``hardconcrete``, ``supermask`` and ``cs`` train with sampled or relaxed masks, so
the running statistics describe another network than the ticket (a ResNet-18 ticket at chance until
they are re-estimated). When they are stale the callback re-estimates them with the hard masks
(:func:`torch_slt.recalibrate_batchnorm` on the first ``recalibration_steps`` training batches) before
each validation run and when training ends (before ``finalize``), as ``fit`` does after every epoch.
A ``forward`` that cannot take a training batch's input warns with the fix instead.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

import torch_slt
from torch_slt.core.errors import NotGatedError
from torch_slt.core.targets import Selector

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - the standalone package name
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError as err:
        raise ImportError("torch_slt.integrations.lightning needs Lightning: pip install lightning") from err

logger = logging.getLogger(__name__)


def _info(message: str) -> None:
    """Lightning's own info channel (shown by default, rank 0 only) when it is there."""
    try:
        from lightning.pytorch.utilities import rank_zero_info
    except ImportError:  # pragma: no cover - the standalone package
        try:
            from pytorch_lightning.utilities import rank_zero_info
        except ImportError:
            logger.info(message)
            return
    rank_zero_info(message)


class SLTCallback(Callback):
    """Gate a ``LightningModule`` for mask training; see the module docstring.

    Args:
        method: a torch_slt method name (``"stg"``, ...), applied in ``setup`` unless the module is
            already gated; ``None`` when you gate the module yourself (e.g. in its ``__init__``).
        targets, exclude, freeze, **method_kwargs: as in :func:`torch_slt.apply`.
        finalize: call :func:`torch_slt.finalize` on the module when training ends (default False).
        check_optimizer: at train start, raise if the optimizers do not hold every gate Parameter
            (the usual slip: ``configure_optimizers`` built before gating, or over another module).
        log_sparsity: log ``slt/sparsity`` (fraction of gated weights removed by the hard masks) and
            ``slt/penalty`` every ``trainer.log_every_n_steps`` steps and at each epoch end.
        recalibrate_batchnorm: re-estimate stale BatchNorm statistics with the hard masks before each
            validation run and at train end (see the module docstring); no effect without BatchNorm.
        recalibration_steps: training batches used for each re-estimate (8).
    """

    def __init__(self, method: str | None = None, *, targets: Selector = None, exclude: Selector = None,
                 freeze: bool | None = None, finalize: bool = False, check_optimizer: bool = True,
                 log_sparsity: bool = True, recalibrate_batchnorm: bool = True,
                 recalibration_steps: int = 8, **method_kwargs: Any) -> None:
        super().__init__()
        if not isinstance(recalibration_steps, int) or isinstance(recalibration_steps, bool) \
                or recalibration_steps < 1:
            raise ValueError(f"SLTCallback: recalibration_steps={recalibration_steps!r} must be a positive "
                             f"int (training batches per re-estimate, e.g. 8)")
        if method is not None:
            cls = torch_slt.get_method(method)   # unknown names fail here, not at setup
            from torch_slt.core.validation import check_kwargs

            check_kwargs(cls, method_kwargs)
        elif method_kwargs:
            raise TypeError(f"SLTCallback: hyperparameters {sorted(method_kwargs)} given without a method")
        self.method = method
        self.apply_kwargs = dict(targets=targets, exclude=exclude, freeze=freeze, **method_kwargs)
        self.finalize = finalize
        self.check_optimizer = check_optimizer
        self.log_sparsity = log_sparsity
        self.recalibrate_batchnorm = recalibrate_batchnorm
        self.recalibration_steps = recalibration_steps
        self._said_recalibrated = False

    def setup(self, trainer: Any, pl_module: torch.nn.Module, stage: str) -> None:
        if torch_slt.is_gated(pl_module):
            return
        if self.method is None:
            if stage == "fit":
                raise NotGatedError(
                    "SLTCallback(method=None): the LightningModule has no torch_slt gates; gate it in its "
                    "__init__ (torch_slt.apply(self, 'stg')) or pass a method: SLTCallback('stg', lam=0.1)"
                )
            return
        torch_slt.apply(pl_module, self.method, **self.apply_kwargs)

    def on_train_start(self, trainer: Any, pl_module: torch.nn.Module) -> None:
        self._set_total_steps(trainer, pl_module)
        if not self.check_optimizer:
            return
        held = {id(p) for opt in trainer.optimizers for g in opt.param_groups for p in g["params"]}
        missing = [n for n, p in torch_slt.named_mask_parameters(pl_module) if id(p) not in held]
        if missing:
            shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise ValueError(
                f"SLTCallback: {len(missing)} gate Parameter(s) are in no optimizer ({shown}); "
                f"configure_optimizers() should optimize torch_slt.mask_parameters(self), e.g. "
                f"torch.optim.Adam(torch_slt.mask_parameters(self), lr=0.05)"
            )

    def _set_total_steps(self, trainer: Any, pl_module: torch.nn.Module) -> None:
        """Sparsity targets without ``total_steps`` get the run's optimiser steps (when finite)."""
        from torch_slt.core.schedule_setup import set_total_steps

        steps = getattr(trainer, "estimated_stepping_batches", None)
        if steps is None or not math.isfinite(steps) or steps < 1:
            return  # an endless run (max_steps=-1, max_epochs=-1): no length to give
        if set_total_steps(pl_module, int(steps)):
            _info(f"SLTCallback: the sparsity target ramps over this run's {int(steps)} optimiser steps "
                  f"(trainer.estimated_stepping_batches; total_steps was not given)")

    def _log(self, pl_module: Any, **kwargs: Any) -> None:
        if not torch_slt.is_gated(pl_module):
            return
        with torch.no_grad():   # no_grad: penalty() must not take a sparsity-target step here
            penalty = float(torch_slt.penalty(pl_module))
        sparsity = torch_slt.report(pl_module).sparsity
        pl_module.log("slt/sparsity", sparsity, **kwargs)
        pl_module.log("slt/penalty", penalty, **kwargs)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        every = max(1, int(getattr(trainer, "log_every_n_steps", 50) or 1))
        if self.log_sparsity and trainer.global_step % every == 0:
            self._log(pl_module, on_step=True, on_epoch=False)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.log_sparsity:
            self._log(pl_module, on_step=False, on_epoch=True)

    def on_validation_start(self, trainer: Any, pl_module: torch.nn.Module) -> None:
        if getattr(getattr(trainer, "state", None), "fn", None) == "fit":   # not trainer.validate()
            self._recalibrate(trainer, pl_module)

    def on_train_end(self, trainer: Any, pl_module: torch.nn.Module) -> None:
        self._recalibrate(trainer, pl_module)
        if self.finalize and torch_slt.is_gated(pl_module):
            torch_slt.finalize(pl_module)

    def _recalibrate(self, trainer: Any, pl_module: torch.nn.Module) -> None:
        """Re-estimate stale BatchNorm statistics on the first training batches (module docstring)."""
        from torch_slt.core.batchnorm import stale_batchnorm

        if not (self.recalibrate_batchnorm and torch_slt.is_gated(pl_module) and stale_batchnorm(pl_module)):
            return
        batches = getattr(trainer, "train_dataloader", None)
        if batches is None:
            return
        try:
            torch_slt.recalibrate_batchnorm(pl_module, batches, steps=self.recalibration_steps)
        except (TypeError, ValueError, RuntimeError) as err:   # statistics left as they were
            import warnings

            warnings.warn(f"SLTCallback: could not re-estimate the BatchNorm statistics with the hard masks "
                          f"({type(err).__name__}: {err}); the module's forward must take the training "
                          f"batch's input (batch[0], or the batch's keyword arguments). Call "
                          f"torch_slt.recalibrate_batchnorm(module, batches) yourself, or pass "
                          f"recalibrate_batchnorm=False.", stacklevel=2)
            return
        if not self._said_recalibrated:   # once per callback, not at every validation
            self._said_recalibrated = True
            _info(f"SLTCallback: BatchNorm statistics re-estimated with the hard masks on "
                  f"{self.recalibration_steps} training batches, before each validation and at train end")

    def state_dict(self) -> dict[str, Any]:
        # Plain values only, so Lightning checkpoints stay loadable with weights_only=True.
        return {"method": self.method, "finalize": self.finalize}
