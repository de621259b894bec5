"""``torch-slt sweep``: several methods x sparsities on one random network, plus the dense baseline.

The learned masks keep that network's weights frozen (strong tickets); the one-shot methods train their
surviving weights unless ``--no-train-weights`` (their default, as in ``find``), and every row records
which (``train_weights``); ``sweep.md`` says it in words.

The gate methods (``stg``, ``hardconcrete``) reach each sparsity through their sparsity target: torch_slt's
hybrid formulation (:mod:`torch_slt.core.formulation`). ``--lams`` adds the paper's formulation, one cell
per ``lam`` without a target, whose sparsity is what that penalty reached: plotted against accuracy, the
paper's Fig. 1. Every row and the plot's legend name the formulation.

Resumable: the folder holds ``config.json`` (the sweep's settings) from the start; each finished cell
writes ``cells/<label>.json`` (its row) after its ticket, and the cell in progress keeps an epoch
checkpoint ``cells/<label>.ckpt.pt``. ``--resume`` skips the cells with a row and continues the
interrupted one from its checkpoint. Every cell seeds its own network, data order and gate noise, so a
resumed sweep ends with the same tickets and numbers as an uninterrupted one (wall times aside).
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import torch_slt
from torch_slt.cli import output
from torch_slt.cli.evaluation import (add_eval_flags, eval_settings, evaluation_markdown, find_tickets,
                                      metric_names, run_evaluation)
from torch_slt.cli.flags import add_run_flags
from torch_slt.cli.prepare import check_method_settings, load_data, prepare
from torch_slt.cli.reports import announce, sweep_markdown
from torch_slt.cli.settings import CONFIG, CLIError, RunSettings, from_args, read_config
from torch_slt.core.errors import SLTError
from torch_slt.core.formulation import GATE_METHODS, formulation_family, formulation_of

NAME = "sweep"
HELP = "several methods x sparsities on one random network, plus dense"
DESCRIPTION = ("Train a ticket for every method and sparsity on one random network (its "
               "weights frozen under the learned masks; the one-shot methods train their survivors "
               "unless --no-train-weights) (gate methods reach each sparsity through their sparsity target, torch_slt's "
               "hybrid; --lams adds the paper's formulation, one lam per cell, no target), train "
               "the dense baseline, and write sweep.json, sweep.md and curve.png in --out. With "
               "--metrics, then evaluate every ticket against the dense model as 'torch-slt "
               "evaluate' does (evaluation.json/.md, metrics.png with one panel per metric).")
SWEEP_SPARSITIES = (0.5, 0.7, 0.9, 0.95)
#: The folder of a sweep that holds one row per finished cell and the checkpoint of the cell in progress.
CELLS = "cells"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", help="comma-separated method names (default: every registered method)")
    p.add_argument("--sparsities", help="comma-separated fractions removed (default 0.5,0.7,0.9,0.95); "
                   "'none': no sparsity cells (with --lams: the paper's formulation only)")
    p.add_argument("--lams", help="comma-separated penalty weights, e.g. 0.01,0.1,1,10: the gate methods "
                   "(stg, hardconcrete) also run in the paper's formulation, lam alone, no sparsity target, "
                   "one cell per value; plotted as accuracy against the sparsity each reached (Fig. 1)")
    p.add_argument("--no-dense", action="store_true", default=None, help="skip the dense-trained baseline")
    add_run_flags(p, sweep=True)
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep in --out: finished (method, sparsity) cells are "
                   "kept, the interrupted one continues from its last epoch; same results as an "
                   "uninterrupted sweep")
    add_eval_flags(p, metrics_help="after the sweep, evaluate every ticket with these metrics "
                   "(comma-separated, or 'all'; default: no evaluation)")


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    out = Path(args.out) if args.out else None
    if args.resume and out is None:
        raise CLIError("--resume needs --out, the folder of the sweep to continue.")
    if out is not None:
        output.check_out(out, args.resume)
    saved = _saved_sweep(out) if args.resume else None
    s, _ = from_args(args, out, NAME)
    metrics = metric_names(args.metrics) if args.metrics is not None else None
    eval_config = eval_settings(args) if metrics else None
    grid = _grid(args, saved, out)
    methods, sparsities, no_dense = grid["methods"], grid["sparsities"], grid["no_dense"]
    lams = grid.get("lams", [])
    plan = _plan(methods, sparsities, lams)
    if not plan:
        raise CLIError("sweep: no cell to run: --sparsities none leaves only the methods without a sparsity "
                       "and the --lams cells; give --sparsities or --lams")
    out = out or output.default_out(NAME, s)
    splits = load_data(s)
    # Check every combination before anything is written or trained: the model builds and gates with
    # the first one, the method settings of every other one are valid.
    prepare(_with_lam(s, plan[0][2]), plan[0][0], plan[0][1], splits)
    for method, sp, lam in plan[1:]:
        check_method_settings(_with_lam(s, lam), method, sp, splits)
    output.make_out(out, resume=bool(args.resume))
    if saved is None:
        output.write_json(out / CONFIG, {"command": NAME, "settings": s.to_dict(), **grid})
    (out / CELLS).mkdir(exist_ok=True)
    try:
        rows = [_cell(s, method, sp, splits, args.quiet, f"[{i}/{len(plan)}]", out, lam)
                for i, (method, sp, lam) in enumerate(plan, 1)]
        dense = None if no_dense else _cell(s, None, None, splits, args.quiet, "[dense]", out)
    except KeyboardInterrupt:
        print(f"torch-slt sweep: interrupted; continue with: torch-slt sweep --out {out} --resume",
              file=sys.stderr)
        return 130
    result = {"command": NAME, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "versions": {"torch_slt": torch_slt.__version__, "torch": torch.__version__},
              "settings": {**s.to_dict(), "methods": methods, "sparsities": sparsities, "lams": lams},
              "rows": rows,
              "dense": dense, "wall_time_s": time.perf_counter() - t_start}
    _plot(result, out, splits.num_classes)
    (out / "sweep.md").write_text(sweep_markdown(result))
    output.write_json(out / "sweep.json", result)
    for leftover in (out / CELLS).glob("*.ckpt.pt*"):  # a kill between a row and its cleanup
        leftover.unlink()
    print(sweep_markdown(result, short=True))
    print(f"sweep.json, sweep.md and curve.png in {out}/")
    if metrics:
        data = run_evaluation(find_tickets(out, None, None), metrics, eval_config, quiet=args.quiet)
        print(evaluation_markdown(data, details=False))
        print(f"evaluation.json, evaluation.md and metrics.png in {out}/")
    return 0


def _saved_sweep(out: Path) -> dict[str, Any] | None:
    """The config of the sweep in ``out`` to resume; None when the folder holds no run yet."""
    saved = read_config(out, NAME)
    if saved is not None and not all(k in saved for k in ("methods", "sparsities", "no_dense")):
        raise CLIError(f"cannot resume {out}: {out / CONFIG} lacks the sweep's grid (methods, sparsities, "
                       f"no_dense); start a new sweep with another --out.")
    return saved


def _grid(args: argparse.Namespace, saved: dict[str, Any] | None, out: Path | None) -> dict[str, Any]:
    """The sweep's methods, sparsities and dense flag: from the flags, or from the sweep being resumed
    (where a typed flag must agree with what the sweep started with)."""
    typed = {"methods": split_methods(args.methods) if args.methods else None,
             "sparsities": split_sparsities(args.sparsities) if args.sparsities else None,
             "no_dense": args.no_dense, "lams": split_lams(args.lams) if args.lams else None}
    if saved is None:
        grid = {"methods": typed["methods"] or split_methods(None),
                "sparsities": split_sparsities(None) if typed["sparsities"] is None else typed["sparsities"],
                "no_dense": bool(args.no_dense), "lams": typed["lams"] or []}
        if grid["lams"] and not any(m in GATE_METHODS for m in grid["methods"]):
            raise CLIError(f"--lams runs the paper's formulation of {', '.join(GATE_METHODS)}; --methods "
                           f"{','.join(grid['methods'])} has neither: add stg or hardconcrete")
        return grid
    grid = {k: saved.get(k, []) for k in ("methods", "sparsities", "no_dense", "lams")}
    clash = [f"--{k.replace('_', '-')} {v!r} (the sweep has {grid[k]!r})" for k, v in typed.items()
             if v is not None and v != grid[k]]
    if clash:
        raise CLIError(f"--resume continues the sweep in {out} with its own grid, but {'; '.join(clash)} "
                       f"differ. Drop those flags to resume, or start a new sweep with another --out.")
    return grid


def _with_lam(s: RunSettings, lam: float | None) -> RunSettings:
    """The settings of a ``--lams`` cell (``lam`` in place of ``--lam``); ``s`` itself otherwise."""
    return s if lam is None else replace(s, lam=lam)


def _cell(s: RunSettings, method: str | None, sparsity: float | None, splits: Any, quiet: bool,
          tag: str, out: Path, lam: float | None = None) -> dict[str, Any]:
    """One cell of the grid: its saved row if it finished before, else trained (from its checkpoint
    when it was interrupted), then its row saved. ``lam``: a cell of the paper's formulation."""
    label = _label(method, sparsity, lam)
    done = out / CELLS / f"{label}.json"
    if done.exists():
        if not quiet:
            print(f"{tag} {label}: finished before, kept", file=sys.stderr)
        try:
            row = json.loads(done.read_text())
        except (OSError, ValueError) as err:
            raise CLIError(f"cannot read {done} ({err}); delete it to train that cell again.") from None
        if not isinstance(row, dict):
            raise CLIError(f"cannot read {done}: it holds no cell row; delete it to train that cell again.")
        return row
    checkpoint = out / CELLS / f"{label}.ckpt.pt"
    row = _run_one(_with_lam(s, lam), method, sparsity, splits, quiet, tag, out, checkpoint, lam)
    output.write_json(done, row)
    checkpoint.unlink(missing_ok=True)
    return row


