"""Weak lottery tickets (issue 10): IMP with rewinding, its controls, instability, and cs against IMP.

Parts (each writes ``bench/results/lottery-<part>[-seed<N>].json``; ``--report`` merges them into
``lottery.md`` and the figures):

* ``fc``: lenet300 on Fashion-MNIST, weights trained with Adam 1.2e-3 (Frankle & Carbin's LeNet optimiser),
  batch 60, IMP at 0.2 per round (output layer 0.1, layer-wise scope, as the paper) for 19 rounds (1.4 %
  of the weights remain), with the random re-init and random mask controls at every round, per seed.
  Figure ``lottery-fc.png``: test accuracy at the early-stopping iteration against weights remaining.
* ``conv``: conv2 on Fashion-MNIST, IMP (global scope) rewound to iteration 0 and to an early iteration, and
  the instability (error barrier of two copies trained from the rewind point with different data order)
  against the rewind iteration, for the dense network and for the sparsest ticket. ``lottery-conv.png``.
* ``cs``: Continuous Sparsification (``cs``, weights trained) against IMP on lenet300: test accuracy at
  matched sparsity and the training iterations spent to find the ticket.
* ``cs_optim``: cs at one ``lam`` with the optimisers a user brings (the scores' Adam at 1e-3 / 1e-2 / 5e-2,
  constant or cosine, and the reference's SGD), to show the result does not hang on one tuned setting.

Reduced from the issue's protocol to fit a shared 2-core CPU (one torch thread per job); every cut is
printed in the report: a training subset and a few epochs instead of 50,000 iterations; conv2 at width 0.25
on a smaller subset, one seed; the line between two copies is evaluated on a test subset.

Run: ``python bench/lottery.py --part fc --seed 0`` (per seed), ``--part conv``, ``--part cs``,
``--part cs_optim`` (per seed), then
``python bench/lottery.py --report``. ``--quick`` is a seconds-long smoke run (tests use it).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, command_line, machine, now_utc, set_threads

from torch_slt.experiment.data import load_dataset
from torch_slt.experiment.train import TrainConfig
from torch_slt.experiment.zoo import ModelSpec, build_model
from torch_slt.lottery import IMPConfig, imp

# ------------------------------------------------------------------------------------------ protocols
FC = {"dataset": "fashion-mnist", "model": "lenet300", "width": 1.0, "train_images": 54000, "epochs": 4,
      "batch_size": 60, "rounds": 19, "prune_rate": 0.2, "scope": "layer", "eval_every": 200,
      "controls": ["reinit", "random_mask"]}
#: The first, shorter run (results in bench/results/lottery-short/): --protocol short.
FC_SHORT = {**FC, "train_images": 20000, "epochs": 3, "eval_every": 100}
CONV = {"dataset": "fashion-mnist", "model": "conv2", "width": 0.25, "train_images": 10000, "epochs": 2,
        "batch_size": 60, "rounds": 8, "prune_rate": 0.2, "scope": "global", "eval_every": 50,
        "rewinds": [0, 20, 50, 100], "line_images": 2000, "points": 30, "lr": 1e-3}
#: cs on the short fc protocol's data and budget (compared with bench/results/lottery-short/).
CS = {**FC_SHORT, "lams": [0.01, 0.1, 0.3, 1.0, 3.0], "mask_init": 0.0, "final_temp": 200.0, "search_rounds": 2,
      "mask_lr": 0.01, "optim_lam": 1.0, "mask_lrs": [1e-3, 1e-2, 5e-2]}
QUICK = {"dataset": "digits", "train_images": 400, "epochs": 1, "rounds": 2, "eval_every": 5,
         "rewinds": [0, 3], "line_images": 100, "points": 5, "lams": [1.0], "search_rounds": 1,
         "mask_lrs": [1e-2]}


def _data(p: dict[str, Any], seed: int):
    splits = load_dataset(p["dataset"], val_fraction=0.1, seed=seed)
    n = min(p["train_images"], len(splits.train))
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return splits, splits.train.subset(order)


def _model(p: dict[str, Any], splits, seed: int) -> torch.nn.Module:
    return build_model(ModelSpec(p["model"], splits.in_shape, splits.num_classes, width=p["width"], seed=seed))


def _training(p: dict[str, Any], seed: int) -> TrainConfig:
    # Cosine over a round's epochs (the library's default with Adam is the paper's constant rate): these
    # rounds are a few epochs, not the paper's 50,000 iterations, and the decay lets them converge.
    return TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], seed=seed, quiet=True,
                       lr=p.get("lr"), schedule="cosine")


def _rows(result) -> list[dict[str, Any]]:
    return [{**asdict(r), "remaining": r.remaining} for r in result.rows]


# ------------------------------------------------------------------------------------------------ fc
def part_fc(p: dict[str, Any], seed: int) -> dict[str, Any]:
    splits, train = _data(p, seed)
    model = _model(p, splits, seed)
    config = IMPConfig(rounds=p["rounds"], prune_rate=p["prune_rate"], scope=p["scope"],
                       eval_every=p["eval_every"], controls=tuple(p["controls"]), control_seed=seed)
    t0 = time.perf_counter()
    result = imp(model, train, val=splits.val, test=splits.test, config=config, training=_training(p, seed))
    return {"seed": seed, "rows": _rows(result), "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------- conv
def part_conv(p: dict[str, Any], seed: int) -> dict[str, Any]:
    """IMP rewound to each start iteration k; then, from the stored rewind point, the instability of the
    dense network and of the sparsest ticket (its mask on the weights of iteration k)."""
    import tempfile

    from torch_slt.core.masks import remove_gates
    from torch_slt.lottery import instability
    from torch_slt.lottery.rewind import RewindPoint, rewind

    splits, train = _data(p, seed)
    line_data = splits.test.subset(torch.arange(p["line_images"]))
    out: dict[str, Any] = {"seed": seed, "imp": {}, "instability": []}
    for k in p["rewinds"]:
        model = _model(p, splits, seed)
        config = IMPConfig(rounds=p["rounds"], prune_rate=p["prune_rate"], scope=p["scope"], rewind=k,
                           eval_every=p["eval_every"])
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = imp(model, train, val=splits.val, test=splits.test, config=config,
                         training=_training(p, seed), run_dir=tmp)
            point = RewindPoint.load(Path(tmp) / "rewind.pt")
        out["imp"][str(k)] = {"rows": _rows(result), "seconds": time.perf_counter() - t0}
        print(f"conv imp rewind {k}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        rewind(model, point)                      # the sparsest ticket at iteration k
        dense = remove_gates(copy.deepcopy(model))  # the dense network at iteration k
        rewind(dense, point)
        for label, net in (("dense", dense), ("sparse", model)):
            t0 = time.perf_counter()
            res = instability(net, train, line_data, training=_training(p, seed), start_iteration=k,
                              seeds=(seed + 101, seed + 202), points=p["points"])
            out["instability"].append({"network": label, "start": k, "barrier": res.barrier,
                                       "errors": res.errors, "remaining": result.tickets()[-1].remaining
                                       if label == "sparse" else 1.0, "seconds": time.perf_counter() - t0})
            print(f"conv instability {label} from {k}: barrier {res.barrier:.4f}", file=sys.stderr)
    return out


# ------------------------------------------------------------------------------------------------ cs
def _cs_run(p: dict[str, Any], splits, train, seed: int, lam: float, cfg: TrainConfig, mask_lr: float
            ) -> dict[str, Any]:
    """One Continuous Sparsification run as the paper does it: ``search_rounds`` rounds training weights and
    masks (beta 1 -> final_temp per round, then ``next_round``), the ticket's hard mask, its weights rewound
    to initialisation and retrained alone."""
    import torch_slt
    from torch_slt.core.masks import hard_masks
    from torch_slt.lottery import capture, rewind, train_weights
    from torch_slt.methods.cs import next_round, to_ticket

    t0 = time.perf_counter()
    steps = cfg.epochs * -(-len(train) // cfg.batch_size)
    model = _model(p, splits, seed)
    torch_slt.apply(model, "cs", lam=lam, mask_init=p["mask_init"], final_temp=p["final_temp"], total_steps=steps)
    point = capture(model, 0)
    search = 0
    for r in range(p["search_rounds"]):
        search += train_weights(model, train, cfg, mask_lr=mask_lr).iterations
        if r < p["search_rounds"] - 1:
            next_round(model)
    to_ticket(model)
    masks = hard_masks(model)
    rewind(model, point)
    run = train_weights(model, train, cfg, val=splits.val, test=splits.test, eval_every=p["eval_every"])
    kept = sum(int(m.sum()) for m in masks.values())
    row = {"lam": lam, "mask_lr": mask_lr, "optimizer": cfg.optimizer, "schedule": cfg.schedule,
           "remaining": kept / sum(m.numel() for m in masks.values()),
           "layers": {k: float(m.float().mean()) for k, m in masks.items()},
           "early_test_accuracy": run.early.test_accuracy, "final_test_accuracy": run.final.test_accuracy,
           "search_iterations": search, "total_iterations": search + run.iterations,
           "seconds": time.perf_counter() - t0}
    print(f"cs lam {lam} {cfg.optimizer} {cfg.schedule} mask lr {mask_lr}: {100 * row['remaining']:.2f}% "
          f"remain, test {100 * run.early.test_accuracy:.2f}", file=sys.stderr)
    return row


def part_cs(p: dict[str, Any], seed: int) -> dict[str, Any]:
    """One cs run per ``lam`` (Adam, cosine, the scores at ``mask_lr``)."""
    from torch_slt.lottery import weight_training_config

    splits, train = _data(p, seed)
    cfg = weight_training_config(_training(p, seed))
    return {"seed": seed, "runs": [_cs_run(p, splits, train, seed, lam, cfg, p["mask_lr"]) for lam in p["lams"]]}


def part_cs_optim(p: dict[str, Any], seed: int) -> dict[str, Any]:
    """cs at one ``lam`` with the optimisers a user brings: the scores' Adam lr 1e-3 / 1e-2 / 5e-2, constant
    or cosine, and the reference's SGD (lr 0.1, momentum 0.9, weight decay 1e-4 on the weights)."""
    from torch_slt.lottery import weight_training_config

    splits, train = _data(p, seed)
    rows = []
    for schedule in ("constant", "cosine"):
        cfg = weight_training_config(replace(_training(p, seed), schedule=schedule))
        rows += [_cs_run(p, splits, train, seed, p["optim_lam"], cfg, lr) for lr in p["mask_lrs"]]
    sgd = weight_training_config(replace(_training(p, seed), optimizer="sgd", lr=0.1, schedule="cosine"))
    rows.append(_cs_run(p, splits, train, seed, p["optim_lam"], sgd, 0.1))
    return {"seed": seed, "runs": rows}


