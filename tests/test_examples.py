"""Every example runs in its --smoke mode (in-process: each script's main(argv))."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested_and_listed_in_the_readme():
    scripts = {p.stem for p in EXAMPLES.glob("*.py")} - {"measure"}   # measure.py writes the README table
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


def test_the_readme_table_is_the_one_measure_py_wrote_and_no_example_warns():
    measure = _example("measure")
    measured = json.loads((EXAMPLES / "measured.json").read_text())
    readme = (EXAMPLES / "README.md").read_text()
    assert measure.render(measured) in readme                    # generated, not edited by hand
    assert set(measured["rows"]) == {e.key for e in measure.EXAMPLES}
    for key, row in measured["rows"].items():
        assert row["own_warnings"] == [], (key, row["own_warnings"])   # no torch_slt warning of its own
        assert row["result"] and row["wall_s"] > 0 and row["date"] in readme


def test_measure_reads_what_an_example_printed():
    measure = _example("measure")
    assert measure.result_text("test 97.5%\nplot: x.png\n") == "test 97.5%"
    assert measure.result_text('{"acc": 0.9, "path": "x", "ok": true}') == "acc 0.9, ok True"
    logged = "{'loss': '2.281', 'epoch': '1'}\n{\n  \"masked_accuracy\": 0.9,\n  \"checkpoint\": \"x\"\n}\n"
    assert measure.result_text(logged) == "masked_accuracy 0.9"


def test_measure_marks_the_warnings_torch_slt_raises_and_only_those(tmp_path):
    measure = _example("measure")
    script = tmp_path / "warns.py"
    script.write_text("import warnings, torch, torch_slt\n"
                      "m = torch_slt.apply(torch.nn.Sequential(torch.nn.Linear(4, 4)), 'stg', sparsity=0.5)\n"
                      "torch_slt.finalize(m)\n"
                      "warnings.warn('not torch_slt')\n")
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES.parent), "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, "-c", measure.RUNNER, str(script)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    found = measure.OWN_WARNING.findall(done.stderr)
    assert len(found) == 1 and found[0].startswith("UserWarning: finalize(): the sparsity target's schedule")
    assert "not torch_slt" in done.stderr
