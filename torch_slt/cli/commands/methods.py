"""``torch-slt methods``: the registered methods, their family and default optimiser."""

from __future__ import annotations

import argparse
import json

import torch_slt

NAME = "methods"
HELP = "list the registered methods"
DESCRIPTION = ("The registered pruning methods, their family and default optimiser.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from torch_slt.experiment.train import method_defaults

    rows = []
    for name in torch_slt.list_methods():
        cls = torch_slt.get_method(name)
        d = method_defaults(name)
        family = "learned + weights" if cls.trains_weights else "learned" if cls.learned else "one-shot"
        rows.append({"name": name, "family": family,
                     "optimizer": f"{d.optimizer} lr {d.lr:g}" if cls.learned else "-",
                     "description": cls.description or (cls.__doc__ or "").strip().splitlines()[0]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| method | family | default optimizer | description |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['family']} | {r['optimizer']} | {r['description']} |")
    return 0