# --------------------------------------------------------------------------------------------- report
def _load(out: Path, part: str) -> list[dict[str, Any]]:
    return [json.loads(f.read_text()) for f in sorted(out.glob(f"lottery-{part}-seed*.json"))]


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * sd:.2f}"


def _results(rows: list[dict[str, Any]]):
    from torch_slt.lottery.imp import IMPResult, RoundResult

    fields = set(RoundResult.__dataclass_fields__)
    return IMPResult(IMPConfig(), TrainConfig(), [RoundResult(**{k: v for k, v in r.items() if k in fields})
                                                  for r in rows])


def _by_round(runs: list[dict[str, Any]], kind: str, key: str) -> dict[int, list[float]]:
    table: dict[int, list[float]] = {}
    for run in runs:
        for row in run["rows"]:
            if row["kind"] == kind and row[key] is not None:
                table.setdefault(row["round"], []).append(row[key])
    return table


def _fc_section(runs: list[dict[str, Any]], out: Path) -> list[str]:
    from torch_slt.lottery import plot_imp

    p = runs[0]["protocol"]
    kinds = ["ticket", *p["controls"]]
    acc = {k: _by_round(runs, k, "early_test_accuracy") for k in kinds}
    its = {k: _by_round(runs, k, "early_iteration") for k in kinds}
    remaining = _by_round(runs, "ticket", "remaining")
    lines = [f"## lenet300 on Fashion-MNIST: IMP with random re-init and random mask ({len(runs)} seeds)", "",
             (f"Protocol: {p['train_images']} training images, {p['epochs']} epochs per round (batch "
             f"{p['batch_size']}, Adam 1.2e-3 with a cosine decay over the round, "
             f"{_iterations_per_training(p)} iterations), validation 10 % of the training set (early stopping every {p['eval_every']} "
             f"iterations), full test set; prune rate {p['prune_rate']} per round, output layer at half rate, "
             f"scope {p['scope']}, rewind to 0; seeds {[r['seed'] for r in runs]} (network, data order, "
             f"controls). Test accuracy (%) at the early-stopping iteration, mean ± sd over seeds."), "",
             "| round | remaining | winning ticket | " + " | ".join(kinds[1:]) + " | ticket − "
             + kinds[1] + " | early-stop it. (ticket / " + kinds[1] + ") |",
             "|---:|---:|---:|" + "---:|" * (len(kinds) - 1) + "---:|---:|"]
    for r in sorted(remaining):
        gap = [t - c for t, c in zip(acc["ticket"].get(r, []), acc[kinds[1]].get(r, []))]
        it_t = statistics.fmean(its["ticket"][r])
        it_c = statistics.fmean(its[kinds[1]][r]) if its[kinds[1]].get(r) else float("nan")
        lines.append(f"| {r} | {100 * statistics.fmean(remaining[r]):.1f}% | {_mean_sd(acc['ticket'][r])} | "
                     + " | ".join(_mean_sd(acc[k].get(r, [])) for k in kinds[1:])
                     + f" | {_mean_sd(gap)} | {it_t:.0f} / {it_c:.0f} |")
    dense = statistics.fmean(acc["ticket"][0])
    sd = statistics.stdev(acc["ticket"][0]) if len(acc["ticket"][0]) > 1 else 0.0
    matching = []   # the rounds from 0 on, without a gap, at which the ticket matches the dense network
    for r in sorted(remaining):
        if statistics.fmean(acc["ticket"][r]) < dense - sd:
            break
        matching.append(r)
    lowest = min(statistics.fmean(remaining[r]) for r in matching)
    below20 = [r for r in sorted(remaining) if statistics.fmean(remaining[r]) < 0.2]
    ahead = [r for r in below20 if statistics.fmean(acc["ticket"][r]) > statistics.fmean(acc[kinds[1]][r])]
    lines += ["", (f"Dense (round 0): {100 * dense:.2f}%. The winning ticket is within one sd of the dense "
              f"network (or above it) at every round from the first down to **{100 * lowest:.1f}%** of the "
              f"weights remaining (rounds 0-{matching[-1]} of {len(remaining) - 1}). Below 20% remaining it is ahead of "
              f"{kinds[1]} at **{len(ahead)} of {len(below20)}** rounds."), ""]
    figure = plot_imp([_results(run["rows"]) for run in runs], out / "lottery-fc.png",
                      title=f"IMP on lenet300 / Fashion-MNIST ({len(runs)} seeds, band: min-max)")
    lines += [f"![IMP on lenet300]({figure.name})", ""]
    return lines


