"""Sparsity targets in the loop a user writes (issue 9): ``apply(model, "stg", sparsity=s)``, then Adam.

Every cell trains the gates of one frozen random network with a plain PyTorch loop (Adam at 1e-3, 1e-2
or 5e-2 on ``torch_slt.mask_parameters``, constant or cosine schedule over all steps,
``loss + torch_slt.penalty(model)``), as a user would, and reports the test accuracy and the sparsity
of the finalized ticket. Compared with, at the same sparsities and on the same frozen network:

* the best fixed-``lam`` stg ticket near each sparsity (a lam grid, Adam 1e-2 and 5e-2, same
  schedules): the paper's formulation, with the lam a user would have to search for;
* edge-popup with its reference optimiser (SGD 0.1, momentum 0.9, weight decay 5e-4, cosine).

Networks (reduced from the issue's protocol to fit a shared 2-core CPU; see bench/README.md): the
digits MLP (lenet300, 20 epochs, batch 64, 3 seeds), lenet300 on a 10,000-image subset of
Fashion-MNIST (10 epochs, batch 128, 2 seeds) and conv2 at width 0.5 on a 5,000-image subset (4
epochs, batch 128, 1 seed). Seeds draw the network, the data order and the gate noise.

Run ``python bench/targets.py`` (everything, about 40 CPU-minutes with one thread per job) or
``--network digits`` for one network; ``--report-only`` redraws tables and figures from the JSON.
Outputs: ``bench/results/targets.{json,md}``, ``targets-accuracy.png`` (accuracy against sparsity,
one panel per network), ``targets-layers.png`` (per-layer sparsity of the conv2 tickets).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, load_cells, run_cells, set_threads, user_loop, write_report  # noqa: E402

import torch_slt  # noqa: E402
from torch_slt.experiment.data import load_dataset  # noqa: E402
from torch_slt.experiment.zoo import ModelSpec, build_model  # noqa: E402

SPARSITIES = (0.5, 0.7, 0.9, 0.95)
OPTIMISERS = [(lr, schedule) for lr in (1e-3, 1e-2, 5e-2) for schedule in ("constant", "cosine")]
LAMS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
NEAR = 0.03   # a fixed-lam ticket counts as "near" s when its sparsity is within 3 points


@dataclass(frozen=True)
class Network:
    name: str
    dataset: str
    model: str
    width: float
    train_size: int | None
    epochs: int
    batch: int
    seeds: tuple[int, ...]
    target_methods: tuple[str, ...]
    target_optimisers: tuple[tuple[float, str], ...]
    lam_optimisers: tuple[tuple[float, str], ...]


_DIGITS = Network("digits MLP (lenet300)", "digits", "lenet300", 1.0, None, 20, 64, (0, 1, 2),
                      ("stg", "hardconcrete"), tuple(OPTIMISERS),
                 ((1e-2, "constant"), (1e-2, "cosine"), (5e-2, "constant"), (5e-2, "cosine")))
NETWORKS = {
    "digits": _DIGITS,
    "fmnist": Network("lenet300 / Fashion-MNIST 10k", "fashion-mnist", "lenet300", 1.0, 10_000, 10, 128,
                      (0, 1), ("stg", "hardconcrete"), tuple(OPTIMISERS),
                      ((1e-2, "cosine"), (5e-2, "cosine"))),
    "conv": Network("conv2 (width 0.5) / Fashion-MNIST 5k", "fashion-mnist", "conv2", 0.5, 5_000, 4, 128,
                    (0,), ("stg",), ((1e-2, "cosine"), (5e-2, "cosine")), ((5e-2, "cosine"),)),
}


@dataclass
class Cell:
    network: str
    kind: str            # "target", "lam" or "edgepopup"
    method: str
    seed: int
    lr: float
    schedule: str
    target: float | None = None
    lam: float | None = None
    accuracy: float | None = None
    sparsity: float | None = None
    layers: list | None = None
    seconds: float | None = None

    def key(self) -> tuple:
        return (self.network, self.kind, self.method, self.seed, self.lr, self.schedule, self.target, self.lam)


def _data(net: Network, seed: int):
    splits = load_dataset(net.dataset, val_fraction=0.1, seed=seed)
    x, y = splits.train.tensors()
    if net.train_size:
        x, y = x[:net.train_size], y[:net.train_size]
    xt, yt = splits.test.tensors()
    return splits, (x, y), (xt, yt)


def run_cell(net: Network, cell: Cell) -> Cell:
    """Train one ticket the way a user's loop would and fill in its accuracy and sparsity."""
    splits, (x, y), (xt, yt) = _data(net, cell.seed)
    model = build_model(ModelSpec(net.model, tuple(splits.in_shape), splits.num_classes, width=net.width,
                                  seed=cell.seed))
    steps = math.ceil(len(y) / net.batch) * net.epochs
    if cell.kind == "target":
        torch_slt.apply(model, cell.method, sparsity=cell.target, total_steps=steps)
    elif cell.kind == "lam":
        torch_slt.apply(model, cell.method, lam=cell.lam)
    else:
        torch_slt.apply(model, cell.method, sparsity=cell.target)
    params = list(torch_slt.mask_parameters(model))
    if cell.kind == "edgepopup":
        opt = torch.optim.SGD(params, lr=cell.lr, momentum=0.9, weight_decay=5e-4)
    else:
        opt = torch.optim.Adam(params, lr=cell.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cell.schedule == "cosine" else None
    generator = torch.Generator().manual_seed(cell.seed)
    torch.manual_seed(cell.seed)
    t0 = time.process_time()
    user_loop(model, x, y, opt, sched, net.epochs, net.batch, generator)
    cell.seconds = time.process_time() - t0
    model.eval()
    report = torch_slt.report(model)
    cell.sparsity, cell.layers = report.sparsity, [round(r.sparsity, 4) for r in report.layers]
    torch_slt.finalize(model)
    with torch.no_grad():
        correct = sum(int((model(a).argmax(-1) == b).sum()) for a, b in zip(xt.split(1000), yt.split(1000)))
    cell.accuracy = correct / len(yt)
    return cell


def plan(net_key: str) -> list[Cell]:
    net = NETWORKS[net_key]
    cells = []
    for seed in net.seeds:
        for s in SPARSITIES:
            cells += [Cell(net_key, "target", m, seed, lr, sch, target=s)
                      for m in net.target_methods for lr, sch in net.target_optimisers]
            cells.append(Cell(net_key, "edgepopup", "edgepopup", seed, 0.1, "cosine", target=s))
        cells += [Cell(net_key, "lam", "stg", seed, lr, sch, lam=lam) for lr, sch in net.lam_optimisers
                  for lam in LAMS]
    return cells


# ------------------------------------------------------------------------------------------ report
def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}"


