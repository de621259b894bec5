"""Corruptions (shapes, ranges, severity monotonicity), FGSM / PGD, and mCE against the dense model."""

from __future__ import annotations

import pytest
import torch

import torch_slt
from torch_slt.evaluation import CORRUPTIONS, EvalSettings
from torch_slt.evaluation.adversarial import adversarial_accuracy, attack
from torch_slt.evaluation.context import Pixels
from torch_slt.evaluation.corruptions import corrupt, defocus_kernel, mean_corruption_error


def _images(n=16, size=28):
    """Smooth images in [0, 1] (blurred noise), like natural ones, so blur and pixelation change them
    gradually."""
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 1, size // 4, size // 4, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear").clamp(0.05, 0.9)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruptions_keep_shape_and_range_and_grow_with_severity(name):
    x = _images()
    changes = []
    for severity in range(1, 6):
        y = corrupt(x, name, severity, seed=3)
        assert y.shape == x.shape and y.dtype == torch.float32
        assert y.min() >= 0 and y.max() <= 1
        changes.append(float((y - x).abs().mean()))
    assert changes[0] > 0
    assert changes == sorted(changes), f"{name}: mean change {changes} does not grow with severity"
    assert torch.equal(corrupt(x, name, 3, seed=3), corrupt(x, name, 3, seed=3))  # seeded


def test_corruption_specifics():
    x = _images(4)
    assert torch.allclose(corrupt(x, "contrast", 5).mean((-2, -1)), x.mean((-2, -1)), atol=1e-6)
    assert torch.allclose(corrupt(x, "brightness", 1), (x + 0.05).clamp(0, 1))  # grey: value + c
    flat = torch.full((1, 1, 8, 8), 0.5)
    assert torch.allclose(corrupt(flat, "defocus_blur", 5), flat)  # blur keeps a constant image
    assert defocus_kernel(1.5, 0.1).sum() == pytest.approx(1.0)
    impulse = corrupt(torch.full((1, 1, 100, 100), 0.5), "impulse_noise", 5)
    changed = impulse != 0.5
    assert 0.05 < float(changed.float().mean()) < 0.09 and set(impulse[changed].tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "contrast", 6)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(x, "fog", 1)


def test_mce_is_one_for_the_reference_itself_and_a_ratio_otherwise():
    errors = {"a": [0.1, 0.2], "b": [0.3, 0.3]}
    assert mean_corruption_error(errors, errors)["mce"] == pytest.approx(1.0)
    half = {"a": [0.05, 0.1], "b": [0.15, 0.15]}
    assert mean_corruption_error(half, errors)["mce"] == pytest.approx(0.5)


def _trained_toy():
    torch.manual_seed(0)
    x = torch.rand(200, 1, 4, 4)
    y = (x.mean((1, 2, 3)) > 0.5).long()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval(), x, y


def test_fgsm_with_eps_zero_equals_clean_accuracy_and_larger_eps_hurts():
    model, x, y = _trained_toy()
    pixels = Pixels(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))
    clean = float((model(x).argmax(1) == y).double().mean())
    assert clean > 0.9
    assert adversarial_accuracy(model, x, y, 0.0, pixels) == clean
    accs = [adversarial_accuracy(model, x, y, eps, pixels) for eps in (0.01, 0.05, 0.2)]
    assert accs == sorted(accs, reverse=True) and accs[-1] < clean - 0.3
    pgd = adversarial_accuracy(model, x, y, 0.05, pixels, steps=5)
    assert pgd <= accs[1] + 0.02  # PGD is at least about as strong as FGSM
    assert all(p.grad is None for p in model.parameters())


def test_fgsm_eps_zero_leaves_features_outside_zero_one_alone():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = 5 * torch.randn(30, 4), torch.randint(0, 3, (30,))
    identity = Pixels(torch.zeros(1, 4), torch.ones(1, 4))
    assert torch.equal(attack(model, x, y, 0.0, identity), x)
    assert (attack(model, x, y, 0.5, identity) - x).abs().max() <= 0.5 + 1e-6


def test_attacks_stay_in_the_eps_ball_and_the_pixel_range():
    model, x, y = _trained_toy()
    pixels = Pixels(torch.full((1, 1, 1, 1), 0.3), torch.full((1, 1, 1, 1), 0.2))
    inputs = pixels.normalize(x)
    for steps in (0, 3):
        adv = pixels.to_pixels(attack(model, inputs, y, 0.1, pixels, steps=steps,
                                      generator=torch.Generator().manual_seed(0)))
        assert (adv - x).abs().max() <= 0.1 + 1e-5
        assert adv.min() >= -1e-6 and adv.max() <= 1 + 1e-6


def test_evaluate_every_metric_with_a_dense_reference():
    model, x, y = _trained_toy()
    dense = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    settings = EvalSettings(ood_sets=("gaussian", "uniform", "vflip"), severities=(1, 5), epsilons=(0.0, 0.1),
                            pgd_steps=2, adversarial_samples=50)
    ref = torch_slt.evaluate(dense, (x, y), settings=settings)
    result = torch_slt.evaluate(model, (x, y), settings=settings, reference=ref)
    assert ref["fgsm"]["0.0"] == ref["accuracy"] or ref["adversarial_samples"] < len(y)
    for key in ("accuracy", "nll", "ece", "brier", "ood_auroc", "ood_fpr95", "corruption_accuracy", "mce",
                "fgsm_accuracy", "pgd_accuracy", "worst_class_accuracy", "largest_class_drop"):
        assert isinstance(result[key], float), key
    assert set(result["corruption_errors"]) == set(CORRUPTIONS)
    assert all(len(v) == 2 for v in result["corruption_errors"].values())
    # the reference against itself: mCE exactly 1
    again = torch_slt.evaluate(dense, (x, y), metrics=["corruptions"], settings=settings, reference=ref)
    assert again["mce"] == pytest.approx(1.0)
