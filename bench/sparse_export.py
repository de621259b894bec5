"""Sparse export (issue 12): inference latency of dense vs CSR-exported tickets, one CPU thread.

Models: lenet300 (784-300-100-10, Fashion-MNIST-sized input) and a 4096x4096 MLP
(Linear(4096, 4096) -> ReLU -> Linear(4096, 4096) -> ReLU -> Linear(4096, 10)). Each is pruned with
global magnitude (unstructured) at 0.5/0.9/0.95/0.99 sparsity and finalized; then the dense model and
``torch_slt.to_sparse(check_speed=False)`` (every layer in CSR) are timed interleaved in the same run
at batch 1 and 64 (median of --repeats calls). A last column gives what ``to_sparse`` keeps with its
default ``check_speed=True`` (it times each layer and keeps the faster form).

Run: python bench/sparse_export.py [--repeats 30] [--out bench/results/sparse_export]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings

import torch
from torch import nn

import common
import torch_slt

SPARSITIES = (0.5, 0.9, 0.95, 0.99)


def models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    lenet = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                          nn.Linear(100, 10))
    big = nn.Sequential(nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                        nn.Linear(4096, 10))
    return {"lenet300": (lenet, (1, 28, 28)), "mlp4096": (big, (4096,))}


def interleaved_ms(a: nn.Module, b: nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    ta, tb = [], []
    with torch.no_grad():
        a(x), b(x)
        for _ in range(repeats):
            for model, times in ((a, ta), (b, tb)):
                start = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(ta), statistics.median(tb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=str(common.RESULTS_DIR / "sparse_export"))
    args = parser.parse_args(argv)
    common.set_threads(1)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    rows = []
    for name, (base, shape) in models().items():
        for sparsity in SPARSITIES:
            dense = torch_slt.finalize(torch_slt.apply(copy.deepcopy(base), "magnitude", sparsity=sparsity,
                                                       scope="layer"))
            exported = torch_slt.to_sparse(copy.deepcopy(dense), min_sparsity=0.0, check_speed=False,
                                           return_report=False)
            for batch in (1, 64):
                x = torch.randn(batch, *shape)
                with torch.no_grad():
                    err = float((exported(x) - dense(x)).abs().max())
                d_ms, s_ms = interleaved_ms(dense, exported, x, args.repeats)
                rep = torch_slt.to_sparse(copy.deepcopy(dense), min_sparsity=0.0, batch_size=batch,
                                         return_report=False).sparse_export_report
                rows.append({"model": name, "sparsity": sparsity, "batch": batch, "dense_ms": d_ms,
                             "csr_ms": s_ms, "speedup": d_ms / s_ms, "max_abs_err": err,
                             "auto_csr_layers": f"{len(rep.converted)}/{len(rep.layers)}"})
                print(f"{name:9s} s={sparsity:.2f} b={batch:2d} dense {d_ms:8.3f} ms  csr {s_ms:8.3f} ms  "
                      f"x{d_ms / s_ms:5.2f}  auto: {rows[-1]['auto_csr_layers']} CSR", flush=True)
    header = {"command": common.command_line(), "machine": common.machine(), "date": common.now_utc()}
    with open(args.out + ".json", "w") as fh:
        json.dump({**header, "rows": rows}, fh, indent=1)
    lines = ["# Sparse export: dense vs CSR latency\n", f"`{header['command']}`  ", f"{header['machine']}  ",
             f"{header['date']}, median of {args.repeats} interleaved calls, one thread.\n",
             "| model | sparsity | batch | dense ms | CSR ms | speedup | to_sparse keeps CSR |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['sparsity']} | {r['batch']} | {r['dense_ms']:.3f} "
                     f"| {r['csr_ms']:.3f} "
                     f"| {r['speedup']:.2f}x | {r['auto_csr_layers']} layers |")
    with open(args.out + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
