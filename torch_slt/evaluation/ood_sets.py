"""Offline OoD sets for image classifiers, built from what is installed (nothing is downloaded).

* ``digits``: scikit-learn's 8x8 handwritten digits, upsampled (bilinear) to the test images' size,
  the classic near-OoD set for (Fashion-)MNIST-like data (skipped when the test data is 8x8 itself);
* ``gaussian``: i.i.d. ``N(0.5, 1)`` pixels clipped to [0, 1], and ``uniform``: i.i.d. ``U[0, 1]``
  pixels (the noise sets of Hendrycks et al., "Deep Anomaly Detection with Outlier Exposure", ICLR
  2019);
* ``vflip``: the test images flipped upside down (far from shoes and shirts, close for some digits).

Every set is normalised like the test inputs. ``EvalSettings.ood_data`` adds any dataset the user
has (already normalised), by name.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from torch_slt.evaluation.context import EvalContext, as_tensors


def build_ood_sets(ctx: EvalContext) -> dict[str, Tensor]:
    """Name -> normalised OoD inputs for the built-in sets of ``ctx.settings.ood_sets`` that apply to
    the test data, plus ``ctx.settings.ood_data``."""
    s = ctx.settings
    generator = torch.Generator().manual_seed(s.seed)
    sets: dict[str, Tensor] = {}
    images = ctx.inputs.ndim == 4
    n = min(s.ood_samples, len(ctx.inputs))
    for name in s.ood_sets if images else ():
        pixels = _BUILDERS[name](ctx, n, generator)
        if pixels is not None:
            sets[name] = ctx.pixels.normalize(pixels)
    for name, data in s.ood_data.items():
        sets[name] = _user_inputs(data)
    return sets


def _user_inputs(data: Any) -> Tensor:
    if isinstance(data, Tensor):
        return data.float()
    return as_tensors(data)[0]


def _digits(ctx: EvalContext, n: int, generator: torch.Generator) -> Tensor | None:
    _, channels, height, width = ctx.inputs.shape
    if (height, width) == (8, 8):
        return None  # the test data is (likely) the digits themselves
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError('the "digits" OoD set needs scikit-learn: pip install "torch-slt[cli]", or leave '
                          '"digits" out of EvalSettings.ood_sets') from err
    images = torch.as_tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    order = torch.randperm(len(images), generator=generator)[:n]
    images = F.interpolate(images[order], size=(height, width), mode="bilinear", align_corners=False)
    return images.clamp(0, 1).expand(-1, channels, -1, -1).contiguous()


def _gaussian(ctx: EvalContext, n: int, generator: torch.Generator) -> Tensor:
    shape = (n,) + tuple(ctx.inputs.shape[1:])
    return (0.5 + torch.randn(shape, generator=generator)).clamp(0, 1)


def _uniform(ctx: EvalContext, n: int, generator: torch.Generator) -> Tensor:
    return torch.rand((n,) + tuple(ctx.inputs.shape[1:]), generator=generator)


def _vflip(ctx: EvalContext, n: int, generator: torch.Generator) -> Tensor:
    return ctx.pixels.to_pixels(ctx.inputs[:n]).flip(dims=(-2,))


_BUILDERS = {"digits": _digits, "gaussian": _gaussian, "uniform": _uniform, "vflip": _vflip}
