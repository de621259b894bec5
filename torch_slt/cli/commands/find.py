"""``torch-slt find``: train one ticket and save it with a report and a plot."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import torch_slt
from torch_slt.cli import output
from torch_slt.cli.flags import add_run_flags
from torch_slt.cli.prepare import Prepared, load_data, prepare
from torch_slt.cli.reports import announce, report_markdown, summary, summary_table
from torch_slt.cli.settings import CONFIG, CLIError, RunSettings, from_args

NAME = "find"
HELP = "train one ticket and save it with a report"
DESCRIPTION = ("Build a random network from --seed, gate it with --method, train the "
               "masks (weights frozen), evaluate, finalize and save the ticket, report.json/.md "
               "and layer_sparsity.png in --out. With no flags: stg on lenet300 on digits.")
CHECKPOINT = "checkpoint.pt"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", help=f"pruning method (default {RunSettings.method}; see 'torch-slt methods')")
    add_run_flags(p)
    p.add_argument("--compact", action="store_true",
                   help="also remove the closed neurons/channels/heads physically (with --granularity): "
                   "writes compact_model.pt (a whole nn.Module, torch.load(..., weights_only=False)) and "
                   "compact.md / compact.json (parameters and MACs before and after); needs torch-pruning")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its last epoch checkpoint, with its "
                   "settings; it ends with the same ticket as an uninterrupted run")
    # For tests: stop after N epochs, as a killed run would.
    p.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from torch_slt.experiment.train import fit
    from torch_slt.experiment.train.alarms import TrainingAlarm

    t_start = time.perf_counter()
    out = Path(args.out) if args.out else None
    if args.resume and out is None:
        raise CLIError("--resume needs --out, the folder of the run to continue.")
    s, resuming = from_args(args, out)
    s.method = s.method.strip().lower().replace("-", "_")
    out = out or output.default_out(NAME, s)
    output.check_out(out, args.resume)
    if args.compact:
        _require_torch_pruning()   # before anything is trained or written
    splits = load_data(s)
    prep = prepare(s, s.method, s.sparsity, splits)
    output.make_out(out, resume=bool(args.resume))
    if not resuming:
        output.write_json(out / CONFIG, {"command": NAME, "settings": s.to_dict()})
    config = prep.train_config
    config.quiet, config.stop_after = args.quiet, args.stop_after
    if not args.quiet:
        print(f"torch-slt find: {s.method} on {s.model} / {s.dataset} ({len(splits.train)} train, "
              f"{len(splits.val)} val, {len(splits.test)} test) -> {out}", file=sys.stderr)
    try:
        with warnings.catch_warnings():
            # find checks the finished ticket itself (_finish) and says so louder
            warnings.simplefilter("ignore", TrainingAlarm)
            result = fit(prep.model, splits.train, splits.val, config, checkpoint=out / CHECKPOINT,
                         resume=args.resume)
    except KeyboardInterrupt:
        print(f"torch-slt find: interrupted; continue with: torch-slt find --out {out} --resume",
              file=sys.stderr)
        return 130
    except ValueError as err:  # a checkpoint that does not fit
        raise CLIError(str(err)) from None
    if not result.completed:
        print(f"torch-slt find: stopped after epoch {len(result.history)} of {config.epochs}; continue "
              f"with: torch-slt find --out {out} --resume", file=sys.stderr)
        return 0
    report = _finish(prep, result, out, t_start, args.compact, args.quiet)
    print(summary(report, out) if args.quiet else summary_table(report, out))
    (out / CHECKPOINT).unlink(missing_ok=True)
    return 0


def _finish(prep: Prepared, result: Any, out: Path, t_start: float, compact: bool = False,
            quiet: bool = True) -> dict[str, Any]:
    """Finalize, evaluate (the test split once), and write every output (with ``compact``, the compact
    model too) into one staging folder; report.json last, so a kill leaves a run to resume."""
    from torch_slt.experiment.train import accuracy
    from torch_slt.experiment.train.alarms import training_alarms

    model, s = prep.model, prep.settings
    if torch_slt.is_gated(model):
        torch_slt.finalize(model)
    val_acc = accuracy(model, prep.splits.val)
    test_acc = accuracy(model, prep.splits.test)
    sparsity = torch_slt.report(model)   # its formulation: recorded by finalize
    alarms = training_alarms(result.history, prep.splits.num_classes, final_accuracy=val_acc)
    announce(NAME, alarms)
    with output.staged(out, last="report.json") as staging:
        model_cpu = model.to("cpu")
        output.save_state_dict(staging / "ticket.safetensors", model_cpu, prep.spec)
        with warnings.catch_warnings():
            if prep.trains_weights:
                # a weak ticket: trained values are stored, as expected
                warnings.filterwarnings("ignore", message=r"save_ticket\(\): none of the model's weights")
            torch_slt.save_ticket(model_cpu, staging / "ticket.slt.safetensors", prep.spec,
                                  metadata={"method": s.method, "formulation": sparsity.formulation,
                                            "test_accuracy": test_acc})
        _plot(sparsity, staging, s, test_acc)
        if compact:
            _compact(prep, staging, quiet, out)
        report = _report(prep, result, sparsity, val_acc, test_acc, t_start, staging)
        report["warnings"] = alarms
        (staging / "report.md").write_text(report_markdown(report))
        output.write_json(staging / "report.json", report)
    return report


def _compact(prep: Prepared, out: Path, quiet: bool, final: Path) -> None:
    """Compact the finalized ticket (torch_slt.compact) and write the model and its report."""
    from torch_slt.experiment.train import accuracy
    from torch_slt.structured.compaction import recalibrate_batchnorm

    model = prep.model.to("cpu")
    train_x, _ = prep.splits.train.tensors()
    # Closed channels' BatchNorm statistics -> 0 so that they output exactly 0 (see docs/compact.md).
    recalibrate_batchnorm(model, [train_x[i:i + 256] for i in range(0, min(len(train_x), 2048), 256)])
    model.eval()
    small = torch_slt.compact(model, train_x[:64], return_report=False)
    rep = small.__dict__.pop("compact_report")  # not pickled into compact_model.pt
    test_acc = accuracy(small, prep.splits.test)
    torch.save(small, out / "compact_model.pt")
    body = {"test_accuracy": test_acc, "params_before": rep.params_before, "params_after": rep.params_after,
            "macs_before": rep.macs_before, "macs_after": rep.macs_after, "removed": rep.removed,
            "kept": rep.kept, "max_abs_diff": rep.max_abs_diff}
    output.write_json(out / "compact.json", body)
    (out / "compact.md").write_text(
        f"# Compact ticket\n\ntest accuracy {test_acc:.4f}\n\n{rep.to_markdown()}\n")
    if not quiet:
        print(f"torch-slt find: compact model: {rep.params_before} -> {rep.params_after} parameters, "
              f"MACs x{rep.mac_ratio:.3f}, test {test_acc:.2%} -> {final / 'compact_model.pt'}",
              file=sys.stderr)


def _require_torch_pruning() -> None:
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        raise CLIError('--compact needs torch-pruning: pip install "torch-slt[structured]"') from None


def _plot(sparsity: Any, folder: Path, s: RunSettings, test_acc: float) -> None:
    try:
        from torch_slt.experiment.plots import plot_layer_sparsity

        plot_layer_sparsity(sparsity, folder / "layer_sparsity.png",
                            title=f"{s.method} on {s.model} / {s.dataset}: "
                                  f"{sparsity.sparsity:.1%} removed, test {test_acc:.1%}")
    except ImportError as err:
        print(f"torch-slt find: no plot ({err})", file=sys.stderr)


def _report(prep: Prepared, result: Any, sparsity: Any, val_acc: float, test_acc: float,
            t_start: float, folder: Path) -> dict[str, Any]:
    model, s = prep.model, prep.settings
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
    return {
        "command": NAME, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch_slt": torch_slt.__version__, "torch": torch.__version__},
        "settings": s.to_dict(),
        "method": {"name": s.method, "formulation": sparsity.formulation, "kwargs": prep.method_kwargs,
                   "learned": bool(torch_slt.get_method(s.method).learned)},
        "training": {**result.config.to_dict(), "resumed_from_epoch": result.resumed_from},
        "model": prep.spec.to_dict(),
        "dataset": {"name": s.dataset, "train": len(prep.splits.train), "val": len(prep.splits.val),
                    "test": len(prep.splits.test), "in_shape": list(prep.splits.in_shape),
                    "num_classes": prep.splits.num_classes},
        "accuracy": {"val": val_acc, "test": test_acc},
        "sparsity": sparsity.to_dict(),
        "parameters": {"total": total, "nonzero": nonzero, "gated": sparsity.total,
                       "gated_kept": sparsity.kept},
        "wall_time_s": {"total": time.perf_counter() - t_start, "training": result.wall_time},
        "history": result.history,
        "files": files,
    }
