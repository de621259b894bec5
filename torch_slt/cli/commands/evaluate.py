"""``torch-slt evaluate RUN_DIR|TICKET``: every metric of torch_slt.evaluation, written into the run."""

from __future__ import annotations

import argparse
from pathlib import Path

from torch_slt.cli.evaluation import (add_eval_flags, eval_settings, evaluation_markdown, find_tickets,
                                      metric_names, run_evaluation)
from torch_slt.cli.settings import CLIError

NAME = "evaluate"
HELP = "calibration, OoD, corruptions, adversarial and per-class metrics of a run or ticket"
DESCRIPTION = ("Evaluate the ticket of a find run, every ticket of a sweep (against its dense model: "
               "mCE and LTH-PASS), or one ticket file, on the test split with the metrics of "
               "torch_slt.evaluation; write evaluation.json, evaluation.md and figures (reliability "
               "diagram, metrics.png for a sweep) into the run folder (or --out). See docs/evaluation.md.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="RUN_DIR|TICKET",
                   help="a find or sweep run folder, or a .slt.safetensors file")
    add_eval_flags(p, metrics_help="comma-separated metrics (default: all; see docs/evaluation.md)")
    p.add_argument("--reference", help="the dense model as a ticket file or find run folder (mCE, "
                   "LTH-PASS); default: a sweep's dense ticket")
    p.add_argument("--dataset", help="the dataset (default: the run's; required for a ticket file)")
    p.add_argument("--data-dir", help="where the dataset files are (default: the run's)")
    p.add_argument("--out", help="folder for the outputs (default: the run folder, or the ticket's folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, help="torch threads")


def run(args: argparse.Namespace) -> int:
    metrics = metric_names(args.metrics)
    settings = eval_settings(args)
    tickets = find_tickets(Path(args.path), args.dataset, args.data_dir)
    reference = None
    if args.reference:
        ref = find_tickets(Path(args.reference), tickets.data["dataset"], None)
        if len(ref.tickets) != 1:
            raise CLIError(f"--reference {args.reference} holds {len(ref.tickets)} tickets; pass one ticket "
                           f"file or find run folder.")
        reference = ref.tickets[0]
        reference.label = "dense (reference)"
    if args.out:
        tickets.out = Path(args.out)
        tickets.out.mkdir(parents=True, exist_ok=True)
    data = run_evaluation(tickets, metrics, settings, reference=reference, quiet=args.quiet)
    print(evaluation_markdown(data, details=len(data["rows"]) == 1).rstrip())
    print(f"\nevaluation.json, evaluation.md and figures in {tickets.out}/")
    return 0
