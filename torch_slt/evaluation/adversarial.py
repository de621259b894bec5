"""Adversarial robustness: accuracy under FGSM and (optionally) PGD, L-inf radius in pixel units.

* **FGSM** (Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015):
  ``x' = clip(x + eps * sign(grad_x CE(f(x), y)), 0, 1)``.
* **PGD** (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018):
  a uniform random start in the eps-ball, then ``steps`` signed-gradient steps of ``2.5 eps / steps``,
  each projected back onto the eps-ball and [0, 1].

For images (``N x C x H x W``) the adversarial pixels stay in [0, 1]; other inputs (features) are
only kept in the eps-ball.

The attacks work in the model's normalised input space (``eps / std`` per channel), so that ``eps = 0``
feeds the model exactly the clean inputs. Only gradients with respect to the inputs are taken; the
model's parameters and their ``.grad`` are left alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torch_slt.evaluation.context import Pixels, _logits
from torch_slt.evaluation.registry import HIGHER, register_metric


def _input_grad(model: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(_logits(model(x)), labels)
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def attack(model: nn.Module, inputs: Tensor, labels: Tensor, eps: float, pixels: Pixels, *,
           steps: int = 0, generator: torch.Generator | None = None) -> Tensor:
    """Adversarial inputs (normalised like ``inputs``): FGSM when ``steps == 0``, else PGD.

    Example:
        >>> import torch
        >>> from torch_slt.evaluation.context import Pixels
        >>> model, x, y = torch.nn.Linear(4, 2), torch.rand(3, 4), torch.tensor([0, 1, 0])
        >>> identity = Pixels(torch.zeros(1, 1), torch.ones(1, 1))
        >>> torch.equal(attack(model, x, y, 0.0, identity), x)
        True
    """
    radius = eps / pixels.std.to(inputs)
    if inputs.ndim == 4:  # images: stay in the pixel range [0, 1]
        low, high = pixels.normalize(torch.zeros_like(inputs)), pixels.normalize(torch.ones_like(inputs))
    else:  # other features have no natural range: only the eps-ball constrains them
        low, high = torch.full_like(inputs, -torch.inf), torch.full_like(inputs, torch.inf)
    if steps == 0:
        grad = _input_grad(model, inputs, labels)
        return torch.minimum(torch.maximum(inputs + radius * grad.sign(), low), high).detach()
    step = 2.5 * radius / steps
    noise = torch.rand(inputs.shape, generator=generator, dtype=inputs.dtype).to(inputs) * 2 - 1
    x = torch.minimum(torch.maximum(inputs + radius * noise, low), high)
    for _ in range(steps):
        x = x + step * _input_grad(model, x, labels).sign()
        x = torch.minimum(torch.maximum(x, inputs - radius), inputs + radius)
        x = torch.minimum(torch.maximum(x, low), high).detach()
    return x


def adversarial_accuracy(model: nn.Module, inputs: Tensor, labels: Tensor, eps: float, pixels: Pixels, *,
                         steps: int = 0, batch_size: int = 500, seed: int = 0,
                         device: torch.device | str = "cpu") -> float:
    """Accuracy of ``model`` on :func:`attack` inputs, in batches."""
    generator = torch.Generator().manual_seed(seed)
    correct = 0
    was_training = model.training
    model.eval()
    try:
        for x, y in zip(inputs.split(batch_size), labels.split(batch_size)):
            x, y = x.to(device), y.to(device)
            adv = attack(model, x, y, eps, pixels, steps=steps, generator=generator)
            with torch.no_grad():
                correct += int((_logits(model(adv)).argmax(1) == y).sum())
    finally:
        model.train(was_training)
    return correct / len(labels)


@register_metric("adversarial", better={"fgsm_accuracy": HIGHER, "pgd_accuracy": HIGHER},
                 reference="Goodfellow et al., ICLR 2015 (FGSM); Madry et al., ICLR 2018 (PGD)")
def _adversarial(ctx) -> dict[str, Any]:
    s = ctx.settings
    n = min(s.adversarial_samples, len(ctx.labels))
    x, y = ctx.inputs[:n], ctx.labels[:n]
    kwargs = {"batch_size": s.batch_size, "seed": s.seed, "device": ctx.device}
    fgsm = {str(eps): adversarial_accuracy(ctx.model, x, y, eps, ctx.pixels, **kwargs) for eps in s.epsilons}
    out: dict[str, Any] = {"fgsm": fgsm, "adversarial_samples": n}
    if fgsm:
        out["fgsm_accuracy"] = sum(fgsm.values()) / len(fgsm)
    if s.pgd_steps > 0:
        pgd = {str(eps): adversarial_accuracy(ctx.model, x, y, eps, ctx.pixels, steps=s.pgd_steps, **kwargs)
               for eps in s.epsilons}
        out.update({"pgd": pgd, "pgd_steps": s.pgd_steps, "pgd_accuracy": sum(pgd.values()) / len(pgd)})
    return out
