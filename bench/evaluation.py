"""Can a strong ticket win everything? Every metric of torch_slt.evaluation for tickets of several
methods and sparsities next to the dense-trained network, plus the mask overlap across methods and
seeds, the per-layer profiles and the loss along a line (Chen et al., TMLR 2022, on a CPU budget).

Protocol (one frozen network): lenet300 with random weights from ``--net-seed`` (identical in every
run). For each training seed: the dense network with all its weights trained (the baseline, the mCE
reference), and a ticket for every method x sparsity, weights frozen, masks trained with each method's
defaults (``METHOD_DEFAULTS``) for ``--epochs`` epochs; ``magnitude`` is one-shot on the frozen random
weights (no training, so the same mask for every seed). The seeds change the data order and the gate
noise, not the network, so that the overlap heatmap asks "does a method find the same subnetwork of
this network again?". Every ticket is finalized and evaluated on the test split with every metric.

    python bench/evaluation.py                 # Fashion-MNIST, the committed protocol (~25 CPU-min)
    python bench/evaluation.py --quick         # digits, about a minute
    python bench/evaluation.py --report-only   # redraw tables and figures from the saved JSON

Writes ``bench/results/evaluation[-quick].{json,md}`` and ``-sweep.png``, ``-overlap.png``,
``-profiles.png``, ``-line.png``, ``-reliability.png``. Runs are appended to the JSON as they finish
(``--resume`` keeps them); the 0.9-sparsity tickets are kept in ``--work`` for the overlap analysis.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import common
import torch_slt

LEARNED = ("stg", "hardconcrete", "edgepopup", "supermask")
RESUMED = (" (runs are appended to the JSON: `--resume` added cells to an earlier run; the same command "
           "without `--resume` regenerates every cell)")
ONE_SHOT = ("magnitude",)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="digits, 2 epochs, a minute")
    p.add_argument("--methods", default=",".join(LEARNED + ONE_SHOT))
    p.add_argument("--sparsities", default="0.5,0.7,0.9,0.95")
    p.add_argument("--seeds", default="0,1,2", help="training seeds")
    p.add_argument("--net-seed", type=int, default=0, help="seed of the frozen random weights")
    p.add_argument("--model", default="lenet300", help="a torch_slt zoo model (lenet300, conv2, ...)")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier of the model")
    p.add_argument("--epochs", type=int, default=None, help="default 3 (quick 2)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--dense-lr", type=float, default=None,
                   help="learning rate of the dense network (default: METHOD_DEFAULTS['dense'], SGD 0.1, "
                   "which diverges on the bias-free conv2 without batch norm)")
    p.add_argument("--test-samples", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--overlap-sparsity", type=float, default=0.9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--work", default="/tmp/torch-slt-bench-evaluation", help="where tickets are kept")
    p.add_argument("--out", default=None, help="output stem (default bench/results/evaluation[-quick])")
    args = p.parse_args(argv)
    args.dataset = "digits" if args.quick else "fashion-mnist"
    args.epochs = args.epochs or (2 if args.quick else 3)
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.sparsity_list = [float(s) for s in args.sparsities.split(",")]
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    stem = "evaluation" if args.model == "lenet300" else f"evaluation-{args.model}"
    args.out = Path(args.out or common.RESULTS_DIR / (stem + "-quick" if args.quick else stem))
    return args


def spec_of(splits, args):
    from torch_slt.experiment.zoo import ModelSpec

    return ModelSpec(args.model, tuple(splits.in_shape), splits.num_classes, width=args.width,
                     seed=args.net_seed)


def test_split(splits, args):
    """The test split, or its first ``--test-samples`` images (normalisation kept)."""
    if args.test_samples is None:
        return splits.test
    return splits.test.subset(torch.arange(min(args.test_samples, len(splits.test))))


def settings_of(args):
    from torch_slt.evaluation import EvalSettings

    ood = ("gaussian", "uniform", "vflip") if args.quick else ("digits", "gaussian", "uniform", "vflip")
    return EvalSettings(ood_sets=ood, pgd_steps=5, epsilons=(0.01, 0.03, 0.1), adversarial_samples=1000)


def method_kwargs(method: str, sparsity: float, seed: int) -> dict[str, Any]:
    if method == "supermask":  # no sparsity target: start the logits at the requested kept fraction
        return {"score_init": math.log((1.0 - sparsity) / sparsity)}
    if method == "random":
        return {"sparsity": sparsity, "seed": seed}
    return {"sparsity": sparsity}


def train_one(method: str | None, sparsity: float | None, seed: int, splits, args) -> torch.nn.Module:
    from torch_slt.experiment.train import TrainConfig, fit
    from torch_slt.experiment.zoo import build_model

    model = build_model(spec_of(splits, args))
    if method is not None:
        torch_slt.apply(model, method, **method_kwargs(method, sparsity, seed))
    if method is None or torch_slt.get_method(method).learned:
        lr = args.dense_lr if method is None else None
        fit(model, splits.train, None, TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=seed,
                                                   lr=lr, quiet=True))
    if method is not None:
        torch_slt.finalize(model)
    return model.eval()


def flat(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON row: headline numbers and the small details (no reliability bins)."""
    return {k: v for k, v in result.items() if k not in ("metrics",)}


