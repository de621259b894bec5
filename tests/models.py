"""Tiny seeded models for the test suite. Everything is built from configs: nothing is downloaded."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class TinyMLP(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 3))


class TinyCNN(nn.Module):
    """Conv + BatchNorm + pooling + linear head, the shape of conv2/conv4 and ResNets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))


def hf_vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=3)
    return ViTForImageClassification(config)


def hf_swin() -> nn.Module:
    from transformers import SwinConfig, SwinForImageClassification

    config = SwinConfig(image_size=8, patch_size=2, num_channels=3, embed_dim=8, depths=[1, 1],
                        num_heads=[1, 2], window_size=2, mlp_ratio=2.0, num_labels=3)
    return SwinForImageClassification(config)


def timm_vit() -> nn.Module:
    import timm

    return timm.create_model("test_vit", pretrained=False, img_size=8, patch_size=4, num_classes=3)


MODELS: dict[str, Callable[[], nn.Module]] = {
    "mlp": TinyMLP, "cnn": TinyCNN, "hf_vit": hf_vit, "hf_swin": hf_swin, "timm_vit": timm_vit,
}


def build(name: str, seed: int = 0) -> nn.Module:
    """The named tiny model with weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return MODELS[name]()


def batch(seed: int = 1, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """An (images, labels) batch that fits every model in :data:`MODELS` (3x8x8 inputs, 3 classes)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def logits(output) -> torch.Tensor:
    """Logits from a plain tensor, a tuple or a Hugging Face ModelOutput."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    return output[0]