def _conv_section(runs: list[dict[str, Any]], out: Path) -> list[str]:
    from torch_slt.experiment.plots import _COLORS, _figure, _save
    from torch_slt.lottery.plots import percent_ticks

    run = runs[0]
    p = run["protocol"]
    lines = [(f"## {p['model']} (width {p['width']}) on Fashion-MNIST: rewinding and instability (seed "
             f"{run['seed']})"), "",
             (f"Protocol: {p['train_images']} training images, {p['epochs']} epochs per round (batch "
             f"{p['batch_size']}, Adam {p.get('lr') or 1.2e-3}, cosine), {p['rounds']} rounds at {p['prune_rate']} "
             f"({p['scope']} scope); instability: two copies from the rewind point with data orders "
             f"{run['seed'] + 101} and {run['seed'] + 202}, {p['points']}-point line on {p['line_images']} "
             f"test images. Test accuracy (%) at the early-stopping iteration."), "",
             "| round | remaining | " + " | ".join(f"rewind {k}" for k in run["imp"]) + " |",
             "|---:|---:|" + "---:|" * len(run["imp"])]
    first = next(iter(run["imp"].values()))["rows"]
    tickets = {k: [r for r in v["rows"] if r["kind"] == "ticket"] for k, v in run["imp"].items()}
    for i, row in enumerate(r for r in first if r["kind"] == "ticket"):
        lines.append(f"| {row['round']} | {100 * row['remaining']:.1f}% | "
                     + " | ".join(f"{100 * t[i]['early_test_accuracy']:.2f}" for t in tickets.values()) + " |")
    lines += ["", "| network | start (rewind) iteration | error barrier (points) |", "|---|---:|---:|"]
    for ins in run["instability"]:
        lines.append(f"| {ins['network']} ({100 * ins['remaining']:.1f}% remain) | {ins['start']} | "
                     f"{100 * ins['barrier']:.2f} |")
    fig = _figure(9.0, 3.8)
    left, right = fig.subplots(1, 2)
    for i, (k, rows) in enumerate(tickets.items()):
        left.plot([100 * r["remaining"] for r in rows], [100 * r["early_test_accuracy"] for r in rows],
                  marker="o", markersize=3, color=_COLORS[i], label=f"rewind to iteration {k}")
    left.set_xscale("log")
    left.invert_xaxis()
    percent_ticks(left, [100 * r["remaining"] for r in next(iter(tickets.values()))])
    left.set_xlabel("percent of weights remaining")
    left.set_ylabel("test accuracy (%) at early stop")
    left.legend(fontsize=7)
    for i, label in enumerate(("dense", "sparse")):
        pts = [(x["start"], 100 * x["barrier"]) for x in run["instability"] if x["network"] == label]
        right.plot([a for a, _ in pts], [b for _, b in pts], marker="o", color=_COLORS[i], label=label)
    right.axhline(2.0, color="grey", linestyle=":", linewidth=1)
    right.set_xlabel("rewind iteration")
    right.set_ylabel("error barrier (points)")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{p['model']} / Fashion-MNIST: IMP by rewind iteration (left), instability (right)",
                 fontsize=10)
    figure = _save(fig, out / "lottery-conv.png")
    lines += ["", f"![conv rewinding and instability]({figure.name})", ""]
    return lines


