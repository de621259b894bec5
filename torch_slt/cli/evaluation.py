"""Evaluating run folders and tickets for ``torch-slt evaluate`` and ``torch-slt sweep --metrics``:
the evaluation flags (-> :class:`~torch_slt.evaluation.EvalSettings`), finding the tickets of a run
folder, and writing ``evaluation.json`` / ``evaluation.md`` and the figures."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch_slt.cli import output
from torch_slt.cli.settings import CLIError


@dataclass
class Target:
    """One model to evaluate: a label, its ticket file, and what the run folder says about it."""

    label: str
    path: Path
    method: str | None = None
    sparsity: float | None = None
    target: float | None = None


@dataclass
class RunTickets:
    """The tickets of a run folder (or one ticket file), its dense reference and its data settings."""

    tickets: list[Target]
    dense: Target | None
    data: dict[str, Any]  # dataset, data_dir, val_fraction, seed
    out: Path


def add_eval_flags(p: argparse.ArgumentParser, *, metrics_help: str) -> None:
    from torch_slt.evaluation import CORRUPTIONS, OOD_SETS

    g = p.add_argument_group("evaluation")
    g.add_argument("--metrics", help=metrics_help)
    g.add_argument("--ood-sets", help=f"built-in OoD sets, comma-separated (default {','.join(OOD_SETS)})")
    g.add_argument("--corruptions", help=f"comma-separated (default {','.join(CORRUPTIONS)})")
    g.add_argument("--severities", help="corruption severities 1..5, comma-separated (default 1,2,3,4,5)")
    g.add_argument("--epsilons",
                   help="FGSM/PGD radii in pixel units, comma-separated (default 0.01,0.03,0.1)")
    g.add_argument("--pgd-steps", type=int, help="PGD steps (default 0: FGSM only)")
    g.add_argument("--adversarial-samples", type=int, help="test images attacked (default 1000)")
    g.add_argument("--ood-samples", type=int, help="images per built-in OoD set (default 2000)")


def eval_settings(args: argparse.Namespace):
    """The :class:`EvalSettings` of the flags (unset flags keep the defaults)."""
    from torch_slt.core.errors import SettingError
    from torch_slt.evaluation import EvalSettings

    given: dict[str, Any] = {}
    for flag, key, kind in (("--ood-sets", "ood_sets", str), ("--corruptions", "corruptions", str),
                            ("--severities", "severities", int), ("--epsilons", "epsilons", float)):
        text = getattr(args, key, None)
        if text is not None:
            try:
                given[key] = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
            except ValueError:
                raise CLIError(f"{flag} {text!r} must be a comma-separated list of {kind.__name__} "
                               f"values") from None
    for key in ("pgd_steps", "adversarial_samples", "ood_samples"):
        if getattr(args, key, None) is not None:
            given[key] = getattr(args, key)
    try:
        return EvalSettings(**given)
    except SettingError as err:
        raise CLIError(f"--{err.setting.replace('_', '-')} {err.value!r} {err.reason}") from None


def metric_names(text: str | None) -> list[str]:
    from torch_slt.evaluation import list_metrics
    from torch_slt.evaluation.registry import UnknownMetricError, get_metric

    if text is None or text.strip() in ("", "all"):
        return list_metrics()
    names = [m.strip() for m in text.split(",") if m.strip()]
    for name in names:
        try:
            get_metric(name)
        except UnknownMetricError as err:
            raise CLIError(f"--metrics: {err}") from None
    return names


def find_tickets(path: Path, dataset: str | None, data_dir: str | None) -> RunTickets:
    """The tickets of a ``find`` or ``sweep`` run folder, or of one ticket file (then ``dataset`` is
    needed: a ticket does not record its data)."""
    if not path.exists():
        raise CLIError(f"{path} does not exist; pass a run folder or a .slt.safetensors ticket.")
    if path.is_dir():
        name = "sweep.json" if (path / "sweep.json").exists() else "report.json"
        if not (path / name).exists():
            raise CLIError(f"{path} holds no report.json or sweep.json; is it a finished torch-slt run?")
        try:
            if name == "sweep.json":
                return _sweep_tickets(path, dataset, data_dir)
            return _find_tickets(path, dataset, data_dir)
        except (KeyError, TypeError, AttributeError) as err:
            raise CLIError(f"{path / name} lacks what a finished run records ({type(err).__name__}: {err}); "
                           f"is it a torch-slt find or sweep report?") from None
    if not path.name.endswith(".slt.safetensors"):
        raise CLIError(f"{path}: pass a run folder or a compact ticket (*.slt.safetensors).")
    if dataset is None:
        raise CLIError(f"{path} is a ticket file, which does not record its dataset: pass --dataset "
                       f"(e.g. --dataset fashion-mnist).")
    label = path.name[: -len(".slt.safetensors")]
    return RunTickets([Target(label, path)], None, _data({}, dataset, data_dir), path.parent)


def _find_tickets(path: Path, dataset: str | None, data_dir: str | None) -> RunTickets:
    report = _read(path / "report.json")
    ticket = path / "ticket.slt.safetensors"
    if not ticket.exists():
        raise CLIError(f"{path} holds no ticket.slt.safetensors; was it written by torch-slt find?")
    target = Target(report["settings"]["method"], ticket, report["settings"]["method"],
                    report["sparsity"]["sparsity"], report["settings"].get("sparsity"))
    return RunTickets([target], None, _data(report["settings"], dataset, data_dir), path)


def _sweep_tickets(path: Path, dataset: str | None, data_dir: str | None) -> RunTickets:
    sweep = _read(path / "sweep.json")
    tickets = []
    for row in sweep["rows"]:
        if row.get("ticket"):
            target, lam = row.get("target_sparsity"), row.get("lam")
            label = row["method"] + (f"-{target}" if target is not None else "") + (
                f"-lam{lam:g}" if lam is not None else "")   # the paper's formulation (sweep --lams)
            tickets.append(Target(label, path / row["ticket"], row["method"], row["sparsity"], target))
    dense = None
    if sweep.get("dense") and sweep["dense"].get("ticket"):
        dense = Target("dense", path / sweep["dense"]["ticket"], None, 0.0, None)
    return RunTickets(tickets, dense, _data(sweep["settings"], dataset, data_dir), path)


def _data(settings: dict[str, Any], dataset: str | None, data_dir: str | None) -> dict[str, Any]:
    return {"dataset": dataset or settings.get("dataset", "digits"),
            "data_dir": data_dir if data_dir is not None else settings.get("data_dir"),
            "val_fraction": settings.get("val_fraction", 0.1), "seed": settings.get("seed", 0)}


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CLIError(f"{path} is not a readable JSON report ({err}).") from None


def _load(target: Target):
    from torch_slt.experiment.ticket import load_ticket

    try:
        return load_ticket(target.path)[0]
    except (OSError, ValueError) as err:
        raise CLIError(f"{target.path}: {err}") from None


def run_evaluation(run: RunTickets, metrics: list[str], settings: Any, *, reference: Target | None = None,
                   quiet: bool = False) -> dict[str, Any]:
    """Evaluate the dense reference (if any) and every ticket; write evaluation.json/.md and figures
    into ``run.out``; return what was written to evaluation.json."""
    from torch_slt.evaluation import evaluate
    from torch_slt.evaluation.corruptions import mean_corruption_error
    from torch_slt.experiment.data import load_dataset

    try:
        splits = load_dataset(run.data["dataset"], run.data["data_dir"],
                              val_fraction=run.data["val_fraction"],
                              seed=run.data["seed"])
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise CLIError(str(err)) from None
    reference = reference or run.dense
    bar = _bar(len(run.tickets) + (reference is not None), quiet)
    dense = None
    if reference is not None:
        dense = {"label": reference.label, "ticket": str(reference.path), "method": "dense", "sparsity": 0.0,
                 **evaluate(_load(reference), splits, metrics, settings=settings)}
        if dense.get("corruption_errors"):  # the baseline of the mCE: 1 by definition
            dense.update(mean_corruption_error(dense["corruption_errors"], dense["corruption_errors"]))
        bar.update(1)
    rows = []
    for target in run.tickets:
        result = evaluate(_load(target), splits, metrics, settings=settings, reference=dense)
        rows.append({"label": target.label, "ticket": str(target.path), "method": target.method,
                     "sparsity": target.sparsity, "target": target.target, **result})
        bar.update(1)
    bar.close()
    data = {"command": "evaluate", "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "dataset": run.data["dataset"], "metrics": metrics,
            "settings": {k: v for k, v in vars(settings).items() if k != "ood_data"},
            "dense": dense, "rows": rows}
    write_outputs(data, run.out)
    return data


def _bar(total: int, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="model", desc="evaluate", disable=quiet, file=sys.stderr)


def write_outputs(data: dict[str, Any], out: Path) -> list[str]:
    """evaluation.json, evaluation.md, and the figures (reliability diagram(s), sweep panels)."""
    written = ["evaluation.json", "evaluation.md"]
    try:
        from torch_slt.evaluation.plots import plot_reliability, plot_sweep_metrics

        single = data["rows"] if len(data["rows"]) == 1 else []
        for row in ([data["dense"]] if data["dense"] else []) + single:
            if "reliability" in row:
                name = "reliability.png" if row is not data["dense"] else "reliability-dense.png"
                plot_reliability(row, out / name, title=f"{row['label']}: ECE {row['ece']:.2%}")
                written.append(name)
        swept = [r for r in data["rows"] if r.get("method") and r.get("sparsity") is not None]
        if len(swept) > 1:
            plot_sweep_metrics(swept, out / "metrics.png", dense=data["dense"])
            written.append("metrics.png")
    except ImportError as err:
        print(f"torch-slt evaluate: no figures ({err})", file=sys.stderr)
    (out / "evaluation.md").write_text(evaluation_markdown(data))
    output.write_json(out / "evaluation.json", data)
    return written


def evaluation_markdown(data: dict[str, Any], *, details: bool = True) -> str:
    from torch_slt.evaluation import directions, lth_pass_table

    better = directions(data["metrics"])
    rows = ([data["dense"]] if data["dense"] else []) + data["rows"]
    keys = [k for k in better if any(isinstance(r.get(k), float) for r in rows)]
    arrow = {"higher": "↑", "lower": "↓"}
    lines = [f"# Evaluation on {data['dataset']} (test split)", "",
             "| model | sparsity | " + " | ".join(f"{k} {arrow[better[k]]}" for k in keys) + " |",
             "|---|---:|" + "---:|" * len(keys)]
    for r in rows:
        sp = f"{r['sparsity']:.1%}" if isinstance(r.get("sparsity"), float) else "-"
        cells = [f"{r[k]:.4f}" if isinstance(r.get(k), float) else "-" for k in keys]
        lines.append(f"| {r['label']} | {sp} | " + " | ".join(cells) + " |")
    if data["dense"]:
        lines += ["", "## LTH-PASS (at least as good as dense on every metric; ✗ = worse)", "",
                  lth_pass_table(data["rows"], data["dense"], keys=keys)]
    else:
        lines += ["", "No dense reference: mCE and LTH-PASS need one (a sweep's dense ticket, or "
                  "--reference)."]
    for r in rows if details else ():
        lines += ["", f"## {r['label']}", ""] + _details(r)
    return "\n".join(lines) + "\n"


def _details(r: dict[str, Any]) -> list[str]:
    out = []
    if r.get("ood"):
        out.append("OoD (MSP): " + ", ".join(f"{k} AUROC {v['auroc']:.3f} / FPR95 {v['fpr95']:.3f}"
                                             for k, v in r["ood"].items()))
    if r.get("corruption_errors"):
        ce = r.get("ce", {})
        out.append("Corruption error per severity" + (" (CE vs dense)" if ce else "") + ": " + "; ".join(
            f"{k} {' '.join(f'{e:.3f}' for e in v)}" + (f" ({ce[k]:.2f})" if k in ce else "")
            for k, v in r["corruption_errors"].items()))
    if r.get("fgsm"):
        out.append("FGSM accuracy: " + ", ".join(f"eps {k}: {v:.4f}" for k, v in r["fgsm"].items()))
    if r.get("pgd"):
        out.append(f"PGD-{r['pgd_steps']} accuracy: "
                   + ", ".join(f"eps {k}: {v:.4f}" for k, v in r["pgd"].items()))
    if r.get("per_class_accuracy"):
        out.append("Per-class accuracy: " + " ".join(f"{a:.3f}" for a in r["per_class_accuracy"]))
    return [f"- {line}" for line in out]
