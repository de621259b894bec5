"""torch_slt.experiment.plots: the per-layer sparsity bars and the accuracy-against-sparsity curve."""

import sys

import pytest
import torch

import torch_slt
from torch_slt.experiment.plots import plot_accuracy_vs_sparsity, plot_layer_sparsity


def _png_size(path):
    from PIL import Image

    with Image.open(path) as img:
        return img.size


def _gated():
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
    return torch_slt.apply(model, "magnitude", sparsity=0.6, scope="layer")


def test_layer_sparsity_png(tmp_path):
    backend_before = sys.modules["matplotlib"].get_backend() if "matplotlib" in sys.modules else None
    path = plot_layer_sparsity(torch_slt.report(_gated()), tmp_path / "layers.png", title="tiny MLP")
    assert path == tmp_path / "layers.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = _png_size(path)
    assert width >= 600 and height >= 500
    if backend_before is not None:  # the caller's pyplot backend is left alone
        assert sys.modules["matplotlib"].get_backend() == backend_before


def test_layer_sparsity_scales_with_many_layers(tmp_path):
    layers = [torch.nn.Linear(8, 8) for _ in range(30)]
    model = torch_slt.apply(torch.nn.Sequential(*layers), "magnitude", sparsity=0.5)
    path = plot_layer_sparsity(torch_slt.report(model), tmp_path / "many.svg")
    assert b"<svg" in path.read_bytes()[:500]


def test_layer_sparsity_bad_input(tmp_path):
    with pytest.raises(TypeError, match="SparsityReport"):
        plot_layer_sparsity({"layers": []}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no layers"):
        plot_layer_sparsity(torch_slt.SparsityReport([]), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_accuracy_curve_png_with_seeds_and_dense(tmp_path):
    rows = [{"method": m, "target": s, "sparsity": s + 0.001 * k, "accuracy": 0.9 - 0.2 * s + 0.01 * k}
            for m in ("stg", "edgepopup") for s in (0.5, 0.9) for k in range(2)]
    path = plot_accuracy_vs_sparsity(rows, tmp_path / "curve.png", dense_accuracy=0.95, title="digits")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert _png_size(path)[0] >= 700


def test_accuracy_curve_bad_rows(tmp_path):
    with pytest.raises(ValueError, match="rows is empty"):
        plot_accuracy_vs_sparsity([], tmp_path / "c.png")
    with pytest.raises(ValueError, match=r"lacks \['accuracy'\]"):
        plot_accuracy_vs_sparsity([{"method": "stg", "sparsity": 0.5}], tmp_path / "c.png")
    with pytest.raises(ValueError, match="fractions in"):
        plot_accuracy_vs_sparsity([{"method": "stg", "sparsity": 0.5, "accuracy": 93.0}], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()