def run(args) -> dict[str, Any]:
    from torch_slt.evaluation import evaluate
    from torch_slt.experiment.data import load_dataset
    from torch_slt.experiment.ticket import save_ticket

    splits = load_dataset(args.dataset, seed=0)
    settings = settings_of(args)
    work = Path(args.work) / args.model
    work.mkdir(parents=True, exist_ok=True)
    path = args.out.with_suffix(".json")
    data = json.loads(path.read_text()) if args.resume and path.exists() else {"rows": []}
    data.update({"command": common.command_line(), "date": common.now_utc(), "machine": common.machine(),
                 "dataset": repr(splits), "epochs": args.epochs, "net_seed": args.net_seed,
                 "settings": {k: v for k, v in vars(settings).items() if k != "ood_data"}})
    done = {(r["method"], r["target"], r["seed"]) for r in data["rows"]}
    for seed in args.seed_list:
        plan = [(None, None)] + [(m, s) for s in args.sparsity_list for m in args.method_list]
        dense = next((r for r in data["rows"] if r["method"] == "dense" and r["seed"] == seed), None)
        for method, sparsity in plan:
            name = method or "dense"
            if method in ONE_SHOT and seed != args.seed_list[0]:
                continue  # deterministic on the frozen network: the first seed's ticket is the ticket
            if (name, sparsity, seed) in done:
                continue
            t0 = time.perf_counter()
            model = train_one(method, sparsity, seed, splits, args)
            t1 = time.perf_counter()
            result = evaluate(model, test_split(splits, args), settings=settings, reference=dense)
            row = {"method": name, "target": sparsity, "seed": seed,
                   "sparsity": torch_slt.report(model).sparsity if method else 0.0,
                   "train_seconds": t1 - t0, "eval_seconds": time.perf_counter() - t1, **flat(result)}
            if method is None:
                dense = row
                row["mce"] = 1.0
            if sparsity is not None and abs(sparsity - args.overlap_sparsity) < 1e-9 or method is None:
                with warnings.catch_warnings():  # the dense network stores every trained value, as expected
                    warnings.filterwarnings("ignore", message=r"save_ticket\(\): none of the model's weights")
                    save_ticket(model, work / f"{name}-{sparsity}-seed{seed}.slt.safetensors",
                                spec_of(splits, args))
            data["rows"].append(row)
            path.write_text(json.dumps(data, indent=1))
            print(f"seed {seed} {name} {sparsity}: acc {row['accuracy']:.4f} ece {row['ece']:.4f} "
                  f"train {row['train_seconds']:.0f}s eval {row['eval_seconds']:.0f}s", flush=True)
    return data


# ---------------------------------------------------------------------------------------------- report
HEADLINES = ("accuracy", "nll", "ece", "brier", "ood_auroc", "ood_fpr95", "corruption_accuracy", "mce",
             "fgsm_accuracy", "pgd_accuracy", "worst_class_accuracy")


