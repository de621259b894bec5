"""Detection of non-finite gate tensors (NaN or infinity in ``weight_mu``, ``weight_log_alpha``, scores).

One training step on a batch holding a NaN turns every gate it reaches into NaN. The hard masks then
look normal (``NaN > 0`` is false, so those weights simply read as pruned), and ``report`` and
``finalize`` would hand out a ticket chosen by NaN. The check below runs where a result leaves the
library (:func:`torch_slt.finalize` refuses, :func:`torch_slt.report` warns, ``fit`` stops at the end of
the epoch; the model-level checks are :func:`torch_slt.core.health.nonfinite_gates` and
:func:`~torch_slt.core.health.check_finite_gates`), not in the forward pass: it reads every gate once and waits for the device, which is cheap
once per epoch but not once per step. A ``GradScaler`` that skips steps with non-finite gradients
never writes them into the gates, so mixed precision passes the check.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


FIX = ("Look for NaN or infinite inputs or losses (e.g. assert torch.isfinite(x).all() on the "
       "batches), lower the learning rate, or use torch.amp.GradScaler, which skips steps whose "
       "gradients are not finite; then restart from a checkpoint saved before the fault "
       "(fit's checkpoint= keeps the last good epoch).")


def hook_tensors(module_name: str, module: nn.Module, hook) -> list[tuple[str, Tensor]]:
    """``(qualified name, tensor)`` for the learned tensors of one gate."""
    stem = hook._tensor_name
    found = []
    for key in [f"{stem}_{field}" for field in hook.fields]:
        tensor = module._parameters.get(key)
        if tensor is None:
            tensor = module._buffers.get(key)
        if tensor is not None and tensor.is_floating_point():
            found.append((f"{module_name}.{key}" if module_name else key, tensor))
    return found


def nonfinite(tensors: list[tuple[str, Tensor]]) -> list[str]:
    """The names of ``tensors`` that hold a NaN or an infinity (one device wait when none does)."""
    if not tensors:
        return []
    with torch.no_grad():
        # A sharded gate (FSDP2's DTensor) is checked shard by shard on each rank: no collective here
        # (a NaN batch's gradients are all-reduced, so every rank sees its NaNs).
        flags = [torch.isfinite(t.to_local() if hasattr(t, "to_local") else t).all() for _, t in tensors]
        device = flags[0].device
        if bool(torch.stack([f.to(device) for f in flags]).all()):  # the one wait for the device
            return []
        return [name for (name, _), ok in zip(tensors, flags) if not bool(ok)]


def message(names: list[str], who: str) -> str:
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return (f"{who}: the gate tensors {shown} hold NaN or infinite values, so their masks mean "
            f"nothing (a NaN gate reads as pruned). {FIX}")


def check_finite_scores(scores: list[Tensor], names: list[str], who: str) -> None:
    """Refuse importance scores that hold NaN or infinity, before they choose a mask.

    ``topk`` ranks NaN above every number, so a NaN weight or a NaN batch would otherwise pick a mask
    without a word (SNIP with one NaN row keeps 4/32 of a layer instead of 16/32).
    """
    bad = nonfinite(list(zip(names, scores)))
    if bad:
        from torch_slt.core.errors import NonFiniteError

        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise NonFiniteError(
            f"{who}: the importance scores of {shown} hold NaN or infinite values, so they cannot rank the "
            f"weights (NaN would rank highest). The weights themselves or the data hold NaN/inf, or the "
            f"loss overflowed: check torch.isfinite(p).all() for the model's parameters and the batches; "
            f"the model is left unchanged.")
