"""The training defaults changed for issue 22, checked in the loop a user writes.

Two `fit` / `find` defaults changed: the one-shot methods now train their surviving weights (a mask
fixed at ``apply`` on frozen weights has nothing to learn), and ``cs`` trains with Adam (lr 0.01 on its
scores, 1e-3 on its weights) instead of the reference's SGD 0.1. A user who does not call ``fit``
brings an optimiser, so each cell here is a plain PyTorch loop: ``torch_slt.apply``, then Adam at
1e-3, 1e-2 or 5e-2 on every trainable parameter (one lr for all, as a user would write it),
constant or cosine over all steps, ``loss + torch_slt.penalty(model)``, then ``finalize``. The
``fit`` row is ``fit(model, train)`` with the library's defaults.

Methods, on the same random network per seed:

* ``cs`` (weights trained with its mask; its sparsity is what its penalty reached);
* ``magnitude@cs``: magnitude pruning at the sparsity that cell's cs ticket reached, weights trained
  (the baseline at the same sparsity);
* ``magnitude`` and ``random`` at 50 %, weights trained (the new one-shot default);
* ``stg`` (target 50 %) and ``edgepopup`` (50 %) on the frozen weights: the strong-ticket baselines;
* ``supermask`` on the frozen weights (its kept fraction is what it learns): its ``fit`` default is Adam
  0.1 on these networks without normalisation (SGD 100 before 2026-12-03 16:00).

Networks: lenet300 and conv2 on scikit-learn's digits (10 epochs, batch 64); 3 seeds for lenet300,
2 for conv2 (a shared 2-core CPU: a conv2 seed is about 10 CPU-minutes). ``python bench/loops.py --network lenet300`` (about 4 CPU-minutes),
``--network conv2`` (about 10); ``--report-only`` rewrites the table from the JSON. Outputs
``bench/results/loops.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, command_line, machine, now_utc, set_threads, user_loop  # noqa: E402

NETWORKS = {"lenet300": 3, "conv2": 2}            # network -> seeds
OPTIMISERS = [(lr, schedule) for lr in (1e-3, 1e-2, 5e-2) for schedule in ("constant", "cosine")]
EPOCHS, BATCH, SPARSITY = 10, 64, 0.5
METHODS = ("cs", "magnitude@cs", "magnitude", "random", "stg", "edgepopup", "supermask")


def _model(network: str, splits, seed: int):
    from torch_slt.experiment.zoo import ModelSpec, build_model

    return build_model(ModelSpec(network, tuple(splits.in_shape), splits.num_classes, seed=seed))


def _apply(model, method: str, sparsity: float | None, steps: int):
    import torch_slt

    if method == "cs":
        return torch_slt.apply(model, "cs", total_steps=steps)
    if method == "stg":
        return torch_slt.apply(model, "stg", sparsity=sparsity, total_steps=steps)
    if method == "supermask":   # no sparsity to give: its kept fraction is what it learns
        return torch_slt.apply(model, "supermask")
    return torch_slt.apply(model, method, sparsity=sparsity)


def _user_loop(model, splits, seed: int, lr: float, schedule: str) -> None:
    """What a user writes: Adam on every trainable parameter, the penalty added, one epoch loop."""
    x, y = splits.train.tensors()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    steps = EPOCHS * math.ceil(len(x) / BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if schedule == "cosine" else None
    user_loop(model, x, y, opt, sched, EPOCHS, BATCH, torch.Generator().manual_seed(seed))


def run_cell(network: str, method: str, seed: int, lr: float | None, schedule: str | None, splits,
             sparsity: float | None) -> dict:
    import torch_slt
    from torch_slt.experiment.train import TrainConfig, accuracy, fit

    steps = EPOCHS * math.ceil(len(splits.train) / BATCH)
    torch.manual_seed(seed)
    model = _model(network, splits, seed)
    _apply(model, method, sparsity, steps)
    t0 = time.perf_counter()
    if lr is None:   # the library's defaults
        fit(model, splits.train, None, TrainConfig(epochs=EPOCHS, batch_size=BATCH, seed=seed, quiet=True))
    else:
        _user_loop(model, splits, seed, lr, schedule)
    torch_slt.finalize(model)
    acc = accuracy(model, splits.test)
    return {"network": network, "method": method, "seed": seed, "lr": lr, "schedule": schedule,
            "sparsity": torch_slt.report(model).sparsity, "test_accuracy": acc,
            "seconds": time.perf_counter() - t0}


def run_network(network: str, splits) -> list[dict]:
    import warnings

    rows = []
    for seed in range(NETWORKS[network]):
        for lr, schedule in [(None, None), *OPTIMISERS]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # a run at chance warns; the table says it
                cs = run_cell(network, "cs", seed, lr, schedule, splits, None)
                rows.append(cs)
                # magnitude at the sparsity cs reached (rounded as apply rounds a fraction)
                at_cs = run_cell(network, "magnitude", seed, lr, schedule, splits, round(cs["sparsity"], 4))
                rows.append({**at_cs, "method": "magnitude@cs"})
                for method in ("magnitude", "random", "stg", "edgepopup", "supermask"):
                    rows.append(run_cell(network, method, seed, lr, schedule, splits, SPARSITY))
            print(f"{network} seed {seed} {lr} {schedule}: "
                  + ", ".join(f"{r['method']} {100 * r['test_accuracy']:.1f}" for r in rows[-len(METHODS):]),
                  file=sys.stderr, flush=True)
    return rows


def run_method(rows: list[dict], network: str, method: str, splits) -> list[dict]:
    """``rows`` with every cell of one method on ``network`` (run) again: a method added to the table."""
    import warnings

    fresh = []
    for seed in range(NETWORKS[network]):
        for lr, schedule in [(None, None), *OPTIMISERS]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fresh.append(run_cell(network, method, seed, lr, schedule, splits, SPARSITY))
            print(f"{network} seed {seed} {lr} {schedule} {method}: {100 * fresh[-1]['test_accuracy']:.1f}",
                  file=sys.stderr, flush=True)
    return [r for r in rows if not (r["network"] == network and r["method"] == method)] + fresh


def rerun_fit_defaults(rows: list[dict], network: str, methods: list[str], splits) -> list[dict]:
    """``rows`` with the ``fit defaults`` cells of ``methods`` on ``network`` run again (after a default
    changed); ``magnitude@cs`` prunes to the sparsity of the saved cs ticket of its seed."""
    import warnings

    fresh = []
    for seed in range(NETWORKS[network]):
        for method in methods:
            sparsity = SPARSITY
            if method == "magnitude@cs":
                cs = next(r for r in rows if r["network"] == network and r["method"] == "cs"
                          and r["seed"] == seed and r["lr"] is None)
                sparsity = round(cs["sparsity"], 4)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                row = run_cell(network, method.removesuffix("@cs"), seed, None, None, splits, sparsity)
            fresh.append({**row, "method": method})
            print(f"{network} seed {seed} fit defaults {method}: {100 * row['test_accuracy']:.1f}",
                  file=sys.stderr, flush=True)
    redone = {(r["method"], r["seed"]) for r in fresh}
    return [r for r in rows if not (r["network"] == network and r["lr"] is None
                                    and (r["method"], r["seed"]) in redone)] + fresh


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# Changed training defaults in the loop a user writes (issue 22)", "",
             f"- command: `{meta['command']}`", f"- date: {meta['date']}", f"- machine: {meta['machine']}",
             f"- scikit-learn digits, {EPOCHS} epochs, batch {BATCH}; test accuracy (%) of the finalized "
             "ticket, mean ± sd over seeds (lenet300: 3, conv2: 2); sparsity in brackets (mean)",
             "- `fit defaults`: `fit(model, train)` with the library's defaults (cs: Adam 0.01 on the "
             "scores, 1e-3 on the weights; one-shot: weights trained with Adam, cosine, 1e-2 on the MLP "
             "lenet300 and 1e-3 on conv2 (SGD 0.1 momentum 0.9 until 2026-12-03 14:00, then Adam 1e-3 on "
             "both until 16:00; re-run with --fit-defaults); supermask: Adam 0.1 (no normalisation here); stg: "
             "Adam 0.05; edgepopup: SGD 0.1 cosine); the other columns: a plain loop, Adam at that lr on "
             "every trainable parameter",
             "- cs and the one-shot rows train their weights (weak tickets); stg and edgepopup keep them "
             "frozen (strong tickets); `magnitude@cs` prunes to the sparsity each cs ticket reached", ""]
    configs = [(None, None), *OPTIMISERS]
    for network in dict.fromkeys(r["network"] for r in rows):
        lines += [f"## {network}", "", "| method | fit defaults | " + " | ".join(
            f"Adam {lr:g} {schedule}" for lr, schedule in OPTIMISERS) + " |",
                  "|---|" + "---:|" * len(configs)]
        for method in METHODS:
            cells = []
            for lr, schedule in configs:
                sel = [r for r in rows if r["network"] == network and r["method"] == method
                       and r["lr"] == lr and r["schedule"] == schedule]
                cells.append(f"{_mean_sd([r['test_accuracy'] for r in sel])} "
                             f"({100 * statistics.mean(r['sparsity'] for r in sel):.0f}%)" if sel else "")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    from torch_slt.experiment.data import load_dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", action="append", choices=sorted(NETWORKS), help="default: all")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--quick", action="store_true", help="smoke run: lenet300, one seed, 1 epoch, Adam 1e-2")
    p.add_argument("--fit-defaults", help="comma-separated methods whose `fit defaults` cells to run again "
                   "(after a default changed), the rest of the table kept, e.g. magnitude,magnitude@cs,random")
    p.add_argument("--method", help="run every cell of this one method again (a method added to the "
                   "table), the rest kept")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS_DIR / "loops"))
    p.add_argument("--merge", nargs="*", default=[], help="JSON files of runs made with another --out "
                   "(two networks run side by side), folded into this one")
    args = p.parse_args(argv)
    set_threads(args.threads)
    if args.quick:   # the smoke test's run: the same code on a grid of two columns
        global EPOCHS, OPTIMISERS
        EPOCHS, OPTIMISERS = 1, [(1e-2, "constant")]
        NETWORKS["lenet300"] = 1
        args.network = ["lenet300"]
    path = Path(args.out).with_suffix(".json")
    saved = json.loads(path.read_text()) if path.exists() else {"rows": [], "meta": {}}
    rows = saved["rows"]
    meta = saved.get("meta") or {}
    for other in map(Path, args.merge):
        extra = json.loads(other.read_text())
        networks = {r["network"] for r in extra["rows"]}
        rows = [r for r in rows if r["network"] not in networks] + extra["rows"]
        meta = {**meta, "command": f"{meta.get('command', '')}; {extra['meta']['command']}",
                "date": f"{meta.get('date', '')}; {extra['meta']['date']}"}
    if args.merge:
        path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if args.method and not args.report_only:
        splits = load_dataset("digits")
        for network in args.network or list(NETWORKS):
            rows = run_method(rows, network, args.method, splits)
        meta = {**meta, "command": f"{meta.get('command', '')}; {command_line()}",
                "date": f"{meta.get('date', '')}; {now_utc()}"}
        path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    elif args.fit_defaults and not args.report_only:
        splits = load_dataset("digits")
        for network in args.network or list(NETWORKS):
            rows = rerun_fit_defaults(rows, network, args.fit_defaults.split(","), splits)
        meta = {**meta, "command": f"{meta.get('command', '')}; {command_line()}",
                "date": f"{meta.get('date', '')}; {now_utc()}"}
        path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    elif not args.report_only:
        splits = load_dataset("digits")
        for network in args.network or list(NETWORKS):
            fresh = run_network(network, splits)
            rows = [r for r in rows if r["network"] != network] + fresh
            meta = {"command": command_line(), "date": now_utc(), "machine": machine()}
            path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    Path(args.out).with_suffix(".md").write_text(markdown(rows, meta))
    print(Path(args.out).with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