def best_fixed_lam(cells: list[Cell], net: str, s: float, lr: float | None = None,
                   schedule: str | None = None) -> tuple[float, float] | None:
    """(mean accuracy, mean sparsity) of the best lam (over seeds) whose tickets are within NEAR of s."""
    by_lam: dict[tuple, list[Cell]] = {}
    for c in cells:
        if c.network == net and c.kind == "lam" and (lr is None or c.lr == lr) and \
                (schedule is None or c.schedule == schedule):
            by_lam.setdefault((c.lam, c.lr, c.schedule), []).append(c)
    near = [(statistics.mean(c.accuracy for c in group), statistics.mean(c.sparsity for c in group))
            for group in by_lam.values() if abs(statistics.mean(c.sparsity for c in group) - s) <= NEAR]
    return max(near) if near else None


#: Which rows are the paper's method and which torch_slt's hybrid (issue 19).
FORMULATIONS = "- formulations: rows `<method> + exact target (torch_slt)` are torch_slt's hybrid (`sparsity=`: Gaussian-gate scores, an exact global top-k, a straight-through gradient and a cubic ramp); rows `stg (paper: best lam)` are the paper's method (`lam=` alone: hard mask `mu > 0`, no straight-through estimator; the best ticket of a lam grid whose reached sparsity lands within 3 points of s). The hybrid exists because the paper's formulation reaches a sparsity only through lam, which has to be searched per network and learning rate; the hybrid hits the sparsity asked for exactly, so tickets compare with edge-popup at equal sparsity. Comparisons with edge-popup here are the hybrid's unless a row says paper."