def _label(method: str | None, sparsity: float | None, lam: float | None = None) -> str:
    name = method or "dense"
    if lam is not None:
        return f"{name}-lam{lam:g}"
    return f"{name}-{sparsity}" if sparsity is not None else name


def _plan(methods: list[str], sparsities: list[float],
          lams: list[float] = ()) -> list[tuple[str, float | None, float | None]]:
    """(method, sparsity, lam) cells: every method at every sparsity (a method without a sparsity
    argument runs once), then the gate methods once per ``lam`` without a target (the paper's)."""
    plan: list[tuple[str, float | None, float | None]] = []
    for method in methods:
        takes = "sparsity" in inspect.signature(torch_slt.get_method(method).__init__).parameters
        plan += [(method, sp, None) for sp in sparsities] if takes else [(method, None, None)]
        if method in GATE_METHODS:
            plan += [(method, None, lam) for lam in lams]
    return plan


def _plot(result: dict[str, Any], out: Path, num_classes: int) -> None:
    s, rows, dense = result["settings"], result["rows"], result["dense"]
    try:
        from torch_slt.experiment.plots import plot_accuracy_vs_sparsity

        # One curve per formulation: the paper's lam grid is one line (Fig. 1), the targets another.
        plot_accuracy_vs_sparsity(
            [{"method": formulation_family(r.get("formulation") or r["method"]), "sparsity": r["sparsity"],
              "accuracy": r["test_accuracy"], "target": r["sparsity"] if r.get("lam") is not None
              else (r["target_sparsity"] if r["target_sparsity"] is not None else r["sparsity"])}
             for r in rows],
            out / "curve.png", dense_accuracy=dense["test_accuracy"] if dense else None,
            chance_accuracy=1.0 / num_classes,
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


def split_lams(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"--lams {text!r} must be comma-separated numbers, e.g. 0.01,0.1,1,10") from None
    bad = [v for v in values if not (v >= 0 and v != float("inf"))]
    if bad or not values:
        raise CLIError(f"--lams {text!r}: every value is a penalty weight, a finite number >= 0.")
    return list(dict.fromkeys(values))


def split_sparsities(text: str | None) -> list[float]:
    if not text:
        return list(SWEEP_SPARSITIES)
    if text.strip().lower() == "none":
        return []
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"--sparsities {text!r} must be comma-separated numbers, e.g. 0.5,0.7,0.9") from None
    bad = [v for v in values if not 0.0 <= v < 1.0]
    if bad or not values:
        raise CLIError(f"--sparsities {text!r}: every value is a fraction of weights removed, in [0, 1).")
    return values


