"""The model zoo: networks with random weights, rebuilt exactly from a :class:`ModelSpec`.

A strong lottery ticket is a mask over frozen random weights, so the weights must be reproducible:
:func:`build_model` draws them from ``spec.seed`` alone, with a private RNG state, on the CPU, in
float32, so the same spec gives bit-identical weights on every call (with the same library versions;
a compact ticket stores a hash to catch the day they differ) and the caller's global RNG is untouched.

Models (``width`` multiplies the hidden widths of all of them except timm models):

* ``lenet300``: the 300-100 MLP of the lottery-ticket papers (bias-free, like edge-popup's ``FC``).
* ``conv2``, ``conv4``, ``conv6``: the convnets of Frankle & Carbin (2019) as implemented by edge-popup
  (``allenai/hidden-networks``, ``models/frankle.py``): pairs of bias-free 3x3 convs (64, 128, 256
  channels) with ReLU, each pair followed by 2x2 max-pooling, then a bias-free 256-256-classes MLP; no
  batch norm.
* ``resnet18``, ``resnet50``, ``wrn50``: torchvision's ResNets (``wrn50`` is ``wide_resnet50_2``); on
  inputs of at most 64 pixels they get the CIFAR stem (3x3 stride-1 ``conv1``, no max-pool).
* ``vit``, ``swin``: Hugging Face ``ViTForImageClassification`` / ``SwinForImageClassification`` from a
  small config sized for the input (no download); their forward returns a ``ModelOutput``, use
  :func:`logits` to get the tensor.
* ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, ...)``.

Then every ``nn.Linear`` / ``nn.ConvNd`` weight is redrawn with :func:`torch_slt.experiment.init.initialize`
(``spec.init``, ``spec.density``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

import torch
from torch import Tensor, nn

from torch_slt.core.errors import UnknownModelError
from torch_slt.experiment.init import INITIALIZERS, canonical, initialize
from torch_slt.core.outputs import logits_of

MODEL_NAMES: tuple[str, ...] = ("lenet300", "conv2", "conv4", "conv6", "resnet18", "resnet50", "wrn50",
                                "vit", "swin")
TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to regenerate a network's random weights.

    Args:
        name: one of :data:`MODEL_NAMES` or ``"timm:NAME"``.
        in_shape: ``(C, H, W)`` of one input image.
        num_classes: number of outputs.
        width: multiplies hidden widths (not supported for timm models).
        init: the weight initialisation, one of :data:`torch_slt.experiment.init.INITIALIZERS`.
        density: fraction of weights **kept**, in (0, 1]; scales ``scaled-kaiming-normal`` and
            ``signed-constant`` (see :mod:`torch_slt.experiment.init`).
        seed: the seed the random weights are drawn from.

    Example:
        >>> spec = ModelSpec("lenet300", (1, 8, 8), 10, seed=3)
        >>> ModelSpec.from_dict(spec.to_dict()) == spec
        True
    """

    name: str
    in_shape: tuple[int, int, int]
    num_classes: int
    width: float = 1.0
    init: str = "kaiming-normal"
    density: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not (
                self.name in MODEL_NAMES or (self.name.startswith(TIMM_PREFIX) and len(self.name) > 5)):
            raise UnknownModelError(
                f"unknown model {self.name!r}; choose one of {', '.join(MODEL_NAMES)} or 'timm:NAME' "
                f"for any timm model (e.g. 'timm:resnet18')"
            )
        shape = tuple(self.in_shape) if isinstance(self.in_shape, (tuple, list)) else None
        if (shape is None or len(shape) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
            raise ValueError(f"ModelSpec: in_shape must be (channels, height, width) of positive ints, "
                             f"got {self.in_shape!r}")
        object.__setattr__(self, "in_shape", shape)
        if (isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int)
                or self.num_classes < 1):
            raise ValueError(f"ModelSpec: num_classes must be a positive int, got {self.num_classes!r}")
        if isinstance(self.width, bool) or not isinstance(self.width, (int, float)) or not self.width > 0:
            raise ValueError(f"ModelSpec: width must be a positive number (1.0 = standard), "
                             f"got {self.width!r}")
        object.__setattr__(self, "width", float(self.width))
        object.__setattr__(self, "init", canonical(self.init))
        if self.init not in INITIALIZERS:
            raise ValueError(f"ModelSpec: unknown init {self.init!r}; choose one of "
                             f"{', '.join(INITIALIZERS)}")
        if isinstance(self.density, bool) or not isinstance(self.density, (int, float)) \
                or not 0.0 < self.density <= 1.0:
            raise ValueError(f"ModelSpec: density={self.density!r} must be in (0, 1]; it is the fraction of "
                             f"weights KEPT (1 - sparsity)")
        object.__setattr__(self, "density", float(self.density))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 63:
            raise ValueError(f"ModelSpec: seed must be a non-negative int, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``in_shape`` as a list)."""
        d = asdict(self)
        d["in_shape"] = list(self.in_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """The inverse of :meth:`to_dict`; unknown keys are an error (they could change the weights)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ModelSpec.from_dict(): unknown keys {unknown}; known keys are {sorted(known)} "
                             f"(was it written by a newer torch_slt?)")
        return cls(**{**d, "in_shape": tuple(d["in_shape"])})


def build_model(spec: ModelSpec) -> nn.Module:
    """The model ``spec`` describes, with random weights drawn from ``spec.seed``.

    Deterministic: the model is built on the CPU in float32 under a private RNG state seeded with
    ``spec.seed`` (the global RNG is saved and restored), then its layer weights are redrawn from a
    ``torch.Generator`` seeded with ``spec.seed``. The model is returned in training mode on the CPU.

    Raises:
        UnknownModelError: unknown name (also a ``ValueError``).
        ImportError: the model needs an optional library that is not installed; the message names the
            extra to install.
        ValueError: the input is too small for the architecture.

    Example:
        >>> import torch
        >>> model = build_model(ModelSpec("conv2", (3, 8, 8), num_classes=4, width=0.25))
        >>> model(torch.zeros(2, 3, 8, 8)).shape
        torch.Size([2, 4])
    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"build_model(): expected a ModelSpec, got {type(spec).__name__}")
    builder = _BUILDERS.get(spec.name, _timm_model if spec.name.startswith(TIMM_PREFIX) else None)
    if builder is None:  # only reachable if a spec bypassed __post_init__
        raise UnknownModelError(f"unknown model {spec.name!r}; choose one of {', '.join(MODEL_NAMES)}")
    previous_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.set_default_dtype(torch.float32)
        try:
            torch.manual_seed(spec.seed)
            model = builder(spec)
            generator = torch.Generator().manual_seed(spec.seed)
            initialize(model, spec.init, density=spec.density, generator=generator)
        finally:
            torch.set_default_dtype(previous_dtype)
    return model.train()


logits = logits_of   # the logits of a model output (public name of the experiment layer)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (each shared tensor once)."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------- builders
def _scaled(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


class ConvNet(nn.Module):
    """Conv2/4/6 of the lottery-ticket papers: ``features`` (conv pairs + max-pool), ``classifier`` (MLP)."""

    def __init__(self, stages: tuple[int, ...], in_shape: tuple[int, int, int], num_classes: int,
                 width: float = 1.0, hidden: int = 256) -> None:
        super().__init__()
        channels, height, wide = in_shape
        layers: list[nn.Module] = []
        for out in stages:
            out = _scaled(out, width)
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.ReLU(),
                       nn.Conv2d(out, out, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2)]
            channels, height, wide = out, height // 2, wide // 2
        if height == 0 or wide == 0:
            need = 2 ** len(stages)
            raise ValueError(f"conv{2 * len(stages)} halves the image {len(stages)} times and needs inputs "
                             f"of at least {need}x{need} pixels, got {in_shape[1]}x{in_shape[2]}")
        self.features = nn.Sequential(*layers)
        hid = _scaled(hidden, width)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * height * wide, hid, bias=False), nn.ReLU(),
            nn.Linear(hid, hid, bias=False), nn.ReLU(), nn.Linear(hid, num_classes, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _lenet300(spec: ModelSpec) -> nn.Module:
    c, h, w = spec.in_shape
    h1, h2 = _scaled(300, spec.width), _scaled(100, spec.width)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, h1, bias=False), nn.ReLU(),
                         nn.Linear(h1, h2, bias=False), nn.ReLU(),
                         nn.Linear(h2, spec.num_classes, bias=False))


