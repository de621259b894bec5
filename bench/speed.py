"""Training-step speed and peak memory of torch_slt's learned methods against dense training.

Rows, all on the same random model and the same batch, timed side by side and interleaved:

* ``dense``: every parameter trainable, Adam (the cost a user compares against);
* each registered learned method (``stg``, ``hardconcrete``, ``edgepopup``, ``supermask``) with frozen
  weights, Adam on the gates/scores, the sparsity penalty in the loss where the method has one;
* ``edgepopup (reference sort)``: edge-popup's forward as ``allenai/hidden-networks`` writes it, a full
  sort of every score tensor at every forward (``bench/reference_edgepopup.py``).

Columns: median time of one training step (``zero_grad``, forward, loss, backward, optimizer step),
its ratio to dense; peak memory of one step and its ratio to dense. Then: step time against width for
lenet300 (1x, 2x, 4x, 8x) with the fitted exponent, and the cost of the data-dependent fixed-mask
scorings (SynFlow's iterations, SNIP and GraSP) against plain forward-backward passes.

Timing: every repeat runs each row once (``inner`` steps, enough for ~0.3 s), in a fresh random
order, so slow phases of a shared machine hit every row alike; the figure reported is the median over
repeats of the *process CPU time* per step (with one torch thread, the step's own compute, page faults
included, without the time the process waits for a core on a busy machine); wall time is shown too.
Peak memory: see :func:`peak_step_memory`.

Run ``python bench/speed.py`` (full, ~10 min of CPU) or ``python bench/speed.py --quick``
(~1-2 min). Writes ``bench/results/speed.md`` and ``speed.json`` unless ``--no-save``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

import common
import torch_slt
from reference_edgepopup import apply_reference_edgepopup

LEARNED = ("stg", "hardconcrete", "edgepopup", "supermask")
# Hyperparameters of each row: only the step's cost matters here, so each method runs with its
# defaults plus what it requires (edge-popup needs the fraction to remove).
METHOD_KWARGS: dict[str, dict] = {
    "stg": {"lam": 0.1},
    "hardconcrete": {},
    "edgepopup": {"sparsity": 0.5},
    "supermask": {},
}
REF_SORT = "edgepopup (reference sort)"

# model name -> (input shape, batch size)
MODELS: dict[str, tuple[tuple[int, int, int], int]] = {
    "lenet300": ((1, 28, 28), 256),
    "resnet18": ((3, 32, 32), 64),
    "vit": ((3, 32, 32), 64),
}

# (row, model) -> maximum ratio to dense, from issue 5
TIME_TARGETS = {
    ("stg", "lenet300"): 1.30, ("stg", "resnet18"): 1.05, ("stg", "vit"): 1.05,
    ("hardconcrete", "lenet300"): 1.30, ("hardconcrete", "resnet18"): 1.05, ("hardconcrete", "vit"): 1.05,
    ("edgepopup", "resnet18"): 1.10, ("edgepopup", "vit"): 1.10,
}
MEMORY_TARGETS = {"stg": 1.25}


# ---------------------------------------------------------------------------------------------- rows
@dataclass
class Row:
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    penalty: bool
    times: list[float] = field(default_factory=list)       # wall seconds per step, one per block
    cpu_times: list[float] = field(default_factory=list)   # process CPU seconds per step
    peak_bytes: int | None = None

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(common.logits_of(self.model(x)), y)
        if self.penalty:
            loss = loss + torch_slt.penalty(self.model)
        loss.backward()
        self.optimizer.step()


def available_learned() -> list[str]:
    registered = set(torch_slt.list_methods())
    return [m for m in LEARNED if m in registered]


def make_row(name: str, base: nn.Module) -> Row:
    model = copy.deepcopy(base).train()
    if name == "dense":
        for p in model.parameters():
            p.requires_grad_(True)
        return Row(name, model, torch.optim.Adam(model.parameters(), lr=1e-3), penalty=False)
    if name == REF_SORT:
        scores = apply_reference_edgepopup(model, METHOD_KWARGS["edgepopup"]["sparsity"])
        return Row(name, model, torch.optim.Adam(scores, lr=1e-3), penalty=False)
    kwargs = METHOD_KWARGS.get(name, {})
    torch_slt.apply(model, name, **kwargs)
    has_penalty = any(hook.prob_nonzero(module) is not None
                      for _, module, hook in torch_slt.gated_tensors(model))
    opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=1e-3)
    return Row(name, model, opt, penalty=has_penalty)


def make_rows(base: nn.Module, names: list[str]) -> list[Row]:
    return [make_row(n, base) for n in names]


def time_rows(rows: list[Row], x, y, *, repeats: int, inner: int, warmup: int, seed: int = 0) -> None:
    """Interleaved timing: each repeat runs every row once, rows in a fresh random order."""
    for row in rows:
        for _ in range(warmup):
            row.step(x, y)
    order = list(range(len(rows)))
    rng = random.Random(seed)
    gc.collect()
    for _ in range(repeats):
        rng.shuffle(order)
        for i in order:
            row = rows[i]
            gc.disable()
            try:
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(inner):
                    row.step(x, y)
                row.cpu_times.append((time.process_time() - c0) / inner)
                row.times.append((time.perf_counter() - t0) / inner)
            finally:
                gc.enable()


def median(row: Row, cpu: bool = True) -> float:
    """Median seconds per step: process CPU time (default) or wall time."""
    return statistics.median(row.cpu_times if cpu else row.times)


# ---------------------------------------------------------------------------------------------- memory
def _storage_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            continue
        s = t.untyped_storage()
        key = s.data_ptr()
        if key in seen or s.nbytes() == 0:
            continue
        seen.add(key)
        total += s.nbytes()
    return total


def persistent_tensors(row: Row, x, y) -> list[torch.Tensor]:
    """What stays allocated between steps: parameters, buffers, optimizer state, the batch."""
    out = list(row.model.parameters()) + list(row.model.buffers()) + [x, y]
    for state in row.optimizer.state.values():
        out.extend(v for v in state.values() if isinstance(v, torch.Tensor))
    return out


def peak_step_memory(row: Row, x, y) -> int:
    """Peak bytes of CPU tensor memory live during one steady-state training step.

    ``torch.profiler`` with ``profile_memory=True`` records every allocation and free of torch's CPU
    allocator (each ``[memory]`` event carries +bytes or -bytes). Replaying the events in time order
    gives the bytes allocated since profiling started, at every instant; its maximum during the
    measured step, plus the bytes that were already live and stay live (parameters, buffers, optimizer
    state, the batch: :func:`persistent_tensors`, counted once per storage), is the peak. This is what
    ``torch.cuda.max_memory_allocated`` reports on a GPU: tensor memory, without allocator caching or
    Python objects.

    Gradients are released (``zero_grad(set_to_none=True)``) before profiling starts, and the profiled
    window holds one step before the measured one, so every other tensor that is live during the
    measured step (gradients, the effective weights a pre-hook left on the module, saved activations)
    was allocated inside the window and is counted by the replay.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    row.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    baseline = _storage_bytes(persistent_tensors(row, x, y))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        row.step(x, y)
        with record_function("bench_measured_step"):
            row.step(x, y)
    events = prof.profiler.kineto_results.events()
    window = [e for e in events if e.name() == "bench_measured_step"]
    if len(window) != 1:
        raise RuntimeError("speed.py: could not find the measured step in the profiler trace")
    start, end = window[0].start_ns(), window[0].end_ns()
    mem = sorted((e.start_ns(), e.nbytes()) for e in events
                 if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"))
    live = peak = 0
    for t, nbytes in mem:
        if t > end:
            break
        if t < start:
            live += nbytes
            peak = live
            continue
        live += nbytes
        peak = max(peak, live)
    return baseline + peak


# ---------------------------------------------------------------------------------------------- report
def fmt_ratio(value: float, target: float | None) -> str:
    text = f"{value:.2f}x"
    if target is not None:
        text += f" ({'ok' if value <= target else 'MISS'}, target <= {target:.2f}x)"
    return text


def bench_model(name: str, row_names: list[str], args) -> dict:
    in_shape, batch = MODELS[name]
    base, source = common.build(name, in_shape, 10, seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *in_shape, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    rows = make_rows(base, row_names)
    # one dense step tells how many steps make one timed block of >= min_block seconds
    t0 = time.perf_counter()
    rows[0].step(x, y)
    rows[0].step(x, y)
    one = (time.perf_counter() - t0) / 2
    inner = max(1, math.ceil(args.min_block / max(one, 1e-6)))
    time_rows(rows, x, y, repeats=args.repeats, inner=inner, warmup=args.warmup)
    if not args.no_memory:
        for row in rows:
            row.peak_bytes = peak_step_memory(row, x, y)
    dense = rows[0]
    out = {"model": name, "source": source, "batch": batch, "in_shape": list(in_shape),
           "weights": common.count_weights(base), "inner_steps": inner, "repeats": args.repeats, "rows": []}
    for row in rows:
        entry = {"row": row.name, "median_s": median(row), "ratio": median(row) / median(dense),
                 "median_wall_s": median(row, cpu=False),
                 "wall_ratio": median(row, cpu=False) / median(dense, cpu=False),
                 "cpu_times_s": row.cpu_times, "wall_times_s": row.times}
        if row.peak_bytes is not None:
            entry["peak_bytes"] = row.peak_bytes
            entry["peak_ratio"] = row.peak_bytes / dense.peak_bytes
        out["rows"].append(entry)
    ref = next((r for r in out["rows"] if r["row"] == REF_SORT), None)
    ours = next((r for r in out["rows"] if r["row"] == "edgepopup"), None)
    if ref and ours:
        out["edgepopup_speedup_vs_reference"] = ref["median_s"] / ours["median_s"]
        dense_s = out["rows"][0]["median_s"]
        if ours["median_s"] > dense_s:
            # what each adds to a dense step: the part the two implementations do differently
            out["edgepopup_overhead_ratio"] = (ref["median_s"] - dense_s) / (ours["median_s"] - dense_s)
    return out


def table_model(res: dict) -> str:
    lines = [f"### {res['model']} (batch {res['batch']}, input {'x'.join(map(str, res['in_shape']))}, "
             f"{res['weights']:,} gated weights; {res['repeats']} repeats x {res['inner_steps']} step(s); "
             f"model from {res['source']})", "",
             "| row | CPU ms / step | vs dense (CPU) | wall ms / step | vs dense (wall) | peak memory (MiB) "
             "| vs dense |",
             "|---|---:|---|---:|---:|---:|---|"]
    for r in res["rows"]:
        t_target = TIME_TARGETS.get((r["row"], res["model"]))
        m_target = MEMORY_TARGETS.get(r["row"])
        mem = (f"{r['peak_bytes'] / 2**20:.1f}", fmt_ratio(r["peak_ratio"], m_target)) \
            if "peak_bytes" in r else ("-", "-")
        lines.append(f"| {r['row']} | {1000 * r['median_s']:.1f} | "
                     f"{'1.00x' if r['row'] == 'dense' else fmt_ratio(r['ratio'], t_target)} | "
                     f"{1000 * r['median_wall_s']:.1f} | {r['wall_ratio']:.2f}x | "
                     f"{mem[0]} | {'1.00x' if r['row'] == 'dense' else mem[1]} |")
    if "edgepopup_speedup_vs_reference" in res:
        s = res["edgepopup_speedup_vs_reference"]
        lines += ["", f"`edgepopup` steps are {s:.2f}x faster than the reference sort's "
                      f"({'ok' if s >= 2 else 'MISS'}, target >= 2x)."]
        if "edgepopup_overhead_ratio" in res:
            lines[-1] += (f" What it adds to a dense step is {res['edgepopup_overhead_ratio']:.1f}x smaller "
                          f"than what the reference adds.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- scaling
def bench_scaling(row_names: list[str], widths: list[float], args) -> dict:
    in_shape, batch = MODELS["lenet300"]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *in_shape, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    res = {"widths": widths, "weights": [], "median_s": {n: [] for n in row_names}}
    for w in widths:
        base, _ = common.build("lenet300", in_shape, 10, width=w, seed=0)
        res["weights"].append(common.count_weights(base))
        rows = make_rows(base, row_names)
        t0 = time.perf_counter()
        rows[0].step(x, y)
        one = time.perf_counter() - t0
        inner = max(1, math.ceil(args.min_block / max(one, 1e-6)))
        time_rows(rows, x, y, repeats=args.repeats, inner=inner, warmup=args.warmup)
        for row in rows:
            res["median_s"][row.name].append(median(row))
        del rows
        gc.collect()
    res["exponent"] = {n: fit_exponent(res["weights"], ts) for n, ts in res["median_s"].items()}
    # the exponent of what the method adds to the dense step, when it is measurable
    return res


def fit_exponent(n: list[int], t: list[float]) -> float:
    """Least-squares slope of log(time) against log(number of weights)."""
    lx = [math.log(v) for v in n]
    ly = [math.log(v) for v in t]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def table_scaling(res: dict) -> str:
    head = "| row | " + " | ".join(f"{w:g}x ({n:,} w)" for w, n in zip(res["widths"], res["weights"])) \
        + " | exponent |"
    lines = ["### Step time against width (lenet300, batch 256; ms per step)", "", head,
             "|---|" + "---:|" * (len(res["widths"]) + 1)]
    for name, ts in res["median_s"].items():
        lines.append(f"| {name} | " + " | ".join(f"{1000 * t:.2f}" for t in ts)
                     + f" | {res['exponent'][name]:.2f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- scoring
def bench_scoring(args) -> dict | None:
    """SynFlow's iterations, SNIP's and GraSP's scoring pass, against plain forward-backward passes."""
    registered = set(torch_slt.list_methods())
    wanted = [m for m in ("synflow", "snip", "grasp") if m in registered]
    if not wanted:
        return None
    in_shape, batch = MODELS["resnet18"]
    base, _ = common.build("resnet18", in_shape, 10, seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *in_shape, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    data = [(x, y)]
    res: dict = {"model": "resnet18", "batch": batch}

    def plain_passes(model: nn.Module, inputs: torch.Tensor, target, n: int) -> float:
        t0 = time.process_time()
        for _ in range(n):
            model.zero_grad(set_to_none=True)
            out = common.logits_of(model(inputs))
            (F.cross_entropy(out, target) if target is not None else out.sum()).backward()
        return time.process_time() - t0

    # one forward-backward of the training batch (float32, batch 64), for scale
    train_model = copy.deepcopy(base).train()
    plain_passes(train_model, x, y, 1)
    res["train_pass_s"] = statistics.median(plain_passes(train_model, x, y, 1) for _ in range(3))
    del train_model
    results = []
    for name in wanted:
        kwargs = scoring_kwargs(name, data, args)
        n_iter = kwargs.get("iterations", 1)
        for rep in range(args.scoring_repeats):
            model = copy.deepcopy(base)
            t0 = time.process_time()
            torch_slt.apply(model, name, **kwargs)
            t_method = time.process_time() - t0
            ref_model = copy.deepcopy(base)
            if name == "synflow":
                # torch_slt's SynFlow back-propagates sum(output) of one all-ones sample in float64
                ones = torch.ones(1, *in_shape, dtype=torch.float64)
                t_plain = plain_passes(ref_model.double().eval(), ones, None, n_iter)
            else:
                t_plain = plain_passes(ref_model.eval(), x, y, n_iter)
            results.append((name, rep, t_method, t_plain, n_iter))
            del model, ref_model
            gc.collect()
    for name in wanted:
        mine = [r for r in results if r[0] == name]
        t_m = statistics.median(r[2] for r in mine)
        t_p = statistics.median(r[3] for r in mine)
        res[name] = {"iterations": mine[0][4], "method_s": t_m, "plain_s": t_p, "ratio": t_m / t_p,
                     "ratio_to_train_passes": t_m / (mine[0][4] * res["train_pass_s"])}
    return res


def scoring_kwargs(name: str, data, args) -> dict:
    if name == "synflow":
        return {"sparsity": 0.9, "iterations": args.synflow_iterations, "input_shape": MODELS["resnet18"][0]}
    return {"sparsity": 0.9, "data": data}


def table_scoring(res: dict) -> str:
    lines = ["### Scoring cost of the fixed-mask methods that run the network (resnet18, CPU seconds)", "",
             "| method | what is timed | method (s) | plain passes (s) | ratio | vs as many training passes |",
             "|---|---|---:|---:|---|---:|"]
    for name in ("synflow", "snip", "grasp"):
        if name not in res:
            continue
        r = res[name]
        if name == "synflow":
            what = (f"`apply` with {r['iterations']} iterations vs {r['iterations']} forward-backward "
                    f"passes of the same all-ones input")
            target = 1.5
        else:
            what = "`apply` (one scoring pass + top-k) vs one forward-backward pass of the batch"
            target = None
        lines.append(f"| {name} | {what} | {r['method_s']:.2f} | {r['plain_s']:.2f} | "
                     f"{fmt_ratio(r['ratio'], target)} | {r['ratio_to_train_passes']:.2f}x |")
    lines += ["", f"Last column: the method's time over that many forward-backward passes of a float32 "
                  f"training batch of {res['batch']} ({res['train_pass_s']:.2f} s each)."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few repeats and SynFlow iterations (~1-2 min)")
    p.add_argument("--models", default="lenet300,resnet18,vit", help="comma-separated subset")
    p.add_argument("--repeats", type=int, default=None, help="timed blocks per row (default 9; quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per row first (default 2; quick 1)")
    p.add_argument("--min-block", type=float, default=None,
                   help="seconds per timed block; short steps are repeated to reach it (default 0.3)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: steadier on a shared machine; 0 = torch's default)")
    p.add_argument("--widths", default=None, help="lenet300 widths for the scaling fit (default 1,2,4,8; quick 1,2,4)")
    p.add_argument("--synflow-iterations", type=int, default=None, help="default 100; quick 5")
    p.add_argument("--scoring-repeats", type=int, default=None, help="default 2; quick 1")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: models,scaling,scoring")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory column")
    p.add_argument("--no-save", action="store_true", help="print only; do not write bench/results/")
    p.add_argument("--out", default=None, help="output stem (default bench/results/speed[-quick])")
    args = p.parse_args(argv)
    q = args.quick
    defaults = {"repeats": 2 if q else 9, "warmup": 1 if q else 2, "min_block": 0.15 if q else 0.3,
                "synflow_iterations": 5 if q else 100, "scoring_repeats": 1 if q else 2,
                "widths": "1,2,4" if q else "1,2,4,8"}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = common.set_threads(args.threads)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    learned = available_learned()
    missing = [m for m in LEARNED if m not in learned]
    rows = ["dense"] + learned + [REF_SORT]
    started = time.perf_counter()
    header = [f"# Speed and memory benchmark{' (--quick)' if args.quick else ''}", "",
              f"- command: `{common.command_line()}`", f"- date: {common.now_utc()}",
              f"- machine: {common.machine()}",
              f"- torch threads: {threads}; optimizer: Adam for every row (dense: all parameters; "
              f"methods: gates/scores only, weights frozen)"]
    if missing:
        header.append(f"- not registered in this checkout, so not measured: {', '.join(missing)}")
    print("\n".join(header), flush=True)
    results: dict = {"args": vars(args), "threads": threads, "machine": common.machine(),
                     "date": common.now_utc(), "command": common.command_line(), "models": []}
    sections = []
    if "models" not in skip:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            res = bench_model(name, rows, args)
            results["models"].append(res)
            sections.append(table_model(res))
            print("\n" + sections[-1], flush=True)
    if "scaling" not in skip:
        widths = [float(w) for w in args.widths.split(",")]
        res = bench_scaling(["dense"] + learned + [REF_SORT], widths, args)
        results["scaling"] = res
        sections.append(table_scaling(res))
        print("\n" + sections[-1], flush=True)
    if "scoring" not in skip:
        res = bench_scoring(args)
        if res is not None:
            results["scoring"] = res
            sections.append(table_scoring(res))
            print("\n" + sections[-1], flush=True)
    elapsed = time.perf_counter() - started
    results["elapsed_s"] = elapsed
    footer = f"\nTotal wall time: {elapsed:.0f} s."
    print(footer)
    if not args.no_save:
        stem = args.out or str(common.RESULTS_DIR / ("speed-quick" if args.quick else "speed"))
        common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        with open(stem + ".md", "w") as fh:
            fh.write("\n".join(header) + "\n\n" + "\n\n".join(sections) + "\n" + footer + "\n")
        with open(stem + ".json", "w") as fh:
            json.dump(results, fh, indent=1)
        print(f"wrote {stem}.md and {stem}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