def mean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, target): the mean over seeds of every headline, and the seeds' count."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["target"]), []).append(r)
    out = []
    for (method, target), rs in groups.items():
        row = {"method": method, "target": target, "seeds": len(rs),
               "sparsity": sum(r["sparsity"] for r in rs) / len(rs)}
        for k in HEADLINES:
            vals = [r[k] for r in rs if isinstance(r.get(k), float)]
            if vals:
                row[k] = sum(vals) / len(vals)
                row[k + "_std"] = _std(vals)
        row["label"] = method if target is None else f"{method} {target:.0%}"
        out.append(row)
    order = {m: i for i, m in enumerate(LEARNED + ONE_SHOT)}
    return sorted(out, key=lambda r: (r["target"] is not None, r["target"] or 0.0,
                                      order.get(r["method"], len(order)), r["method"]))


def _std(values):
    if len(values) < 2:
        return 0.0
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def report(data: dict[str, Any], args) -> None:
    from torch_slt.analysis import (loss_along_line, mask_overlap, overlap_matrix, plot_layer_profiles,
                                    plot_line, plot_overlap_heatmap)
    from torch_slt.evaluation import lth_pass_table
    from torch_slt.evaluation.plots import plot_reliability, plot_sweep_metrics
    from torch_slt.experiment.data import load_dataset
    from torch_slt.experiment.ticket import load_ticket

    stem = args.out
    rows = data["rows"]
    means = mean_rows(rows)
    dense = next(r for r in means if r["method"] == "dense")
    tickets = [r for r in means if r["method"] != "dense"]
    # The one-shot magnitude tickets of the frozen random weights are at chance level; drawn, they
    # squash every panel's scale, so they stay in the tables only.
    plot_sweep_metrics([r for r in rows if r["method"] in LEARNED], f"{stem}-sweep.png", dense=dense,
                       keys=[k for k in HEADLINES if k in dense],
                       title=f"{args.model} / {args.dataset}, {data['epochs']} epochs, mean of "
                             f"{len(args.seed_list)} training seeds (magnitude, at chance: table only)")
    first = [r for r in rows if r["seed"] == args.seed_list[0]]
    dense0 = next(r for r in first if r["method"] == "dense")
    plot_reliability(dense0, f"{stem}-reliability-dense.png",
                     title=f"dense: ECE {dense0['ece']:.2%}")
    best = next((r for r in first if r["method"] == "stg" and r["target"] == args.overlap_sparsity), None)
    if best:
        plot_reliability(best, f"{stem}-reliability-stg.png",
                         title=f"stg {args.overlap_sparsity:.0%}: ECE {best['ece']:.2%}")
    work = Path(args.work) / args.model
    labels, models = [], []
    for method in args.method_list:
        for seed in args.seed_list:
            f = work / f"{method}-{args.overlap_sparsity}-seed{seed}.slt.safetensors"
            if f.exists():
                labels.append(f"{method} s{seed}")
                models.append(load_ticket(f)[0])
    lines = []
    if models:
        matrix = overlap_matrix(models)
        plot_overlap_heatmap(matrix, labels, f"{stem}-overlap.png",
                             title=f"Mask overlap at {args.overlap_sparsity:.0%} sparsity "
                                   f"({args.model}, one network)")
        chance = mask_overlap(models[0], models[0]).chance  # same densities as every 0.9 ticket, roughly
        by_label = dict(zip(labels, models))
        first_seed = [f"{m} s{args.seed_list[0]}" for m in args.method_list]
        profiles = {name: by_label[name] for name in first_seed if name in by_label}
        plot_layer_profiles(profiles, f"{stem}-profiles.png",
                            title=f"Per-layer sparsity of the {args.overlap_sparsity:.0%} tickets")
        lines += overlap_section(matrix, labels, models, chance, args)
        splits = load_dataset(args.dataset, seed=0)
        from torch_slt.experiment.zoo import build_model

        random_net = build_model(spec_of(splits, args)).eval()
        s0 = args.seed_list[0]
        line_pairs = {}
        if f"stg s{s0}" in by_label:
            line_pairs[f"random net -> stg {args.overlap_sparsity:.0%}"] = (random_net,
                                                                             by_label[f"stg s{s0}"])
        if f"stg s{s0}" in by_label and f"edgepopup s{s0}" in by_label:
            line_pairs["stg -> edgepopup"] = (by_label[f"stg s{s0}"], by_label[f"edgepopup s{s0}"])
        if len(args.seed_list) > 1 and f"stg s{args.seed_list[1]}" in by_label:
            line_pairs[f"stg s{s0} -> stg s{args.seed_list[1]}"] = (by_label[f"stg s{s0}"],
                                                                     by_label[f"stg s{args.seed_list[1]}"])
        test = test_split(splits, args)
        results = {k: loss_along_line(a, b, test, steps=11) for k, (a, b) in line_pairs.items()}
        if results:
            plot_line(results, f"{stem}-line.png")
            lines += ["", "## Loss along a line (test set, effective weights, 11 points)", "",
                      "| line | loss at A | loss at B | max loss | loss barrier | error barrier |",
                      "|---|---:|---:|---:|---:|---:|"]
            lines += [f"| {k} | {r.loss[0]:.3f} | {r.loss[-1]:.3f} | {max(r.loss):.3f} | "
                      f"{r.loss_barrier:.3f} | "
                      f"{100 * r.error_barrier:.1f} pts |" for k, r in results.items()]
    dense_lr = f" (dense: lr {args.dense_lr})" if args.dense_lr else ""
    body = [f"# Evaluation beyond accuracy: {args.model} (width {args.width}) on {args.dataset}", "",
            f"- command: `{data['command']}`" + (RESUMED if "--resume" in data["command"] else ""),
            f"- date: {data['date']}", f"- machine: {data['machine']}",
            f"- data: {data['dataset']}; test split for every metric"
            + (f" (its first {args.test_samples} images)" if args.test_samples else ""),
            f"- protocol: one frozen {args.model} (width {args.width}; weights from seed "
            f"{data['net_seed']}); training seeds "
            f"{', '.join(map(str, args.seed_list))}; {data['epochs']} epochs, batch {args.batch_size}, "
            f"each method's defaults{dense_lr}; magnitude one-shot on the frozen weights (one seed: it is "
            f"deterministic)",
            f"- evaluation settings: {json.dumps(data['settings'])}",
            f"- CPU time: training {sum(r['train_seconds'] for r in rows) / 60:.1f} min, evaluation "
            f"{sum(r['eval_seconds'] for r in rows) / 60:.1f} min (1 thread)", "",
            "## Every metric, mean over seeds (± std)", "", metric_table(means), "",
            "## LTH-PASS (mean over seeds; ✗ = worse than dense)", "",
            lth_pass_table(tickets, dense, keys=[k for k in HEADLINES if k in dense]), ""] + lines
    stem.with_suffix(".md").write_text("\n".join(body) + "\n")