def markdown(cells: list[Cell], meta: dict[str, Any]) -> str:
    lines = ["# Sparsity targets in a user's loop (issue 9)", "",
             f"- command: `{meta['command']}`", f"- date: {meta['date']}", f"- machine: {meta['machine']}",
             "- every number: test accuracy of the finalized ticket, mean ± standard deviation over seeds, "
             "in %; `sparsity` columns give the reached sparsity of the ticket", FORMULATIONS, ""]
    for key, net in NETWORKS.items():
        mine = [c for c in cells if c.network == key]
        if not mine:
            continue
        lines += [f"## {net.name}", "",
                  f"{net.epochs} epochs, batch {net.batch}, seeds {list(net.seeds)}; frozen random weights "
                  f"(kaiming-normal), gates trained.", ""]
        header = "| method | optimiser | " + " | ".join(f"s = {s}" for s in SPARSITIES) + " |"
        lines += [header, "|---|---|" + "---:|" * len(SPARSITIES)]
        rows = sorted({(c.method, c.lr, c.schedule) for c in mine if c.kind == "target"})
        for method, lr, sch in rows:
            vals = [_mean_sd([c.accuracy for c in mine if c.kind == "target" and c.method == method
                              and c.lr == lr and c.schedule == sch and c.target == s]) for s in SPARSITIES]
            lines.append(f"| {method} + exact target (torch_slt) | Adam {lr:g} {sch} | " + " | ".join(vals) + " |")
        for lr, sch in sorted({(c.lr, c.schedule) for c in mine if c.kind == "lam"}):
            vals = []
            for s in SPARSITIES:
                best = best_fixed_lam(mine, key, s, lr, sch)
                vals.append("-" if best is None else f"{100 * best[0]:.1f} (at {100 * best[1]:.1f}%)")
            lines.append(f"| stg (paper: best lam) | Adam {lr:g} {sch} | " + " | ".join(vals) + " |")
        vals = [_mean_sd([c.accuracy for c in mine if c.kind == "edgepopup" and c.target == s])
                for s in SPARSITIES]
        lines.append("| edgepopup | SGD 0.1 cosine | " + " | ".join(vals) + " |")
        lines += ["", *check_targets(mine, key), ""]
    return "\n".join(lines)


def check_targets(cells: list[Cell], key: str) -> list[str]:
    """The issue's four targets, each with the numbers that decide it."""
    out = ["Targets:", ""]
    targets = [c for c in cells if c.kind == "target"]
    worst = max(abs(c.sparsity - c.target) for c in targets)
    out.append(f"1. sparsity within 0.5 point of s in every cell: {'met' if worst <= 0.005 else 'MISSED'} "
               f"(largest gap {100 * worst:.2f} points over {len(targets)} cells)")
    gaps = []
    for c_lr in (1e-2, 5e-2):
        for sch in ("constant", "cosine"):
            for s in SPARSITIES:
                mine = [c.accuracy for c in targets if c.method == "stg" and c.lr == c_lr and c.schedule == sch
                        and c.target == s]
                ref = best_fixed_lam(cells, key, s, c_lr, sch)   # the same optimiser's fixed-lam tickets
                if mine and ref is not None:
                    gaps.append((statistics.mean(mine) - ref[0], s, c_lr, sch))
    if gaps:
        worst_gap = min(gaps)
        met = worst_gap[0] >= -0.01
        out.append(f"2. stg `sparsity=` within 1 point of the best fixed-lam ticket near s with the same optimiser "
                   f"(Adam 1e-2 / 5e-2; {len(gaps)} comparisons where a fixed-lam ticket landed within 3 points "
                   f"of s): "
                   f"{'met' if met else 'MISSED'} (worst {100 * worst_gap[0]:+.1f} points at s={worst_gap[1]}, "
                   f"Adam {worst_gap[2]:g} {worst_gap[3]})")
    rows = []
    for s in [s for s in (0.7, 0.9, 0.95) if any(c.target == s for c in targets)]:
        ep = [c.accuracy for c in cells if c.kind == "edgepopup" and c.target == s]
        best = max((statistics.mean([c.accuracy for c in targets if c.method == "stg" and c.lr == lr
                                     and c.schedule == sch and c.target == s]), lr, sch)
                   for lr, sch in {(c.lr, c.schedule) for c in targets if c.method == "stg" and c.target == s})
        at_1e2 = [c.accuracy for c in targets if c.method == "stg" and c.lr == 1e-2 and c.schedule == "cosine"
                  and c.target == s]
        rows.append((s, statistics.mean(ep) if ep else None, best, statistics.mean(at_1e2) if at_1e2 else None))
    met = all(r[1] is None or (r[3] is not None and r[3] >= r[1]) for r in rows)
    detail = "; ".join(f"s={s}: edgepopup {100 * e:.1f}, stg Adam 1e-2 cosine "
                       f"{'-' if a is None else f'{100 * a:.1f}'}, best stg {100 * b[0]:.1f} (Adam {b[1]:g} {b[2]})"
                       for s, e, b, a in rows if e is not None)
    out.append(f"3. stg with a target >= edge-popup at 0.7 / 0.9 / 0.95 (Adam 1e-2 cosine, mean over seeds): "
               f"{'met' if met else 'MISSED'} ({detail})")
    hc = [c for c in targets if c.method == "hardconcrete"]
    if hc:
        worst_hc = max(abs(c.sparsity - c.target) for c in hc)
        diffs = []
        for s in SPARSITIES:
            for lr, sch in {(c.lr, c.schedule) for c in hc}:
                a = [c.accuracy for c in hc if c.lr == lr and c.schedule == sch and c.target == s]
                b = [c.accuracy for c in targets if c.method == "stg" and c.lr == lr and c.schedule == sch
                     and c.target == s]
                if a and b:
                    diffs.append((statistics.mean(a) - statistics.mean(b), s, lr, sch))
        w = min(diffs)
        ok = worst_hc <= 0.01 and w[0] >= -0.03
        out.append(f"4. hardconcrete within 1 point of s and within 3 points of stg: {'met' if ok else 'MISSED'} "
                   f"(largest sparsity gap {100 * worst_hc:.2f} points; worst accuracy difference "
                   f"{100 * w[0]:+.1f} points at s={w[1]}, Adam {w[2]:g} {w[3]})")
    return out


