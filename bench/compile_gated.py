"""What torch.compile costs and buys on a gated model (CPU): compile time, train-step time vs eager.

    python bench/compile_gated.py                  # inductor, LeNet-300-100 on 784-d inputs, batch 256
    python bench/compile_gated.py --threads 1 --fallback-random
    python bench/compile_gated.py --backend aot_eager --steps 20

Prints one JSON object: graph breaks (torch._dynamo.explain, train and eval mode), the first compiled
step (compile included), and the median train-step time of the dense model, the gated model in eager
mode and the gated model compiled. Timings are wall clock on whatever CPU runs it; compare ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

import torch_slt


def make(gated: bool) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    return torch_slt.apply(model, "stg", lam=0.1) if gated else model


def step_times(model: nn.Module, forward, x, y, steps: int) -> tuple[float, list[float]]:
    params = list(torch_slt.mask_parameters(model)) if torch_slt.is_gated(model) else list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    model.train()
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(forward(x), y)
        if torch_slt.is_gated(model):
            loss = loss + torch_slt.penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return times[0], times[1:]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--fallback-random", action="store_true",
                        help="inductor draws the gate noise with the eager generator (bit-comparable runs)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fallback_random:
        import torch._inductor.config as inductor_config

        inductor_config.fallback_random = True
    torch.manual_seed(1)
    x, y = torch.randn(args.batch, 784), torch.randint(0, 10, (args.batch,))

    gated = make(True)
    breaks = {}
    for mode in ("train", "eval"):
        getattr(gated, mode)()
        breaks[mode] = torch._dynamo.explain(gated)(x).graph_break_count
    torch._dynamo.reset()

    dense = make(False)
    _, dense_t = step_times(dense, dense, x, y, args.steps)
    eager = make(True)
    _, eager_t = step_times(eager, eager, x, y, args.steps)
    compiled = make(True)
    first, compiled_t = step_times(compiled, torch.compile(compiled, backend=args.backend), x, y, args.steps)
    med = {k: statistics.median(v) for k, v in (("dense", dense_t), ("eager", eager_t), ("compiled", compiled_t))}
    result = {
        "backend": args.backend, "batch": args.batch, "threads": torch.get_num_threads(),
        "fallback_random": args.fallback_random,
        "graph_breaks": breaks, "first_compiled_step_s": round(first, 2),
        "step_ms": {k: round(v * 1e3, 3) for k, v in med.items()},
        "gated_eager_over_dense": round(med["eager"] / med["dense"], 2),
        "gated_compiled_over_eager": round(med["compiled"] / med["eager"], 2),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
