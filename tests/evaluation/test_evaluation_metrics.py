"""Each metric on a case with a known answer."""

from __future__ import annotations

import math

import pytest
import torch

import torch_slt
from torch_slt.evaluation import (EvalSettings, UnknownMetricError, lth_pass, register_metric,
                                  unregister_metric)
from torch_slt.evaluation.calibration import (brier_score, expected_calibration_error,
                                              negative_log_likelihood, reliability_bins)
from torch_slt.evaluation.ood import auroc, fpr_at_tpr
from torch_slt.evaluation.per_class import per_class_accuracy


def _calibrated(confidences=(0.2, 0.4, 0.6, 0.8, 1.0), per_bin=10):
    """Two-class predictions whose accuracy equals the confidence exactly in every bin (the predicted
    class is 0; the first ``conf * per_bin`` labels of each group are 0)."""
    probs, labels = [], []
    for c in confidences:
        probs += [[c, 1 - c] if c >= 0.5 else [1 - c, c][::-1]] * per_bin
        hits = round(max(c, 1 - c) * per_bin)
        labels += [0] * hits + [1] * (per_bin - hits) if c >= 0.5 else [1] * hits + [0] * (per_bin - hits)
    return torch.tensor(probs), torch.tensor(labels)


def test_a_perfectly_calibrated_predictor_has_ece_zero():
    probs, labels = _calibrated()
    assert expected_calibration_error(probs, labels, 15) == 0.0


def test_ece_of_an_overconfident_predictor_is_the_gap():
    # always 90 % confident, right half of the time: ECE = |0.5 - 0.9|
    probs = torch.tensor([[0.9, 0.1]] * 10)
    labels = torch.tensor([0, 1] * 5)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
    bins = reliability_bins(probs, labels, 15)
    assert sum(bins["count"]) == 10 and bins["count"][13] == 10  # 0.9 lies in (13/15, 14/15]
    assert len(bins["edges"]) == 16


def test_ece_bin_edges_follow_guo_et_al():
    # confidence exactly 2/3 belongs to the bin (9/15, 10/15], not the next one
    probs = torch.tensor([[2 / 3, 1 / 3]])
    assert reliability_bins(probs, torch.tensor([0]), 15)["count"][9] == 1


def test_nll_and_brier_known_values():
    assert negative_log_likelihood(torch.zeros(4, 5), torch.arange(4)) == pytest.approx(math.log(5))
    assert brier_score(torch.tensor([[1.0, 0.0]]), torch.tensor([0])) == 0.0
    assert brier_score(torch.tensor([[0.0, 1.0]]), torch.tensor([0])) == pytest.approx(2.0)
    assert brier_score(torch.full((3, 4), 0.25), torch.tensor([0, 1, 2])) == pytest.approx(0.75)


def test_auroc_of_an_ood_set_identical_to_the_test_set_is_one_half():
    scores = torch.rand(500)
    assert auroc(scores, scores.clone()) == pytest.approx(0.5)
    assert fpr_at_tpr(scores, scores.clone()) == pytest.approx(0.95, abs=0.005)


def test_auroc_separable_and_against_sklearn():
    assert auroc(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2])) == 1.0
    assert auroc(torch.tensor([0.1, 0.2]), torch.tensor([0.9, 0.8])) == 0.0
    assert fpr_at_tpr(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2])) == 0.0
    metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(1)
    pos = torch.randint(0, 20, (300,), generator=gen).float()  # many ties
    neg = torch.randint(0, 20, (200,), generator=gen).float() - 3
    expected = metrics.roc_auc_score([1] * 300 + [0] * 200, torch.cat([pos, neg]).numpy())
    assert auroc(pos, neg) == pytest.approx(expected, abs=1e-12)


def test_per_class_accuracy():
    logits = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    accs = per_class_accuracy(logits, torch.tensor([0, 1, 1, 2]), 4)
    assert accs[:3] == [1.0, 0.5, 1.0] and math.isnan(accs[3])


def _toy():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(40, 1, 4, 4), torch.randint(0, 3, (40,))
    return model, x, y


def test_evaluate_returns_the_chosen_metrics_and_leaves_the_model_alone():
    model, x, y = _toy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    result = torch_slt.evaluate(model, (x, y), metrics="accuracy,ece,per_class")
    assert result["metrics"] == ["accuracy", "ece", "per_class"] and result["n"] == 40
    assert result["accuracy"] == pytest.approx(float((model(x).argmax(1) == y).double().mean()))
    assert len(result["per_class_accuracy"]) == 3 and "nll" not in result
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_unknown_metric_is_refused_before_anything_runs():
    model, x, y = _toy()
    with pytest.raises(UnknownMetricError, match="unknown metric 'acc'.*accuracy"):
        torch_slt.evaluate(model, (x, y), metrics=["acc"])


