"""Train masks with the Hugging Face ``transformers.Trainer``, no custom loop.

:class:`SLTTrainer` is a ``Trainer`` with three changes:

* the loss it backpropagates is the model's loss plus :func:`torch_slt.penalty` (training only, scaled
  like the loss under gradient accumulation);
* the optimizer it creates holds exactly :func:`torch_slt.mask_parameters` (``train="masks"``, the
  default), or every parameter with ``requires_grad`` (``train="trainable"``: gates plus whatever you
  unfroze, e.g. a new classification head, or the weights under a fixed mask). Gates never get weight
  decay: the penalty is their regularizer. Everything else (optimizer type, learning-rate schedule,
  mixed precision, DDP, logging) is the ``Trainer``'s, driven by ``TrainingArguments`` as usual;
* its logs add ``slt_sparsity`` (fraction of gated weights the hard masks remove) and ``slt_penalty``.

Gate the model before building the trainer, and finalize it after training::

    model = torch_slt.apply(ViTForImageClassification.from_pretrained(path), "stg", lam=0.05,
                            exclude=["classifier"])
    trainer = SLTTrainer(model=model, args=TrainingArguments("out", learning_rate=0.05), train_dataset=ds)
    trainer.train()
    torch_slt.finalize(model).save_pretrained("pruned")   # loads into the unmodified class

Intermediate ``Trainer`` checkpoints hold the gated state_dict; reload one into a fresh model with
:func:`torch_slt.load_state_dict` (or resume with ``trainer.train(resume_from_checkpoint=...)`` on a
model gated the same way).
"""

from __future__ import annotations

from typing import Any

from torch import nn

import torch_slt
from torch_slt.core.errors import NotGatedError

try:
    from transformers import Trainer
except ImportError as err:  # pragma: no cover - exercised only without transformers
    raise ImportError(
        "torch_slt.integrations.hf needs transformers: pip install 'torch-slt[hf]'"
    ) from err

_TRAIN_CHOICES = ("masks", "trainable")


class SLTTrainer(Trainer):
    """A ``transformers.Trainer`` that trains torch_slt gates; see the module docstring.

    Args:
        *args, **kwargs: those of ``transformers.Trainer``. ``model`` must already be gated
            (:func:`torch_slt.apply`).
        train: ``"masks"`` (default) gives the optimizer exactly :func:`torch_slt.mask_parameters`;
            ``"trainable"`` gives it every parameter with ``requires_grad=True``.

    Example:
        >>> import tempfile, torch, torch_slt
        >>> from transformers import TrainingArguments, ViTConfig, ViTForImageClassification
        >>> from torch_slt.integrations.hf import SLTTrainer
        >>> config = ViTConfig(image_size=8, patch_size=4, hidden_size=8, num_hidden_layers=1,
        ...                    num_attention_heads=2, intermediate_size=8, num_labels=2)
        >>> model = torch_slt.apply(ViTForImageClassification(config), "stg", lam=0.1)
        >>> data = [{"pixel_values": torch.randn(3, 8, 8), "labels": i % 2} for i in range(4)]
        >>> args = TrainingArguments(tempfile.mkdtemp(), max_steps=1, per_device_train_batch_size=4,
        ...                          report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
        >>> _ = SLTTrainer(model=model, args=args, train_dataset=data).train()  # doctest: +ELLIPSIS
        {'train_runtime': ...}
    """

    def __init__(self, *args: Any, train: str = "masks", **kwargs: Any) -> None:
        if train not in _TRAIN_CHOICES:
            raise ValueError(f"SLTTrainer: train={train!r} is not one of {', '.join(map(repr, _TRAIN_CHOICES))}")
        self.slt_train = train
        self._slt_penalty_sum = 0.0
        self._slt_penalty_count = 0
        super().__init__(*args, **kwargs)
        if self.model is not None and not torch_slt.is_gated(self.model):
            raise NotGatedError(
                "SLTTrainer: the model has no torch_slt gates; gate it first, e.g. "
                "model = torch_slt.apply(model, 'stg', lam=0.1), then build the trainer"
            )

    # ------------------------------------------------------------------ optimizer
    def _slt_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        if self.slt_train == "masks":
            params = list(torch_slt.mask_parameters(model))
            if not params:
                raise ValueError(
                    "SLTTrainer: the model has no learned gates (a fixed-mask method?), so train='masks' "
                    "has nothing to optimize; use SLTTrainer(..., train='trainable') to fine-tune the "
                    "parameters that require grad under the fixed mask"
                )
            return params
        return [p for p in model.parameters() if p.requires_grad]

    def create_optimizer(self, *args: Any, **kwargs: Any):
        """The ``Trainer``'s optimizer (type and hyperparameters from ``TrainingArguments``), built over
        the gates only (``train="masks"``) or every trainable parameter (``train="trainable"``)."""
        if self.optimizer is not None:
            return self.optimizer
        model = kwargs.get("model", args[0] if args else None)
        model = self.model if model is None else model
        keep = {id(p) for p in self._slt_parameters(model)}
        hidden = [p for p in model.parameters() if p.requires_grad and id(p) not in keep]
        # Trainer collects the parameters that require grad; hide the others while it does.
        for p in hidden:
            p.requires_grad_(False)
        try:
            return super().create_optimizer(*args, **kwargs)
        finally:
            for p in hidden:
                p.requires_grad_(True)

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        gates = {n for n, _ in torch_slt.named_mask_parameters(model)}
        return [n for n in super().get_decay_parameter_names(model) if n not in gates]

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None):
        """The model's loss plus :func:`torch_slt.penalty` while training."""
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)
        if model.training:
            penalty = torch_slt.penalty(model)
            if self._slt_loss_is_scaled_for_ga(num_items_in_batch):
                # Trainer will not divide this loss by the accumulation steps; the penalty, computed
                # once per micro-batch, must be.
                penalty = penalty / getattr(self, "current_gradient_accumulation_steps",
                                            self.args.gradient_accumulation_steps)
            loss = loss + penalty.to(loss.device)
            self._slt_penalty_sum += float(penalty.detach())
            self._slt_penalty_count += 1
        return (loss, outputs) if return_outputs else loss

    def _slt_loss_is_scaled_for_ga(self, num_items_in_batch: Any) -> bool:
        # Mirrors Trainer.training_step: is the loss already normalized over the accumulated batch?
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is not None:
            return bool(scaled)
        return bool((getattr(self, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None)
                    or getattr(self, "compute_loss_func", None) is not None)

    # ------------------------------------------------------------------ logging
    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self.model is not None and torch_slt.is_gated(self.model):
            logs["slt_sparsity"] = round(torch_slt.report(self.model).sparsity, 6)
            if self._slt_penalty_count:
                logs["slt_penalty"] = self._slt_penalty_sum / self._slt_penalty_count
                self._slt_penalty_sum, self._slt_penalty_count = 0.0, 0
        super().log(logs, *args, **kwargs)