def write_report(out: Path) -> Path:
    fc, conv, cs = _load(out, "fc"), _load(out, "conv"), _load(out, "cs")
    any_run = (fc or conv or cs)[0]
    lines = ["# Weak lottery tickets: IMP, controls, rewinding, instability (issue 10)", "",
             (f"Machine: {any_run['machine']}. Generated by `python bench/lottery.py --report` from the part "
             f"files (`lottery-<part>-seed<N>.json`), {now_utc()}."), ""]
    if fc:
        lines += _fc_section(fc, out)
    if conv:
        lines += _conv_section(conv, out)
    if cs:
        lines += _cs_section(cs, out)
    optim = _load(out, "cs_optim")
    if optim:
        lines += _cs_optim_section(optim, out)
    path = out / "lottery.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _cs_optim_section(runs: list[dict[str, Any]], out: Path) -> list[str]:
    p = runs[0]["protocol"]
    imp_runs = _short_imp_runs(out)
    lines = [f"### cs with the optimisers a user brings (lam {p['optim_lam']:g}, seeds {[r['seed'] for r in runs]})",
             "", ("Weights: Adam 1.2e-3 (or the reference's SGD lr 0.1, momentum 0.9, weight decay 1e-4); the "
             "scores' learning rate and the schedule vary. Remaining weights and ticket test accuracy (%) after "
             "rewinding and retraining, mean ± sd over seeds, and IMP (`lottery-short/`, same seeds) at the "
             "sparsity each seed's cs ticket reached."), "",
             "| optimizer | schedule | scores' lr | remaining | cs ticket | IMP at that sparsity | cs − IMP |",
             "|---|---|---:|---:|---:|---:|---:|"]
    keys = [(row["optimizer"], row["schedule"], row["mask_lr"]) for row in runs[0]["runs"]]
    for key in keys:
        cells = [(x, r["seed"]) for r in runs for x in r["runs"] if (x["optimizer"], x["schedule"], x["mask_lr"]) == key]
        acc = [x["early_test_accuracy"] for x, _ in cells]
        imp, gap = _against_imp(cells, imp_runs)
        lines.append(f"| {key[0]} | {key[1]} | {key[2]:g} | "
                     f"{_mean_sd([x['remaining'] for x, _ in cells]).replace(' ± ', '% ± ')}% | {_mean_sd(acc)} | "
                     f"{_mean_sd([i for i, _, _ in imp if not math.isnan(i)])} | {_mean_sd(gap)} |")
    return lines + [""]


