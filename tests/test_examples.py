"""Every example runs in its --smoke mode (in-process: each script's main(argv))."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested_and_listed_in_the_readme():
    scripts = {p.stem for p in EXAMPLES.glob("*.py")}
    assert scripts == {"quickstart", "fashion_mnist_sweep", "cifar10_resnet", "hf_vit_swin",
                       "hf_pretrained_masks"}  # hf_pretrained_masks: smoke-tested in test_ecosystem_hf.py
    readme = (EXAMPLES / "README.md").read_text()
    assert all(f"{name}.py" in readme for name in scripts)


def test_quickstart(capsys):
    accuracy, sparsity = _example("quickstart").main(["--smoke"])
    assert 0.0 <= accuracy <= 1.0 and 0.0 <= sparsity < 1.0
    assert f"test accuracy {accuracy:.1%}" in capsys.readouterr().out


def test_fashion_mnist_sweep(tmp_path):
    rows, dense = _example("fashion_mnist_sweep").main(
        ["--smoke", "--dataset", "digits", "--methods", "stg,magnitude", "--out", str(tmp_path)])
    assert [(r["method"]) for r in rows] == ["stg", "stg", "magnitude", "magnitude"]
    assert [round(r["sparsity"], 3) for r in rows[2:]] == [0.5, 0.95]
    assert (tmp_path / "curve.png").exists() and dense["method"] == "dense"


def test_cifar10_resnet_on_random_images():
    accuracy, sparsity = _example("cifar10_resnet").main(["--smoke", "--device", "cpu"])
    assert 0.0 <= accuracy <= 1.0 and 0.0 <= sparsity < 1.0


def test_hf_vit_from_a_random_config():
    pytest.importorskip("transformers")
    accuracy, _ = _example("hf_vit_swin").main(["--smoke", "--arch", "vit"])
    assert 0.0 <= accuracy <= 1.0


def test_hf_swin_from_a_local_pretrained_directory(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.SwinConfig(image_size=16, patch_size=2, num_channels=3, embed_dim=12, depths=[1, 1],
                                     num_heads=[2, 2], window_size=4, num_labels=3)
    transformers.SwinForImageClassification(config).save_pretrained(tmp_path)
    accuracy, sparsity = _example("hf_vit_swin").main(["--smoke", "--pretrained", str(tmp_path)])
    assert 0.0 <= accuracy <= 1.0 and 0.0 <= sparsity < 1.0
