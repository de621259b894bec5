"""``torch-slt sweep``: several methods x sparsities on one frozen network, plus the dense baseline."""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import torch_slt
from torch_slt.cli import output
from torch_slt.cli.flags import add_run_flags
from torch_slt.cli.prepare import check_method_settings, load_data, prepare
from torch_slt.cli.reports import sweep_markdown
from torch_slt.cli.settings import CLIError, RunSettings, from_args
from torch_slt.core.errors import SLTError

NAME = "sweep"
HELP = "several methods x sparsities on one frozen network, plus dense"
DESCRIPTION = ("Train a ticket for every method and sparsity on one frozen random "
               "network (gate methods reach each sparsity through their sparsity target), train "
               "the dense baseline, and write sweep.json, sweep.md and curve.png in --out.")
SWEEP_SPARSITIES = (0.5, 0.7, 0.9, 0.95)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", help="comma-separated method names (default: every registered method)")
    p.add_argument("--sparsities", help="comma-separated fractions removed (default 0.5,0.7,0.9,0.95)")
    p.add_argument("--no-dense", action="store_true", help="skip the dense-trained baseline")
    add_run_flags(p, sweep=True)


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    s, _ = from_args(args, None)
    methods = split_methods(args.methods)
    sparsities = split_sparsities(args.sparsities)
    out = Path(args.out) if args.out else output.default_out(NAME, s)
    output.check_out(out, resume=False)
    splits = load_data(s)
    plan = _plan(methods, sparsities)
    # Check every combination before anything is written or trained: the model builds and gates with
    # the first one, the method settings of every other one are valid.
    prepare(s, plan[0][0], plan[0][1], splits)
    for method, sp in plan[1:]:
        check_method_settings(s, method, sp, splits)
    output.make_out(out)
    rows = [_run_one(s, method, sp, splits, args.quiet, f"[{i}/{len(plan)}]", out)
            for i, (method, sp) in enumerate(plan, 1)]
    dense = None if args.no_dense else _run_one(s, None, None, splits, args.quiet, "[dense]", out)
    result = {"command": NAME, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "versions": {"torch_slt": torch_slt.__version__, "torch": torch.__version__},
              "settings": {**s.to_dict(), "methods": methods, "sparsities": sparsities}, "rows": rows,
              "dense": dense, "wall_time_s": time.perf_counter() - t_start}
    _plot(result, out)
    (out / "sweep.md").write_text(sweep_markdown(result))
    output.write_json(out / "sweep.json", result)
    print(sweep_markdown(result, short=True))
    print(f"sweep.json, sweep.md and curve.png in {out}/")
    return 0


def _plan(methods: list[str], sparsities: list[float]) -> list[tuple[str, float | None]]:
    """(method, sparsity) cells; a method without a sparsity argument runs once."""
    plan: list[tuple[str, float | None]] = []
    for method in methods:
        takes = "sparsity" in inspect.signature(torch_slt.get_method(method).__init__).parameters
        plan += [(method, sp) for sp in sparsities] if takes else [(method, None)]
    return plan


def _plot(result: dict[str, Any], out: Path) -> None:
    s, rows, dense = result["settings"], result["rows"], result["dense"]
    try:
        from torch_slt.experiment.plots import plot_accuracy_vs_sparsity

        plot_accuracy_vs_sparsity(
            [{"method": r["method"], "sparsity": r["sparsity"], "accuracy": r["test_accuracy"]}
             for r in rows],
            out / "curve.png", dense_accuracy=dense["test_accuracy"] if dense else None,
            title=f"{s['model']} / {s['dataset']}, seed {s['seed']}")
    except ImportError as err:
        print(f"torch-slt sweep: no plot ({err})", file=sys.stderr)


def split_methods(text: str | None) -> list[str]:
    names = torch_slt.list_methods() if not text else [m.strip() for m in text.split(",") if m.strip()]
    resolved = []
    for name in names:
        try:
            resolved.append(torch_slt.get_method(name).name)
        except SLTError as err:
            raise CLIError(str(err)) from None
    return list(dict.fromkeys(resolved))


def split_sparsities(text: str | None) -> list[float]:
    if not text:
        return list(SWEEP_SPARSITIES)
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"--sparsities {text!r} must be comma-separated numbers, e.g. 0.5,0.7,0.9") from None
    bad = [v for v in values if not 0.0 <= v < 1.0]
    if bad or not values:
        raise CLIError(f"--sparsities {text!r}: every value is a fraction of weights removed, in [0, 1).")
    return values


def _run_one(s: RunSettings, method: str | None, sparsity: float | None, splits: Any, quiet: bool,
             tag: str, out: Path) -> dict[str, Any]:
    """Train, finalize, evaluate and save the ticket of one cell (``method`` None: dense)."""
    from torch_slt.experiment.train import evaluate, fit

    t0 = time.perf_counter()
    prep = prepare(s, method, sparsity, splits)
    prep.train_config.quiet = quiet
    name = method or "dense"
    if not quiet:
        print(f"{tag} {name}" + (f" at sparsity {sparsity}" if sparsity is not None else ""), file=sys.stderr)
    fit(prep.model, splits.train, splits.val, prep.train_config)
    if method is not None:
        torch_slt.finalize(prep.model)
    rep = torch_slt.report(prep.model)
    row = {"method": name, "target_sparsity": sparsity, "sparsity": rep.sparsity if method else 0.0,
           "val_accuracy": evaluate(prep.model, splits.val),
           "test_accuracy": evaluate(prep.model, splits.test),
           "epochs": prep.train_config.epochs, "kwargs": prep.method_kwargs,
           "wall_time_s": time.perf_counter() - t0}
    if method is not None:
        label = f"{name}-{sparsity}" if sparsity is not None else name
        row["ticket"] = _save_ticket(prep, row, out, label)
    if not quiet:
        print(f"{tag} {name}: test {row['test_accuracy']:.2%}, sparsity {row['sparsity']:.2%}",
              file=sys.stderr)
    return row


def _save_ticket(prep: Any, row: dict[str, Any], out: Path, label: str) -> str:
    tickets = out / "tickets"
    tickets.mkdir(exist_ok=True)
    with warnings.catch_warnings():
        if prep.settings.training.train_weights:
            warnings.filterwarnings("ignore", message=r"save_ticket\(\): none of the model's weights")
        meta = {"method": row["method"], "test_accuracy": row["test_accuracy"]}
        path = torch_slt.save_ticket(tickets / f"{label}.slt.safetensors", prep.model.to("cpu"), prep.spec,
                                     metadata=meta)
    return str(Path(path).relative_to(out))