def _run_one(s: RunSettings, method: str | None, sparsity: float | None, splits: Any, quiet: bool,
             tag: str, out: Path, checkpoint: Path | None = None, lam: float | None = None) -> dict[str, Any]:
    """Train, finalize, evaluate and save the ticket of one cell (``method`` None: dense); training
    continues from ``checkpoint`` when it exists and writes it at every epoch."""
    from torch_slt.experiment.train import accuracy, fit
    from torch_slt.experiment.train.alarms import TrainingAlarm, training_alarms

    t0 = time.perf_counter()
    prep = prepare(s, method, sparsity, splits)
    prep.train_config.quiet = quiet
    name = method or "dense"
    if not quiet:
        where = f" at sparsity {sparsity}" if sparsity is not None else (f" at lam {lam:g}" if lam is not None else "")
        print(f"{tag} {name}{where}", file=sys.stderr)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TrainingAlarm)  # the cell's row says it, below
            result = fit(prep.model, splits.train, splits.val, prep.train_config, checkpoint=checkpoint,
                         resume=True)
    except ValueError as err:  # a checkpoint that does not fit, non-finite gates
        raise CLIError(f"{_label(method, sparsity, lam)}: {err}") from None
    if method is not None:
        torch_slt.finalize(prep.model)
    rep = torch_slt.report(prep.model)
    label = (rep.formulation or formulation_of(method, prep.method_kwargs)) if method else formulation_of(None, {})
    row = {"method": name, "formulation": label, "target_sparsity": sparsity, "lam": lam,
           "sparsity": rep.sparsity if method else 0.0,
           "val_accuracy": accuracy(prep.model, splits.val),
           "test_accuracy": accuracy(prep.model, splits.test),
           "epochs": prep.train_config.epochs, "kwargs": prep.method_kwargs,
           "train_weights": prep.trains_weights,
           "wall_time_s": time.perf_counter() - t0}
    row["warnings"] = training_alarms(result.history, splits.num_classes, final_accuracy=row["val_accuracy"])
    announce(NAME, row["warnings"], _label(method, sparsity))
    # dense too: its ticket is the reference of 'torch-slt evaluate' (mCE, LTH-PASS)
    row["ticket"] = _save_ticket(prep, row, out, _label(method, sparsity, lam))
    if not quiet:
        print(f"{tag} {name}: test {row['test_accuracy']:.2%}, sparsity {row['sparsity']:.2%}",
              file=sys.stderr)
    return row


def _save_ticket(prep: Any, row: dict[str, Any], out: Path, label: str) -> str:
    tickets = out / "tickets"
    tickets.mkdir(exist_ok=True)
    with warnings.catch_warnings():
        if row["train_weights"]:
            warnings.filterwarnings("ignore", message=r"save_ticket\(\): none of the model's weights")
        meta = {"method": row["method"], "formulation": row["formulation"], "test_accuracy": row["test_accuracy"]}
        path = torch_slt.save_ticket(prep.model.to("cpu"), tickets / f"{label}.slt.safetensors", prep.spec,
                                     metadata=meta)
    return str(Path(path).relative_to(out))