def _convnet(stages: tuple[int, ...]) -> Callable[[ModelSpec], nn.Module]:
    def build(spec: ModelSpec) -> nn.Module:
        return ConvNet(stages, spec.in_shape, spec.num_classes, spec.width)
    return build


def _resnet(arch: str) -> Callable[[ModelSpec], nn.Module]:
    def build(spec: ModelSpec) -> nn.Module:
        try:
            from torch_slt.experiment.resnet import ScaledResNet
        except ImportError as err:
            raise ImportError(f"model {spec.name!r} needs torchvision: pip install \"torch-slt[timm]\" "
                              f"(or pip install torchvision)") from err
        c, h, w = spec.in_shape
        return ScaledResNet(arch, width=spec.width, in_chans=c, num_classes=spec.num_classes,
                            small_input=max(h, w) <= 64)
    return build


def _vit_patch(height: int, width: int) -> int:
    side = min(height, width)
    target = 2 if side <= 16 else 4 if side <= 64 else 8 if side <= 128 else 16
    while target > 1 and (height % target or width % target):
        target //= 2
    return target


def _vit(spec: ModelSpec) -> nn.Module:
    try:
        from transformers import ViTConfig, ViTForImageClassification
    except ImportError as err:
        raise ImportError('model "vit" needs transformers: pip install "torch-slt[hf]"') from err
    c, h, w = spec.in_shape
    heads = 3
    hidden = heads * _scaled(64, spec.width)
    config = ViTConfig(image_size=h if h == w else [h, w], patch_size=_vit_patch(h, w), num_channels=c,
                       hidden_size=hidden, num_hidden_layers=6, num_attention_heads=heads,
                       intermediate_size=4 * hidden, num_labels=spec.num_classes)
    return ViTForImageClassification(config)