def _short_imp_runs(out: Path) -> dict[int, dict[str, Any]]:
    """The short-protocol IMP runs (what cs is compared with), by seed."""
    return {r["seed"]: r for r in _load(out / "lottery-short", "fc")} if (out / "lottery-short").exists() else {}


def _iterations_per_training(p: dict[str, Any]) -> int:
    return p["epochs"] * -(-p["train_images"] // p["batch_size"])


def _against_imp(cells: list[tuple[dict[str, Any], int]], imp_runs: dict[int, dict[str, Any]]
                 ) -> tuple[list[tuple[float, int, float]], list[float]]:
    """For each (cs row, seed): IMP of the same seed at the row's sparsity (:func:`_imp_at`; NaN without an
    IMP run), and the accuracy gaps cs − IMP where IMP reaches that sparsity."""
    imp = [_imp_at(imp_runs[seed]["rows"], x["remaining"]) if seed in imp_runs else (float("nan"), 0, 0.0)
           for x, seed in cells]
    gap = [x["early_test_accuracy"] - i for (x, _), (i, _, _) in zip(cells, imp) if not math.isnan(i)]
    return imp, gap


def _imp_at(rows: list[dict[str, Any]], remaining: float) -> tuple[float, int, float]:
    """IMP's ticket accuracy at ``remaining`` (log-linear between the two rounds around it), the trainings
    IMP runs to get there (round 0 included) and their wall time in seconds (the ticket's rounds only, not
    the controls')."""
    tickets = sorted((r for r in rows if r["kind"] == "ticket"), key=lambda r: -r["remaining"])
    for a, b in itertools.pairwise(tickets):
        if b["remaining"] <= remaining <= a["remaining"]:
            t = (math.log(a["remaining"]) - math.log(remaining)) / (math.log(a["remaining"]) - math.log(b["remaining"]))
            acc = a["early_test_accuracy"] + t * (b["early_test_accuracy"] - a["early_test_accuracy"])
            return acc, b["round"] + 1, sum(r["wall_time"] for r in tickets if r["round"] <= b["round"])
    return float("nan"), len(tickets), sum(r["wall_time"] for r in tickets)


def _cs_section(runs: list[dict[str, Any]], out: Path) -> list[str]:
    from torch_slt.experiment.plots import _COLORS, _figure, _save
    from torch_slt.lottery.plots import percent_ticks

    p = runs[0]["protocol"]
    imp_runs = _short_imp_runs(out)
    lines = ["## Continuous sparsification against IMP", "",
             (f"`cs` on the short IMP protocol's data and budget ({p['train_images']} images, {p['epochs']} epochs = "
             f"{_iterations_per_training(p)} iterations per training): "
             f"{p['search_rounds']} search rounds (Adam 1.2e-3 on the weights, {p['mask_lr']} on the scores, both "
             f"cosine over the round; beta "
             f"1 -> {p['final_temp']:g} per round, `mask_init` {p['mask_init']}), then the ticket rewound to "
             f"initialisation and retrained. Compared with IMP (`lottery-short/`, same seeds and data) at the same "
             f"fraction remaining: IMP's ticket accuracy interpolated log-linearly between its two rounds around "
             f"it, and the trainings IMP needs to get there (round 0 included) with their wall time (one torch "
             f"thread; both with their evaluations; cs's covers its search and its retraining, IMP's its ticket rounds). Test accuracy (%) at the "
             f"early-stopping iteration, mean ± sd over seeds {[r['seed'] for r in runs]}."), "",
             ("| lam | remaining | cs ticket | IMP at that sparsity | cs − IMP | trainings: cs / IMP "
             "| wall seconds: cs / IMP |"),
             "|---:|---:|---:|---:|---:|---:|---:|"]
    points = []
    for lam in p["lams"]:
        cells = [(x, r["seed"]) for r in runs for x in r["runs"] if x["lam"] == lam]
        rem = [x["remaining"] for x, _ in cells]
        acc = [x["early_test_accuracy"] for x, _ in cells]
        imp, gap = _against_imp(cells, imp_runs)
        cs_cost = statistics.fmean(x["total_iterations"] for x, _ in cells) / _iterations_per_training(p)
        imp_cost = statistics.fmean(n for _, n, _ in imp)
        imp_acc = [i for i, _, _ in imp if not math.isnan(i)]
        # Sparser than IMP's last round: there is nothing to compare with, and IMP would need more rounds.
        beyond = "" if imp_acc else "> "
        imp_cell = _mean_sd(imp_acc) if imp_acc else "beyond IMP's last round"
        seconds = (statistics.fmean(x["seconds"] for x, _ in cells), statistics.fmean(t for _, _, t in imp))
        lines.append(f"| {lam:g} | {100 * statistics.fmean(rem):.2f}% | {_mean_sd(acc)} | {imp_cell} | "
                     f"{_mean_sd(gap)} | {cs_cost:.0f} / {beyond}{imp_cost:.1f} | "
                     f"{seconds[0]:.0f} / {beyond}{seconds[1]:.0f} |")
        points.append((statistics.fmean(rem), acc))
    fig = _figure(6.4, 4.2)
    ax = fig.subplots()
    if imp_runs:
        from torch_slt.lottery.plots import curves

        line = curves([_results(r["rows"]) for r in imp_runs.values()])["ticket"]
        ax.plot([q[0] for q in line], [q[1] for q in line], color=_COLORS[0], marker="o", markersize=3,
                label=f"IMP, {len(imp_runs)} seeds (one training per point)")
    ax.errorbar([100 * r for r, _ in points], [100 * statistics.fmean(a) for _, a in points],
                yerr=[100 * (statistics.stdev(a) if len(a) > 1 else 0) for _, a in points], color=_COLORS[1],
                marker="s", linestyle="none", label=f"cs ({p['search_rounds'] + 1} trainings per point)")
    ax.set_xscale("log")
    ax.invert_xaxis()
    if imp_runs:
        percent_ticks(ax, [q[0] for q in line])
    ax.set_xlabel("percent of weights remaining")
    ax.set_ylabel("test accuracy (%) at early stop")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("lenet300 / Fashion-MNIST: continuous sparsification vs IMP", fontsize=10)
    figure = _save(fig, out / "lottery-cs.png")
    return lines + ["", f"![cs against IMP]({figure.name})", ""]


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("fc", "conv", "cs", "cs_optim"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protocol", choices=("full", "short"), default="full",
                    help="fc only: 'short' is the 20k-image, 3-epoch run of bench/results/lottery-short/")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny settings on digits (a smoke test)")
    ap.add_argument("--report", action="store_true", help="merge the part files into lottery.md and figures")
    ap.add_argument("--out", default=str(RESULTS_DIR), help="results folder")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part:
        protocol = {"fc": FC_SHORT if args.protocol == "short" else FC, "conv": CONV, "cs": CS,
                    "cs_optim": CS}[args.part]
        protocol = {**protocol, **QUICK} if args.quick else protocol
        runner = {"fc": part_fc, "conv": part_conv, "cs": part_cs, "cs_optim": part_cs_optim}[args.part]
        body = {"protocol": protocol, "machine": machine(), "date": now_utc(), "command": command_line(),
                **runner(protocol, args.seed)}
        name = f"lottery-{args.part}-seed{args.seed}.json"
        (out / name).write_text(json.dumps(body, indent=1))
        print(f"wrote {out / name}")
    if args.report:
        print(write_report(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