def figures(cells: list[Cell], stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = [k for k in NETWORKS if any(c.network == k for c in cells)]
    fig, axes = plt.subplots(1, len(nets), figsize=(5 * len(nets), 4), squeeze=False)
    for ax, key in zip(axes[0], nets):
        mine = [c for c in cells if c.network == key]
        series = {}
        for c in mine:
            if c.kind == "target" and c.schedule == "cosine":
                series.setdefault(f"{c.method} sparsity= (Adam {c.lr:g})", {}).setdefault(c.target, []).append(
                    c.accuracy)
            elif c.kind == "edgepopup":
                series.setdefault("edgepopup (SGD 0.1)", {}).setdefault(c.target, []).append(c.accuracy)
        for name, points in sorted(series.items()):
            xs = sorted(points)
            means = [100 * statistics.mean(points[x]) for x in xs]
            sds = [100 * (statistics.stdev(points[x]) if len(points[x]) > 1 else 0.0) for x in xs]
            ax.errorbar([100 * x for x in xs], means, yerr=sds, marker="o", capsize=3, label=name)
        lam = [c for c in mine if c.kind == "lam" and c.lr == 5e-2 and c.schedule == "cosine"]
        if lam:
            ax.scatter([100 * c.sparsity for c in lam], [100 * c.accuracy for c in lam], marker="x", color="grey",
                       label="stg fixed lam (Adam 0.05, each seed)")
        ax.set_title(NETWORKS[key].name)
        ax.set_xlabel("sparsity (% of weights removed)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xlim(45, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(stem.with_name(stem.name + "-accuracy.png"), dpi=120)
    plt.close(fig)
    conv = [c for c in cells if c.network == "conv" and c.kind == "target" and c.lr == 5e-2 and c.seed == 0]
    if conv:
        fig, ax = plt.subplots(figsize=(6, 4))
        for c in sorted(conv, key=lambda c: c.target):
            ax.plot(range(1, len(c.layers) + 1), [100 * v for v in c.layers], marker="o",
                    label=f"target {c.target:.0%}")
        ax.set_xlabel("gated layer (input to output)")
        ax.set_ylabel("sparsity of the layer (%)")
        ax.set_title("stg tickets of conv2 (width 0.5): per-layer sparsity")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(stem.with_name(stem.name + "-layers.png"), dpi=120)
        plt.close(fig)


def _quick() -> None:
    """Shrink the protocol to a smoke run (tests/test_bench_smoke.py)."""
    global SPARSITIES, LAMS
    from dataclasses import replace

    SPARSITIES, LAMS = (0.9,), (4.0, 16.0)
    one = ((5e-2, "cosine"),)
    NETWORKS.clear()
    NETWORKS["digits"] = replace(_DIGITS, epochs=2, seeds=(0,), target_optimisers=one, lam_optimisers=one)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", action="append", choices=sorted(NETWORKS), help="default: all")
    p.add_argument("--report-only", action="store_true", help="redraw from the saved JSON")
    p.add_argument("--quick", action="store_true", help="a smoke run: digits, 2 epochs, one seed, s = 0.9")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS_DIR / "targets"))
    p.add_argument("--merge", nargs="*", default=[], help="JSON files of runs made with another --out "
                   "(e.g. one network per process) to add to this one")
    args = p.parse_args(argv)
    set_threads(args.threads)
    if args.quick:
        _quick()
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    path = stem.with_suffix(".json")
    cells = load_cells(path, args.merge, Cell)
    done = {c.key() for c in cells}
    if not args.report_only:
        for key in args.network or list(NETWORKS):
            todo = [c for c in plan(key) if c.key() not in done]
            run_cells(todo, lambda c, net=NETWORKS[key]: run_cell(net, c), _describe, path, cells, key)
    write_report(path, cells, stem, markdown, figures)
    return 0


def _describe(cell: Cell) -> str:
    return (f"{cell.kind} {cell.method} s={cell.target} lam={cell.lam} lr={cell.lr:g} {cell.schedule} "
            f"seed {cell.seed}: {100 * cell.accuracy:.2f}% at {100 * cell.sparsity:.2f}% ({cell.seconds:.1f} s)")


if __name__ == "__main__":
    sys.exit(main())
