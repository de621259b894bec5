"""``torch-slt sweep --resume`` (issue 14): a sweep killed mid-cell resumes to the same results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from torch_slt import cli

ROOT = Path(__file__).resolve().parents[2]
# magnitude finishes at once (a fixed mask, nothing to train); stg trains 8 epochs (~0.2 s each).
GRID = ["sweep", "--methods", "magnitude,stg", "--sparsities", "0.5", "--epochs", "8", "--batch-size", "64",
        "--no-dense", "--quiet", "--device", "cpu", "--threads", "1"]


def _results(out: Path) -> tuple[list[dict], dict[str, dict[str, torch.Tensor]]]:
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    tickets = {r["ticket"]: load_file(out / r["ticket"]) for r in rows}
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows], tickets


def _kill_when(proc: subprocess.Popen, path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the sweep never reached the cell to interrupt"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)   # no cleanup handlers: as a crash or an OOM kill
    proc.wait()


def test_killed_sweep_resumes_to_the_same_tickets_and_rows(tmp_path, capsys):
    reference = tmp_path / "uninterrupted"
    assert cli.main(GRID + ["--out", str(reference)]) == 0

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "torch_slt", *GRID, "--out", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, out / "cells" / "stg-0.5.ckpt.pt")   # stg's first epoch is saved: mid-cell
    assert proc.returncode == -signal.SIGKILL
    assert (out / "cells" / "magnitude-0.5.json").exists() and not (out / "cells" / "stg-0.5.json").exists()
    epoch = torch.load(out / "cells" / "stg-0.5.ckpt.pt", weights_only=True)["epoch"]
    assert 1 <= epoch < 8 and not (out / "sweep.json").exists()
    magnitude_row = (out / "cells" / "magnitude-0.5.json").read_bytes()

    capsys.readouterr()
    assert cli.main(["sweep", "--out", str(out), "--resume", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "magnitude-0.5: finished before, kept" in err
    assert (out / "cells" / "magnitude-0.5.json").read_bytes() == magnitude_row  # skipped, not rerun
    assert not list((out / "cells").glob("*.ckpt.pt"))

    rows, tickets = _results(out)
    ref_rows, ref_tickets = _results(reference)
    assert rows == ref_rows
    for name, tensors in ref_tickets.items():
        assert tensors.keys() == tickets[name].keys()
        assert all(torch.equal(tensors[k], tickets[name][k]) for k in tensors), name


def test_sweep_resume_refuses_a_changed_grid_a_finished_sweep_and_a_find_folder(tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"command": "sweep", "settings": {"epochs": 8},
                                                 "methods": ["magnitude"], "sparsities": [0.5],
                                                 "no_dense": True}))
    assert cli.main(["sweep", "--out", str(out), "--resume", "--sparsities", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "--sparsities [0.9] (the sweep has [0.5])" in err and "Drop those flags" in err
    assert cli.main(["sweep", "--out", str(out), "--resume", "--epochs", "3"]) == 2
    assert "--epochs 3 (the run has 8)" in capsys.readouterr().err
    assert cli.main(["sweep", "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    (out / "config.json").write_text(json.dumps({"command": "find", "settings": {}}))
    assert cli.main(["sweep", "--out", str(out), "--resume"]) == 2
    assert "holds a 'find' run, not a sweep" in capsys.readouterr().err
    (out / "sweep.json").write_text("{}")
    assert cli.main(["sweep", "--out", str(out), "--resume"]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert cli.main(["sweep", "--out", str(out)]) == 2   # without --resume: never overwritten


def test_sweep_resume_with_a_corrupt_cell_checkpoint_says_to_delete_it(tmp_path, capsys):
    out = tmp_path / "s"
    (out / "cells").mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"command": "sweep", "settings": {"epochs": 2},
                                                 "methods": ["stg"], "sparsities": [0.5], "no_dense": True}))
    (out / "cells" / "stg-0.5.ckpt.pt").write_bytes(b"half a checkpoint")   # e.g. a full disk
    assert cli.main(["sweep", "--out", str(out), "--resume", "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "stg-0.5: fit(): cannot read the checkpoint" in err and "delete it to start over" in err
    assert "Traceback" not in err and not (out / "sweep.json").exists()
