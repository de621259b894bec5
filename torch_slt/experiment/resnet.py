"""torchvision's ResNet with scaled widths, any number of input channels and an optional CIFAR stem.

Kept in its own module (imported only when a ResNet is built) so that torchvision stays optional and
the class stays picklable.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

ARCHS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2], 64),
    "resnet50": (Bottleneck, [3, 4, 6, 3], 64),
    "wrn50": (Bottleneck, [3, 4, 6, 3], 128),  # wide_resnet50_2: bottlenecks twice as wide
}


def scaled(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


class ScaledResNet(ResNet):
    """``torchvision.models.ResNet`` whose stage widths (64, 128, 256, 512) are multiplied by ``width``.

    ``small_input`` swaps the ImageNet stem (7x7 stride-2 conv + max-pool) for the CIFAR one (3x3
    stride-1 conv, no pool). Module names and the forward are torchvision's.
    """

    def __init__(self, arch: str, *, width: float = 1.0, in_chans: int = 3, num_classes: int = 1000,
                 small_input: bool = False) -> None:
        block, layers, per_group = ARCHS[arch]
        object.__setattr__(self, "_width", width)  # read by _make_layer during ResNet.__init__
        super().__init__(block, layers, num_classes=num_classes, width_per_group=per_group)
        stem = scaled(64, width)
        if small_input:
            self.conv1 = nn.Conv2d(in_chans, stem, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_chans, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(stem)
        self.fc = nn.Linear(scaled(512, width) * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):  # noqa: D102
        if planes == 64:  # layer1: its input is the (scaled) stem
            self.inplanes = scaled(64, self._width)
        return super()._make_layer(block, scaled(planes, self._width), blocks, stride, dilate)