def metric_table(means: list[dict[str, Any]]) -> str:
    from torch_slt.evaluation import directions

    better = directions()
    keys = [k for k in HEADLINES if any(k in r for r in means)]
    arrows = [f"{k} {'↑' if better[k] == 'higher' else '↓'}" for k in keys]
    head = "| ticket | sparsity | " + " | ".join(arrows) + " |"
    out = [head, "|---|---:|" + "---:|" * len(keys)]
    for r in means:
        cells = [f"{r[k]:.4f} ± {r[k + '_std']:.4f}" if k in r and r["seeds"] > 1 else
                 (f"{r[k]:.4f}" if k in r else "-") for k in keys]
        out.append(f"| {r['label']} | {r['sparsity']:.1%} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def overlap_section(matrix, labels, models, chance, args) -> list[str]:
    from torch_slt.analysis import mask_overlap

    n = len(labels)
    out = ["", f"## Mask overlap at {args.overlap_sparsity:.0%} (Jaccard; chance with the same per-layer "
               f"densities in brackets)", "", "| | " + " | ".join(labels) + " |", "|---|" + "---:|" * n]
    for i in range(n):
        cells = []
        for j in range(n):
            if i == j:
                cells.append("1")
            else:
                o = mask_overlap(models[i], models[j])
                cells.append(f"{o.jaccard:.3f} ({o.chance:.3f})")
        out.append(f"| {labels[i]} | " + " | ".join(cells) + " |")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    common.set_threads(args.threads)
    if args.report_only:
        data = json.loads(args.out.with_suffix(".json").read_text())
    else:
        data = run(args)
    report(data, args)
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