def test_bad_data_is_refused_with_what_is_accepted():
    from torch_slt.core.errors import SLTError

    model, x, y = _toy()
    with pytest.raises(SLTError, match="data must be a Dataset, DataSplits"):
        torch_slt.evaluate(model, [1, 2, 3])
    with pytest.raises(ValueError, match="40 inputs and 39 labels"):
        torch_slt.evaluate(model, (x, y[:-1]))
    with pytest.raises(TypeError, match="settings must be an EvalSettings"):
        torch_slt.evaluate(model, (x, y), settings={"bins": 10})


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="severities"):
        EvalSettings(severities=(0, 6))
    with pytest.raises(ValueError, match="ood_sets.*ood_data"):
        EvalSettings(ood_sets=("svhn",))


def test_a_registered_metric_is_picked_up_by_evaluate():
    @register_metric("always_one", better={"one": "higher"}, reference="test")
    def _one(ctx):
        return {"one": 1.0}

    try:
        model, x, y = _toy()
        assert torch_slt.evaluate(model, (x, y), metrics=["always_one"])["one"] == 1.0
    finally:
        unregister_metric("always_one")


def test_ood_metric_with_the_test_set_as_user_ood_set():
    model, x, y = _toy()
    settings = EvalSettings(ood_sets=(), ood_data={"same": x.clone()})
    result = torch_slt.evaluate(model, (x, y), metrics=["ood"], settings=settings)
    assert result["ood"]["same"]["auroc"] == pytest.approx(0.5)


def test_builtin_ood_sets_have_the_test_shape_and_pixel_range():
    from torch_slt.evaluation.context import EvalContext, Pixels
    from torch_slt.evaluation.ood_sets import build_ood_sets

    pytest.importorskip("sklearn")
    x = torch.rand(30, 1, 12, 12)
    pixels = Pixels(torch.full((1, 1, 1, 1), 0.5), torch.full((1, 1, 1, 1), 0.25))
    ctx = EvalContext(torch.nn.Identity(), pixels.normalize(x), torch.zeros(30, dtype=torch.long),
                      EvalSettings(ood_samples=20), pixels, torch.device("cpu"), 10)
    sets = build_ood_sets(ctx)
    assert sorted(sets) == ["digits", "gaussian", "uniform", "vflip"]
    for name, inputs in sets.items():
        assert inputs.shape == (20, 1, 12, 12), name
        raw = pixels.to_pixels(inputs)
        assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6, name
    assert torch.allclose(pixels.to_pixels(sets["vflip"]), x[:20].flip(-2), atol=1e-6)


def test_lth_pass_respects_directions_and_skips_missing_numbers():
    dense = {"accuracy": 0.9, "ece": 0.05, "mce": 1.0}
    assert lth_pass({"accuracy": 0.91, "ece": 0.04}, dense).passed
    verdict = lth_pass({"accuracy": 0.91, "ece": 0.06, "mce": 0.9}, dense)
    assert not verdict.passed and set(verdict.worse) == {"ece"} and "mce" in verdict.judged
    assert lth_pass({"accuracy": 0.895}, dense, tolerance=0.01).passed


def test_import_torch_slt_stays_cheap_and_evaluate_loads_lazily():
    import subprocess
    import sys

    code = ("import sys, torch_slt\n"
            "assert 'torch_slt.evaluation' not in sys.modules and 'torch_slt.analysis' not in sys.modules\n"
            "f = torch_slt.evaluate\n"
            "import torch_slt.analysis\n"
            "heavy = [m for m in ('matplotlib', 'sklearn', 'safetensors') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert f.__module__ == 'torch_slt.evaluation.evaluate'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_every_metric_runs_with_only_torch_installed():
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys
        OPTIONAL = ("matplotlib", "sklearn", "safetensors", "tqdm", "torchvision", "timm", "transformers")
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in OPTIONAL:
                    raise ImportError("blocked optional package " + name)
        sys.meta_path.insert(0, Block())
        import torch, torch_slt
        from torch_slt.evaluation import EvalSettings
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        x, y = torch.rand(20, 1, 8, 8), torch.randint(0, 3, (20,))
        settings = EvalSettings(ood_sets=("gaussian", "uniform", "vflip"), severities=(1,), pgd_steps=1)
        result = torch_slt.evaluate(model, (x, y), settings=settings, reference=model)
        assert result["mce"] == 1.0, result["mce"]
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
