"""Every zoo model x every method with `torch-slt find`'s defaults on digits: is any ticket at chance?

Issue 22: a newcomer's `torch-slt find --model conv4` (stg defaults) ended at 11 % on digits with no
warning. Each cell here is that command, run in-process (``torch_slt.cli.main``) with nothing but
``--dataset digits --model M --method X --epochs E --threads 1 --quiet``, plus ``--sparsity 0.5`` for
the methods that need one (edge-popup and the one-shot methods: their papers' usual middle value); the
gate methods (stg, hardconcrete), supermask and cs run on their own defaults without a target. The
one-shot methods train their surviving weights (``find``'s default for a mask fixed at ``apply``); the
learned masks keep the weights frozen. ``E``
is ``find``'s default of 20 epochs for the small models and fewer for the slow ones on two CPU cores
(:data:`EPOCHS`; ``--epochs`` sets one value for all). The table gives the ticket's test accuracy and
sparsity, the warnings the run printed, and a chance flag: test accuracy within
:data:`CHANCE_POINTS` points of a uniform guess (target: no flagged cell).

``--headline`` also runs the README's headline command ``find --dataset fashion-mnist --method stg
--sparsity 0.9`` (full data, 20 epochs; about 4 CPU-minutes; target >= 85 %).

Results accumulate in ``<out>.json`` (a cell already there is kept unless it failed; ``--redo`` runs it
again), the table
in ``<out>.md``. ``--quick`` is a smoke run: lenet300 and conv2, three methods, one epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common import RESULTS_DIR, command_line, machine, now_utc, set_threads

MODELS = ("lenet300", "conv2", "conv4", "conv6", "resnet18", "vit", "swin", "timm:mobilenetv3_small_050")
#: Epochs per model: find's default (20) where a cell costs under a CPU-minute, fewer for the slow ones.
EPOCHS = {"lenet300": 20, "conv2": 20, "conv4": 20, "conv6": 4, "resnet18": 2, "vit": 2, "swin": 4,
          "timm:mobilenetv3_small_050": 2}
#: The sparsity given to the methods that need one.
SPARSITY = 0.5
#: A ticket whose test accuracy is within this many points of chance is flagged.
CHANCE_POINTS = 5.0
HEADLINE = ["--dataset", "fashion-mnist", "--method", "stg", "--sparsity", "0.9"]


@dataclass
class Cell:
    model: str
    method: str
    args: list[str]
    epochs: int | None = None
    test_accuracy: float = float("nan")
    val_accuracy: float = float("nan")
    sparsity: float = float("nan")
    num_classes: int = 10
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.model, self.method

    @property
    def command(self) -> str:
        return "torch-slt find " + " ".join(self.args)

    @property
    def near_chance(self) -> bool:
        return not self.test_accuracy > 1.0 / self.num_classes + CHANCE_POINTS / 100


def needs_sparsity(method: str) -> bool:
    """Whether ``find --method METHOD`` refuses to run without ``--sparsity``."""
    import torch_slt

    try:
        torch_slt.get_method(method)()
    except (ValueError, TypeError):
        return True
    return False


def plan(models: list[str], methods: list[str], epochs: int | None) -> list[Cell]:
    cells = []
    for model in models:
        e = epochs or EPOCHS.get(model, 3)
        for method in methods:
            args = ["--dataset", "digits", "--model", model, "--method", method]
            args += ["--sparsity", str(SPARSITY)] if needs_sparsity(method) else []
            cells.append(Cell(model, method, args + ["--epochs", str(e)], epochs=e))
    return cells


def run_cell(cell: Cell) -> Cell:
    """``torch-slt find`` with the cell's flags, in a scratch folder; the numbers from its report.json."""
    from torch_slt import cli

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        argv = ["find", *cell.args, "--threads", "1", "--quiet", "--device", "cpu", "--out", str(out)]
        t0 = time.perf_counter()
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(argv)
            except Exception as exc:  # a cell that crashes is a result too (shown in the table)
                rc, cell.error = 1, f"{type(exc).__name__}: {exc}"
        cell.seconds = time.perf_counter() - t0
        if rc != 0 or not (out / "report.json").exists():
            cell.error = cell.error or err.getvalue().strip().splitlines()[-1][:300]
            return cell
        report = json.loads((out / "report.json").read_text())
    cell.test_accuracy, cell.val_accuracy = report["accuracy"]["test"], report["accuracy"]["val"]
    cell.sparsity = report["sparsity"]["sparsity"]
    cell.num_classes = report["dataset"]["num_classes"]
    cell.warnings = report.get("warnings", [])
    return cell


