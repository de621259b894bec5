"""Markdown and terminal summaries of finished runs (from their report / sweep JSON, so ``inspect``
prints exactly what the run wrote)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def formulation_of_run(r: dict[str, Any]) -> str:
    """The formulation that made the run's ticket (``"stg (paper: lam=0.1)"``...); the bare method name
    for a report written before torch_slt named formulations."""
    return r.get("method", {}).get("formulation") or r["settings"]["method"]


def announce(command: str, alarms: list[str], what: str = "") -> None:
    """Print every alarm of a run (``training_alarms``) to stderr, loudly, even with ``--quiet``."""
    for alarm in alarms:
        print(f"torch-slt {command}: WARNING{' (' + what + ')' if what else ''}: {alarm}", file=sys.stderr)


def warning_lines(alarms: list[str]) -> list[str]:
    """The alarms as Markdown block quotes (empty when there is none)."""
    return [line for alarm in alarms for line in (f"> **WARNING**: {alarm}", "")]


def report_markdown(r: dict[str, Any]) -> str:
    s, acc, sp, par = r["settings"], r["accuracy"], r["sparsity"], r["parameters"]
    lines = [
        f"# Ticket: {formulation_of_run(r)} on {s['model']} / {s['dataset']}", "",
        *warning_lines(r.get("warnings", [])),
        "| | |", "|---|---|",
        f"| formulation | {formulation_of_run(r)} |",
        f"| test accuracy | {acc['test']:.2%} |",
        f"| val accuracy | {acc['val']:.2%} |",
        f"| sparsity (gated weights removed) | {sp['sparsity']:.2%} "
        f"({sp['kept']:,} of {sp['total']:,} kept) |",
        f"| parameters | {par['total']:,} total, {par['nonzero']:,} non-zero |",
        f"| wall time | {r['wall_time_s']['total']:.1f} s ({r['wall_time_s']['training']:.1f} s training) |",
        "", "## Configuration", "", "| setting | value |", "|---|---|",
    ]
    training = r["training"]
    for key, value in s.items():
        if value is None and training.get(key) is not None:
            value = f"{training[key]} (default for {s['method']})"
        lines.append(f"| {key} | {value} |")
    lines += [f"| {key} | {value} |" for key, value in training.items()
              if key not in s and key not in ("quiet", "stop_after", "num_workers")]
    lines += [f"| {s['method']}.{key} | {value} |" for key, value in r["method"]["kwargs"].items()]
    lines += [f"| model.{key} | {value} |" for key, value in r["model"].items()]
    lines += ["", "## Per-layer sparsity", "", "![layer sparsity](layer_sparsity.png)", "",
              "| tensor | shape | kept | total | sparsity |", "|---|---|---:|---:|---:|"]
    lines += [f"| {row['name']} | {'x'.join(map(str, row['shape']))} | {row['kept']:,} | {row['total']:,} "
              f"| {row['sparsity']:.2%} |" for row in sp["layers"]]
    if r["history"]:
        lines += ["", "## Training", "", "| epoch | loss | val accuracy | sparsity |",
                  "|---:|---:|---:|---:|"]
        lines += [f"| {h['epoch']} | {h['loss']:.4f} | {fmt_pct(h['val_accuracy'])} "
                  f"| {fmt_pct(h['sparsity'])} |" for h in r["history"]]
    lines += ["", "## Files", "", "| file | bytes |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in r["files"].items()]
    lines += ["", "Load the ticket:", "", "```python", "import torch_slt",
              'model, spec, meta = torch_slt.load_ticket("ticket.slt.safetensors")', "```", ""]
    return "\n".join(lines)


def summary(r: dict[str, Any], out: Path) -> str:
    sp = r["sparsity"]
    text = (f"{formulation_of_run(r)}: test accuracy {r['accuracy']['test']:.2%} (val {r['accuracy']['val']:.2%}) with "
            f"{sp['sparsity']:.2%} of the gated weights removed ({sp['kept']:,} of {sp['total']:,} kept); "
            f"{r['wall_time_s']['total']:.1f} s. Ticket and report in {out}/")
    return "\n".join([text] + [f"WARNING: {alarm}" for alarm in r.get("warnings", [])])


def summary_table(r: dict[str, Any], out: Path) -> str:
    """The final summary: accuracy, sparsity overall and per layer, time, where the files are."""
    s, sp = r["settings"], r["sparsity"]
    width = max([len(row["name"]) for row in sp["layers"]] + [16])
    lines = [f"{formulation_of_run(r)} on {s['model']} / {s['dataset']}",
             f"  {'test accuracy':<{width}}  {r['accuracy']['test']:>8.2%}   "
             f"(val {r['accuracy']['val']:.2%})",
             f"  {'sparsity':<{width}}  {sp['sparsity']:>8.2%}   "
             f"({sp['kept']:,} of {sp['total']:,} gated weights kept)"]
    lines += [f"  {row['name']:<{width}}  {row['sparsity']:>8.2%}   ({row['kept']:,} of {row['total']:,})"
              for row in sp["layers"]]
    lines += [f"  {'wall time':<{width}}  {r['wall_time_s']['total']:>7.1f} s",
              f"  {'ticket and report':<{width}}  {out}/"]
    lines += [f"  WARNING: {alarm}" for alarm in r.get("warnings", [])]
    return "\n".join(lines)


def _weights_sentence(rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """Which rows trained their surviving weights (weak tickets) and which kept them frozen (strong)."""
    def methods(trained: bool) -> str:
        # a row written before rows recorded it: the run's --train-weights
        names = dict.fromkeys(r["method"] for r in rows if r["method"] != "dense"
                              and bool(r.get("train_weights", settings.get("train_weights"))) == trained)
        return ", ".join(f"`{n}`" for n in names)

    trained, frozen = methods(True), methods(False)
    parts = ([f"the weights stay frozen for {frozen} (strong tickets)"] if frozen else []) + \
        ([f"the surviving weights are trained for {trained} (weak tickets: the one-shot methods' default, "
          "--no-train-weights keeps them frozen; cs trains its weights with its mask)"] if trained else [])
    sentence = "; ".join(parts) or "only the dense baseline ran"
    return sentence[0].upper() + sentence[1:] + "."


def sweep_markdown(r: dict[str, Any], short: bool = False) -> str:
    s = r["settings"]
    title = f"# Sweep: {s['model']} / {s['dataset']}, seed {s['seed']}, {s['epochs']} epochs"
    lines = [] if short else [title, "", "![accuracy against sparsity](curve.png)", ""]
    lines += ["| method | target sparsity | lam | formulation | sparsity | val accuracy | test accuracy "
              "| time (s) | warning |", "|---|---:|---:|---|---:|---:|---:|---:|---|"]
    rows = list(r["rows"]) + ([r["dense"]] if r["dense"] else [])
    for row in rows:
        target = "-" if row["target_sparsity"] is None else f"{row['target_sparsity']:.0%}"
        lam = "-" if row.get("lam") is None else f"{row['lam']:g}"
        flag = "**WARNING**" if row.get("warnings") else ""
        lines.append(f"| {row['method']} | {target} | {lam} | {row.get('formulation') or row['method']} "
                     f"| {row['sparsity']:.2%} | {row['val_accuracy']:.2%} | {row['test_accuracy']:.2%} "
                     f"| {row['wall_time_s']:.1f} | {flag} |")
    flagged = [(row, alarm) for row in rows for alarm in row.get("warnings", [])]
    if flagged:
        lines += [""] + [f"> **WARNING** {_cell_name(row)}: {alarm}" for row, alarm in flagged]
    if not short:
        lines += ["", _weights_sentence(rows, s) + " Learned-mask methods train their masks; one-shot "
                  "methods choose theirs once at apply. `dense` trains every weight. Methods without a "
                  "sparsity target run once; their sparsity is what they reached.", "",
                  "Formulations: a gate method with a target sparsity is torch_slt's hybrid (`+ exact target "
                  "(torch_slt)`: exact top-k selection, straight-through gradient, cubic ramp); with a `lam` and "
                  "no target it is the paper's (`(paper: lam=...)`: hard mask P(z != 0) > 0.5, no "
                  "straight-through), whose sparsity is what the penalty reached. The plot draws one curve per "
                  "formulation.", ""]
    return "\n".join(lines)


def _cell_name(row: dict[str, Any]) -> str:
    target = row.get("target_sparsity")
    return row["method"] + ("" if target is None else f" at {target:.0%}")
