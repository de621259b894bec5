"""The benchmark scripts run end to end (tiny settings; the numbers themselves are not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_speed_script_prints_every_learned_row(tmp_path):
    out = _run("bench/speed.py", "--quick", "--models", "lenet300", "--skip", "scaling,scoring",
               "--repeats", "1", "--min-block", "0.01", "--out", str(tmp_path / "speed"))
    for row in ("| dense |", "| stg |", "| edgepopup (reference sort) |"):
        assert row in out
    saved = json.loads((tmp_path / "speed.json").read_text())
    rows = saved["models"][0]["rows"]
    assert rows[0]["row"] == "dense" and rows[0]["ratio"] == 1.0
    assert all(r["peak_bytes"] > 0 and r["median_s"] > 0 for r in rows)


def test_tickets_script_writes_table_json_and_plot(tmp_path):
    stem = tmp_path / "tickets"
    _run("bench/tickets.py", "--quick", "--methods", "stg,magnitude", "--sparsities", "0.9", "--epochs", "1",
         "--no-dense", "--out", str(stem))
    table = stem.with_suffix(".md").read_text()
    assert "| stg |" in table and "| magnitude (frozen) |" in table and "| magnitude (weights trained) |" in table
    rows = json.loads(stem.with_suffix(".json").read_text())["rows"]
    assert {(r["method"], r["kind"]) for r in rows} == {("stg", "learned"), ("magnitude", "frozen"),
                                                       ("magnitude", "trained")}
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in rows)
    assert stem.with_suffix(".png").exists()


def test_evaluation_script_writes_tables_and_figures(tmp_path):
    stem = tmp_path / "evaluation"
    _run("bench/evaluation.py", "--quick", "--methods", "stg,magnitude", "--sparsities", "0.9", "--seeds",
         "0,1", "--epochs", "1", "--out", str(stem), "--work", str(tmp_path / "work"))
    text = stem.with_suffix(".md").read_text()
    assert "LTH-PASS" in text and "| stg 90% |" in text and "## Mask overlap at 90%" in text
    rows = json.loads(stem.with_suffix(".json").read_text())["rows"]
    assert {(r["method"], r["seed"]) for r in rows} == {("dense", 0), ("dense", 1), ("stg", 0), ("stg", 1),
                                                       ("magnitude", 0)}
    for suffix in ("-sweep.png", "-overlap.png", "-profiles.png", "-line.png", "-reliability-dense.png"):
        assert Path(f"{stem}{suffix}").exists(), suffix


def test_targets_script_writes_tables_with_every_target_checked(tmp_path):
    stem = tmp_path / "targets"
    out = _run("bench/targets.py", "--quick", "--out", str(stem))
    assert "| stg + exact target (torch_slt) | Adam 0.05 cosine |" in out and "| edgepopup | SGD 0.1 cosine |" in out
    for target in ("1. sparsity within 0.5 point", "3. stg with a target", "4. hardconcrete"):
        assert target in out
    cells = json.loads(stem.with_suffix(".json").read_text())["cells"]
    assert {c["kind"] for c in cells} == {"target", "lam", "edgepopup"}
    assert all(abs(c["sparsity"] - 0.9) < 1e-3 for c in cells if c["kind"] == "target")
    assert stem.with_name("targets-accuracy.png").exists()


def test_lottery_script_runs_every_part_and_writes_the_report(tmp_path):
    for part in ("fc", "conv", "cs", "cs_optim"):
        _run("bench/lottery.py", "--part", part, "--quick", "--out", str(tmp_path))
    _run("bench/lottery.py", "--report", "--out", str(tmp_path))
    report = (tmp_path / "lottery.md").read_text()
    assert "| round | remaining | winning ticket | reinit | random_mask |" in report
    assert "| network | start (rewind) iteration | error barrier (points) |" in report
    fc = json.loads((tmp_path / "lottery-fc-seed0.json").read_text())
    kinds = {(r["round"], r["kind"]) for r in fc["rows"]}
    assert (2, "reinit") in kinds and (2, "random_mask") in kinds
    assert "| lam | remaining | cs ticket | IMP at that sparsity |" in report
    assert "| optimizer | schedule | scores' lr | remaining | cs ticket |" in report
    assert all((tmp_path / f"lottery-{part}.png").exists() for part in ("fc", "conv", "cs"))


def test_gpu_script_smoke_runs_every_row_eager_and_compiled(tmp_path):
    out = tmp_path / "gpu.md"
    text = _run("bench/gpu.py", "--smoke", "--models", "vit", "--out", str(out))
    for row in ("| dense |", "| stg (lam=0.1) |", "| stg (sparsity=0.9) |", "| edgepopup |", "| supermask |"):
        assert text.count(row) == 2          # eager and compiled
    assert "vit, compiled, fp32" in out.read_text()


def test_engine_script_writes_both_parts(tmp_path):
    out = tmp_path / "engine.md"
    text = _run("bench/engine.py", "--quick", "--out", str(out))
    assert "| eval forward |" in text and "| lenet300 | stg (sparsity=0.9) |" in text
    assert "## torch.compile against eager" in out.read_text()


def test_defaults_script_runs_find_on_every_cell_and_flags_chance(tmp_path):
    stem = tmp_path / "defaults"
    _run("bench/defaults.py", "--quick", "--models", "lenet300", "--methods", "stg,random", "--out",
         str(stem))
    table = stem.with_suffix(".md").read_text()
    assert "| lenet300 | " in table and "%, 1 ep)" in table
    command = "torch-slt find --dataset digits --model lenet300 --method random --sparsity 0.5 --epochs 1"
    assert f"`{command}`" in table
    cells = {c["method"]: c for c in json.loads(stem.with_suffix(".json").read_text())["cells"]}
    assert set(cells) == {"stg", "random"} and all(0.0 <= c["test_accuracy"] <= 1.0 for c in cells.values())
    assert abs(cells["random"]["sparsity"] - 0.5) < 1e-3 and cells["stg"]["epochs"] == 1


def test_loops_script_runs_every_method_with_fit_defaults_and_a_user_loop(tmp_path):
    stem = tmp_path / "loops"
    _run("bench/loops.py", "--quick", "--out", str(stem))
    rows = json.loads(stem.with_suffix(".json").read_text())["rows"]
    assert {(r["method"], r["lr"]) for r in rows} == {(m, lr) for m in ("cs", "magnitude@cs", "magnitude",
                                                                        "random", "stg", "edgepopup",
                                                                        "supermask")
                                                      for lr in (None, 0.01)}
    cs = next(r for r in rows if r["method"] == "cs" and r["lr"] == 0.01)
    at_cs = next(r for r in rows if r["method"] == "magnitude@cs" and r["lr"] == 0.01)
    assert abs(at_cs["sparsity"] - cs["sparsity"]) < 1e-3      # the baseline at the same sparsity
    table = stem.with_suffix(".md").read_text()
    assert "| method | fit defaults | Adam 0.01 constant |" in table and "| magnitude@cs | " in table

    # --fit-defaults re-runs only those cells (after a default changed); the rest of the table is kept
    _run("bench/loops.py", "--quick", "--out", str(stem), "--fit-defaults", "magnitude,magnitude@cs")
    again = json.loads(stem.with_suffix(".json").read_text())["rows"]
    assert len(again) == len(rows)
    untouched = [r for r in rows if not (r["lr"] is None and r["method"] in ("magnitude", "magnitude@cs"))]
    assert all(r in again for r in untouched)
    cs = next(r for r in again if r["method"] == "cs" and r["lr"] is None)
    at_cs = next(r for r in again if r["method"] == "magnitude@cs" and r["lr"] is None)
    assert abs(at_cs["sparsity"] - cs["sparsity"]) < 1e-3

    # --method re-runs every cell of one method (a method added to the table); the rest is kept
    _run("bench/loops.py", "--quick", "--out", str(stem), "--method", "supermask")
    third = json.loads(stem.with_suffix(".json").read_text())["rows"]
    assert len(third) == len(again) and all(r in third for r in again if r["method"] != "supermask")
    assert {r["lr"] for r in third if r["method"] == "supermask"} == {None, 0.01}


def test_convnets_script_runs_every_row_on_every_network_and_checks_the_targets(tmp_path):
    stem = tmp_path / "convnets"
    _run("bench/convnets.py", "--quick", "--out", str(stem))
    cells = json.loads(stem.with_suffix(".json").read_text())["cells"]
    assert {c["network"] for c in cells} == {"conv4", "resnet18", "vit"}
    edge = [c for c in cells if c["row"].startswith("edgepopup (paper")]
    assert edge and all(abs(c["sparsity"] - 0.5) < 1e-3 for c in edge)       # the same sparsity as stg's
    dense = [c for c in cells if c["row"].startswith("dense")]
    assert len(dense) == 3 and all(c["sparsity"] == 0.0 for c in dense)
    table = stem.with_suffix(".md").read_text()
    assert table.count("- s = 0.5: best stg with a target") == 3 and "stg (paper: lam=8)" in table
    assert all((tmp_path / f"convnets-{n}.png").exists() for n in ("conv4", "resnet18", "vit"))