def markdown(cells: list[Cell], headline: Cell | None, meta: dict[str, str]) -> str:
    lines = ["# `torch-slt find` defaults on every zoo model and method (issue 22)", "",
             "- runs (cells accumulate in the JSON; a later run replaces the cells it ran):",
             *[f"  - {run['date']}: `{run['command']}` ({run['cells']} cells)" for run in meta["runs"]],
             f"- machine: {meta['machine']}",
             f"- each cell: `torch-slt find --dataset digits --model M --method X` (+ `--sparsity "
             f"{SPARSITY}` where the method needs one) `--epochs E --threads 1`; test accuracy of the "
             f"finalized ticket (359 test images, 10 classes, chance 10 %), seed 0",
             "- weights: frozen under the learned masks (stg, hardconcrete, edgepopup, supermask); trained "
             "under a one-shot mask (magnitude, random, snip, grasp, synflow: `find`'s default) and by cs",
             f"- **chance?**: test accuracy within {CHANCE_POINTS:g} points of chance; `warned`: the run "
             f"printed a warning (at chance, or a diverged loss)", ""]
    models = list(dict.fromkeys(c.model for c in cells))
    methods = list(dict.fromkeys(c.method for c in cells))
    by_key = {c.key: c for c in cells}
    lines += ["## Test accuracy (sparsity reached, epochs)", "",
              "| model | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for model in models:
        row = [model]
        for method in methods:
            c = by_key.get((model, method))
            if c is None:
                row.append("")
            elif c.error:
                row.append("error")
            else:
                flag = " **chance**" if c.near_chance else ""
                row.append(f"{100 * c.test_accuracy:.1f} ({100 * c.sparsity:.0f}%, {c.epochs or 20} ep)"
                           f"{flag}")
        lines.append("| " + " | ".join(row) + " |")
    flagged = [c for c in cells if c.error or c.near_chance]
    lines += ["", f"Cells within {CHANCE_POINTS:g} points of chance or failing: "
              + (", ".join(f"{c.model} / {c.method}" for c in flagged) if flagged else "none") + ".", ""]
    lines += ["## Every cell", "",
              "| model | method | test accuracy | val accuracy | sparsity | chance? | warned | time (s) "
              "| command |",
              "|---|---|---:|---:|---:|---|---|---:|---|"]
    for c in cells + ([headline] if headline else []):
        if c.error:
            lines.append(f"| {c.model} | {c.method} | - | - | - | error | | {c.seconds:.0f} | "
                         f"`{c.command}`: {c.error} |")
            continue
        lines.append(f"| {c.model} | {c.method} | {100 * c.test_accuracy:.2f} | {100 * c.val_accuracy:.2f} "
                     f"| {100 * c.sparsity:.1f}% | {'**yes**' if c.near_chance else 'no'} "
                     f"| {'yes' if c.warnings else ''} | {c.seconds:.0f} | `{c.command}` |")
    if headline:
        target = "met" if not headline.error and headline.test_accuracy >= 0.85 else "MISSED"
        lines += ["", f"Headline (`{headline.command}`, README): "
                  + (f"{100 * headline.test_accuracy:.2f} % at {100 * headline.sparsity:.1f} % sparsity"
                     if not headline.error else headline.error) + f"; target >= 85 %: {target}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import torch_slt

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help=f"comma-separated (default {','.join(MODELS)})")
    p.add_argument("--methods", help="comma-separated (default: every registered method)")
    p.add_argument("--epochs", type=int, help="one epoch count for every model (default: EPOCHS)")
    p.add_argument("--headline", action="store_true", help="also run the README's Fashion-MNIST command")
    p.add_argument("--redo", action="store_true", help="run the cells already in the JSON again")
    p.add_argument("--quick", action="store_true", help="smoke run: lenet300 and conv2, 3 methods, 1 epoch")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS_DIR / "defaults"))
    args = p.parse_args(argv)
    set_threads(args.threads)
    models = args.models.split(",") if args.models else list(MODELS)
    methods = args.methods.split(",") if args.methods else torch_slt.list_methods()
    epochs = args.epochs
    if args.quick:
        models, methods, epochs = models if args.models else ["lenet300", "conv2"], \
            methods if args.methods else ["stg", "edgepopup", "magnitude"], epochs or 1
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    path = stem.with_suffix(".json")
    saved = json.loads(path.read_text()) if path.exists() else {"cells": [], "headline": None}
    cells = {(c["model"], c["method"]): Cell(**c) for c in saved["cells"]}
    headline = Cell(**saved["headline"]) if saved.get("headline") else None
    todo = [c for c in plan(models, methods, epochs) if args.redo or c.key not in cells or cells[c.key].error]
    if args.headline and (args.redo or headline is None):
        todo.append(Cell("lenet300", "stg", HEADLINE))
    old = saved.get("meta") or {}
    runs = old.get("runs") or ([{"command": old["command"], "date": old["date"], "cells": len(cells)}]
                               if "command" in old else [])
    meta = {"runs": runs + ([{"command": command_line(), "date": now_utc(), "cells": len(todo)}] if todo else []),
            "machine": machine()}

    def save() -> None:
        path.write_text(json.dumps({"meta": meta, "cells": [asdict(c) for c in cells.values()],
                                    "headline": asdict(headline) if headline else None}, indent=1))

    for i, cell in enumerate(todo, 1):
        run_cell(cell)
        if cell.args is HEADLINE:
            headline = cell
        else:
            cells[cell.key] = cell
        print(f"[{i}/{len(todo)}] {cell.command}: "
              + (cell.error or f"test {100 * cell.test_accuracy:.2f}% at {100 * cell.sparsity:.1f}%"
                 + (" NEAR CHANCE" if cell.near_chance else "")) + f" ({cell.seconds:.0f} s)",
              file=sys.stderr, flush=True)
        save()
    save()
    order = {m: i for i, m in enumerate(MODELS)}
    table = sorted(cells.values(), key=lambda c: (order.get(c.model, len(order)), c.method))
    stem.with_suffix(".md").write_text(markdown(table, headline, meta))
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
