"""``torch-slt compare RUN_A RUN_B ...``: mask overlap of tickets, their per-layer profiles, and
optionally the loss along the line between the first two."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import torch

from torch_slt.cli import output
from torch_slt.cli.evaluation import find_tickets
from torch_slt.cli.settings import CLIError

NAME = "compare"
HELP = "mask overlap (Jaccard vs chance), layer profiles and loss line of several tickets"
DESCRIPTION = ("Compare the masks of tickets of one architecture: the Jaccard overlap of every pair "
               "(overall, and per layer for two tickets) next to the overlap expected by chance at "
               "those per-layer densities. A sweep folder stands for all its tickets. Writes "
               "compare.json, compare.md, overlap.png and profiles.png in --out; --line adds the test "
               "loss along the line between the first two tickets (line.png). See docs/analysis.md.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="RUN", help="find/sweep run folders or .slt.safetensors files")
    p.add_argument("--out", help="folder for the outputs (default runs/compare-<time>)")
    p.add_argument("--line", action="store_true", help="also the loss along the line between the first two")
    p.add_argument("--steps", type=int, default=11, help="points on the line (default 11)")
    p.add_argument("--dataset", help="dataset for --line (default: the first run's)")
    p.add_argument("--data-dir", help="where the dataset files are")
    p.add_argument("--threads", type=int, help="torch threads")


def run(args: argparse.Namespace) -> int:
    from torch_slt.analysis import mask_overlap, overlap_matrix

    labels, models, data, networks = _collect(args)
    if len(models) < 2:
        raise CLIError(f"compare needs at least two tickets; got {len(models)} from {', '.join(args.paths)}.")
    if args.line and not data.get("dataset"):
        raise CLIError("--line needs the test data: pass --dataset (ticket files do not record it).")
    try:
        pairs = {(i, j): mask_overlap(models[i], models[j]) for i in range(len(models))
                 for j in range(i + 1, len(models))}
    except ValueError as err:
        raise CLIError(str(err)) from None
    matrix = overlap_matrix(models)
    out = Path(args.out) if args.out else _default_out()
    output.make_out(out)
    result: dict[str, Any] = {
        "command": NAME, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tickets": labels, "jaccard": matrix.tolist(),
        "pairs": [{"a": labels[i], "b": labels[j], **o.to_dict()} for (i, j), o in pairs.items()]}
    text = _markdown(labels, pairs)
    mixed = different_networks(labels, networks)
    result["same_network"] = mixed is None
    if mixed:
        print(f"torch-slt compare: warning: {mixed}", file=sys.stderr)
        text = f"**Warning: {mixed}**\n\n{text}"
    chance = torch.ones_like(matrix)
    for (i, j), o in pairs.items():
        chance[i, j] = chance[j, i] = o.chance
    figures = _figures(labels, models, matrix, chance, out)
    if args.line:
        line = _line(models, labels, data, args, out)
        result["line"] = line.to_dict()
        text += (f"\n\n## Loss along the line {labels[0]} -> {labels[1]}\n\nloss {line.loss[0]:.4f} -> "
                 f"{line.loss[-1]:.4f}, max {max(line.loss):.4f}; barrier height: loss "
                 f"{line.loss_barrier:.4f}, error {100 * line.error_barrier:.2f} points")
        figures.append("line.png")
    (out / "compare.md").write_text(text + "\n")
    output.write_json(out / "compare.json", result)
    print(text)
    print(f"\ncompare.json, compare.md and {', '.join(figures)} in {out}/")
    return 0


def different_networks(labels: list[str], networks: list[dict[str, Any]]) -> str | None:
    """A sentence when the tickets' random networks differ (weights hashes), else None.

    Masks over two different random networks share weights only by position: their overlap says
    nothing about one subnetwork found twice, and is chance-like by construction."""
    groups: dict[str, list[int]] = {}
    for i, net in enumerate(networks):
        groups.setdefault(net["weights_hash"], []).append(i)
    if len(groups) < 2:
        return None
    described = "; ".join(
        f"{', '.join(labels[i] for i in idx[:3])}{', ...' if len(idx) > 3 else ''}: "
        f"seed {networks[idx[0]]['seed']}, init {networks[idx[0]]['init']}, weights {h[7:19]}..."
        for h, idx in groups.items())
    return (f"the tickets come from {len(groups)} different random networks ({described}). Their masks "
            f"select weights of different values, so the overlap is not one subnetwork found twice; "
            f"compare tickets of one network (the same --model, --width, --init and --seed).")


def _collect(args: argparse.Namespace) -> tuple[list[str], list[Any], dict[str, Any], list[dict[str, Any]]]:
    from torch_slt.experiment.ticket import load_ticket, ticket_info

    labels, models, data, networks = [], [], None, []
    for raw in args.paths:
        path = Path(raw)
        if path.is_file() and path.name.endswith(".slt.safetensors"):
            found = [(path.name[: -len(".slt.safetensors")], path)]
        else:
            run = find_tickets(path, args.dataset, args.data_dir)
            data = data or run.data
            prefix = f"{path.name}:" if len(args.paths) > 1 and len(run.tickets) > 1 else ""
            found = [(prefix + t.label if len(run.tickets) > 1 else path.name, t.path) for t in run.tickets]
        for label, ticket in found:
            try:
                models.append(load_ticket(ticket)[0])
                info = ticket_info(ticket)
            except (OSError, ValueError) as err:
                raise CLIError(f"{ticket}: {err}") from None
            labels.append(label)
            networks.append({"weights_hash": info["weights_hash"], "seed": info["spec"].seed,
                             "init": info["spec"].init})
    return labels, models, data or {"dataset": args.dataset, "data_dir": args.data_dir, "val_fraction": 0.1,
                                     "seed": 0}, networks


def _markdown(labels: list[str], pairs: dict) -> str:
    lines = ["# Mask overlap (Jaccard of the kept weights; chance at the same per-layer densities)", "",
             "| A | B | Jaccard | chance | ratio |", "|---|---|---:|---:|---:|"]
    for (i, j), o in pairs.items():
        ratio = o.jaccard / o.chance if o.chance > 0 else float("nan")
        lines.append(f"| {labels[i]} | {labels[j]} | {o.jaccard:.4f} | {o.chance:.4f} | {ratio:.2f}x |")
    if len(labels) == 2:
        lines += ["", "## Per layer", "", pairs[(0, 1)].to_markdown()]
    return "\n".join(lines)


def _figures(labels, models, matrix, chance, out: Path) -> list[str]:
    from torch_slt.analysis import plot_layer_profiles, plot_overlap_heatmap

    try:
        plot_overlap_heatmap(matrix, labels, out / "overlap.png", chance=chance)
        plot_layer_profiles(dict(zip(labels, models)), out / "profiles.png")
    except ImportError as err:
        print(f"torch-slt compare: no figures ({err})")
        return []
    return ["overlap.png", "profiles.png"]


def _line(models, labels, data, args, out: Path):
    from torch_slt.analysis import loss_along_line, plot_line
    from torch_slt.experiment.data import load_dataset

    try:
        splits = load_dataset(data["dataset"], data.get("data_dir"),
                              val_fraction=data.get("val_fraction", 0.1),
                              seed=data.get("seed", 0))
        line = loss_along_line(models[0], models[1], splits, steps=args.steps)
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise CLIError(str(err)) from None
    try:
        plot_line({f"{labels[0]} -> {labels[1]}": line}, out / "line.png")
    except ImportError:
        pass
    return line


def _default_out() -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"compare-{stamp}"
    path, i = base, 2
    while path.exists():
        path, i = base.with_name(f"compare-{stamp}-{i}"), i + 1
    return path
