"""Natural corruptions at five severities, in the style of Hendrycks & Dietterich, "Benchmarking Neural
Network Robustness to Common Corruptions and Perturbations", ICLR 2019 (CIFAR-10-C parameters, the
closest published ones for 28x28 / 32x32 images).

Every function maps a batch of pixels ``N x C x H x W`` in [0, 1] to a corrupted batch in [0, 1] with
torch ops only (no ImageMagick / OpenCV / scikit-image as in the original scripts), seeded by a
``torch.Generator``:

==================  ====================================  ==========================================
corruption          operation                             severity 1..5
==================  ====================================  ==========================================
gaussian_noise      ``x + N(0, c^2)``                     c = .04 .06 .08 .09 .10
shot_noise          ``Poisson(x c) / c``                  c = 500 250 100 75 50
impulse_noise       salt and pepper on a fraction c       c = .01 .02 .03 .05 .07
defocus_blur        disk of radius r, Gaussian-smoothed   (r, sigma) = (.3,.4) (.4,.5) (.5,.6) (1,.2)
                    edges (sigma), reflect padding        (1.5,.1)
contrast            ``(x - mean) c + mean`` per image     c = .75 .5 .4 .3 .15
brightness          HSV value ``+ c`` (grey: ``x + c``)   c = .05 .1 .15 .2 .3
pixelate            downsample to ``c`` of the size       c = .95 .9 .85 .75 .65
                    (antialiased), upsample back
                    bilinearly
==================  ====================================  ==========================================

The metric reports the error per corruption and severity and, given the dense model's errors, the
**corruption error** ``CE_c = sum_s E_{s,c} / sum_s E_{s,c}^dense`` and **mCE**, its mean over
corruptions (Hendrycks & Dietterich normalise by AlexNet; here the dense network is the baseline, so
the dense model has mCE 1 and a ticket below 1 is more robust than it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from torch_slt.evaluation.context import EvaluationInputError
from torch_slt.evaluation.registry import HIGHER, LOWER, register_metric

_GAUSSIAN = (0.04, 0.06, 0.08, 0.09, 0.10)
_SHOT = (500.0, 250.0, 100.0, 75.0, 50.0)
_IMPULSE = (0.01, 0.02, 0.03, 0.05, 0.07)
_DEFOCUS = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))
_CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
_BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)
_PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)


def gaussian_noise(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    c = _GAUSSIAN[severity - 1]
    return (x + c * torch.randn(x.shape, generator=generator, dtype=x.dtype)).clamp(0, 1)


def shot_noise(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    c = _SHOT[severity - 1]
    return (torch.poisson(x.clamp(0, 1) * c, generator=generator) / c).clamp(0, 1)


def impulse_noise(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    amount = _IMPULSE[severity - 1]
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype)
    out = torch.where(u < amount / 2, torch.zeros_like(x), x)  # pepper
    return torch.where((u >= amount / 2) & (u < amount), torch.ones_like(x), out)  # salt


def defocus_kernel(radius: float, sigma: float) -> Tensor:
    """The disk of ``radius`` (pixels whose centre is within it), smoothed by a 3x3 Gaussian of
    ``sigma`` as Hendrycks' aliased disk, normalised to sum 1."""
    half = math.ceil(radius) + 1
    grid = torch.arange(-half, half + 1, dtype=torch.float32)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius ** 2).float()
    g = torch.exp(-torch.arange(-1, 2, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    g = (g[:, None] * g[None, :]) / (g.sum() ** 2)
    kernel = F.conv2d(disk[None, None], g[None, None], padding=1)[0, 0]
    return kernel / kernel.sum()


def defocus_blur(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    kernel = defocus_kernel(*_DEFOCUS[severity - 1]).to(x)
    channels, pad = x.shape[1], kernel.shape[-1] // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    weight = kernel.expand(channels, 1, -1, -1)
    return F.conv2d(padded, weight, groups=channels).clamp(0, 1)


def contrast(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    c = _CONTRAST[severity - 1]
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - mean) * c + mean).clamp(0, 1)


def brightness(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    # Adding c to the HSV value with hue and saturation fixed scales every channel by (v + c) / v.
    c = _BRIGHTNESS[severity - 1]
    value = x.amax(dim=1, keepdim=True)
    new = (value + c).clamp(0, 1)
    return torch.where(value > 0, x * new / value.clamp(min=1e-12), new.expand_as(x)).clamp(0, 1)


def pixelate(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    c = _PIXELATE[severity - 1]
    height, width = x.shape[-2:]
    # Down with an antialiased (area-weighted) filter, back up bilinearly: the original's PIL BOX
    # resampling both ways aliases at the non-integer factors of 28-px images (the change from the clean
    # image then falls from severity 3 to 4), bilinear upsampling grows with severity as it should.
    small = F.interpolate(x, size=(max(int(height * c), 1), max(int(width * c), 1)), mode="bilinear",
                          antialias=True, align_corners=False)
    return F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)


#: name -> function(pixels, severity, generator) -> pixels.
CORRUPTION_FUNCTIONS: dict[str, Callable[..., Tensor]] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur, "contrast": contrast, "brightness": brightness, "pixelate": pixelate,
}


def corrupt(pixels: Tensor, name: str, severity: int, *, seed: int = 0) -> Tensor:
    """``pixels`` (``N x C x H x W`` in [0, 1]) with corruption ``name`` at ``severity`` (1..5).

    Example:
        >>> import torch
        >>> x = torch.rand(2, 1, 28, 28)
        >>> y = corrupt(x, "contrast", 5)
        >>> y.shape == x.shape and bool(y.std() < x.std())
        True
    """
    if name not in CORRUPTION_FUNCTIONS:
        raise EvaluationInputError(f"corrupt(): unknown corruption {name!r}; choose from "
                                   f"{', '.join(CORRUPTION_FUNCTIONS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise EvaluationInputError(f"corrupt(): severity={severity!r} must be 1, 2, 3, 4 or 5")
    if pixels.ndim != 4:
        raise EvaluationInputError(f"corrupt(): expected N x C x H x W images, got shape "
                                   f"{tuple(pixels.shape)}")
    generator = torch.Generator().manual_seed(seed)
    return CORRUPTION_FUNCTIONS[name](pixels.float(), severity, generator)


def mean_corruption_error(errors: dict[str, list[float]],
                          reference: dict[str, list[float]]) -> dict[str, Any]:
    """``{"mce": ..., "ce": {corruption: CE_c}}`` of per-severity errors against the dense model's."""
    ce = {}
    for name, errs in errors.items():
        base = reference.get(name)
        if base is None or len(base) != len(errs) or sum(base) == 0:
            continue
        ce[name] = sum(errs) / sum(base)
    return {"mce": sum(ce.values()) / len(ce) if ce else float("nan"), "ce": ce}


@register_metric("corruptions", better={"corruption_accuracy": HIGHER, "mce": LOWER},
                 reference="Hendrycks & Dietterich, ICLR 2019 (CIFAR-10-C severities)")
def _corruptions(ctx) -> dict[str, Any]:
    if ctx.inputs.ndim != 4:
        return {"corruption_errors": {}}
    s = ctx.settings
    pixels = ctx.pixels.to_pixels(ctx.inputs)
    errors: dict[str, list[float]] = {}
    for i, name in enumerate(s.corruptions):
        errors[name] = []
        for severity in s.severities:
            # one fixed noise draw per (corruption, severity): every model sees the same images
            seed = s.seed + 1000 * i + severity
            corrupted = ctx.pixels.normalize(corrupt(pixels, name, severity, seed=seed))
            correct = (ctx.predict(corrupted).argmax(1) == ctx.labels).double().mean()
            errors[name].append(float(1.0 - correct))
    flat = [e for errs in errors.values() for e in errs]
    out: dict[str, Any] = {"corruption_accuracy": 1.0 - sum(flat) / len(flat), "corruption_errors": errors,
                           "severities": list(s.severities)}
    reference = (ctx.reference or {}).get("corruption_errors")
    if reference:
        out.update(mean_corruption_error(errors, reference))
    return out