def _swin(spec: ModelSpec) -> nn.Module:
    try:
        from transformers import SwinConfig, SwinForImageClassification
    except ImportError as err:
        raise ImportError('model "swin" needs transformers: pip install "torch-slt[hf]"') from err
    c, h, w = spec.in_shape
    patch = 2 if max(h, w) <= 64 else 4
    tokens = max(1, min(h, w) // patch)
    window = 2 if tokens <= 8 else 4 if tokens <= 32 else 7
    # Each stage halves the token grid; stop while the last stage still holds one full window.
    stages = max(1, min(4, 1 + int(math.log2(max(1, tokens // window)))))
    config = SwinConfig(image_size=h if h == w else [h, w], patch_size=patch, num_channels=c,
                        embed_dim=3 * _scaled(16, spec.width), depths=[2] * stages,
                        num_heads=[3, 6, 12, 24][:stages], window_size=window, num_labels=spec.num_classes)
    return SwinForImageClassification(config)


def _timm_model(spec: ModelSpec) -> nn.Module:
    try:
        import timm
    except ImportError as err:
        raise ImportError(f'model {spec.name!r} needs timm: pip install "torch-slt[timm]"') from err
    name = spec.name[len(TIMM_PREFIX):]
    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models('*vit*')"
        raise UnknownModelError(f"timm has no model {name!r}{hint}")
    if spec.width != 1.0:
        raise ValueError(f"width={spec.width} is not supported for timm models; pick a wider or narrower "
                         f"timm variant instead (e.g. 'timm:vit_small_patch16_224')")
    c, h, w = spec.in_shape
    kwargs = dict(pretrained=False, num_classes=spec.num_classes, in_chans=c)
    try:
        return timm.create_model(name, img_size=(h, w), **kwargs)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
    return timm.create_model(name, **kwargs)


_BUILDERS: dict[str, Callable[[ModelSpec], nn.Module]] = {
    "lenet300": _lenet300,
    "conv2": _convnet((64,)),
    "conv4": _convnet((64, 128)),
    "conv6": _convnet((64, 128, 256)),
    "resnet18": _resnet("resnet18"),
    "resnet50": _resnet("resnet50"),
    "wrn50": _resnet("wrn50"),
    "vit": _vit,
    "swin": _swin,
}
