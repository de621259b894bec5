"""Cost of the non-finite gate check (issue 14) against the training it guards.

The check (``torch_slt.core.health.nonfinite_gates``) reads every gate tensor once and waits for the
device once. It runs at ``finalize``, ``report`` and the end of every ``fit`` epoch, never per step.
This script measures, side by side in one run and one thread: the check, one training step (forward,
loss + penalty, backward, Adam step) and a full ``penalty`` call, and prints the check's cost as a
fraction of one step and of one Fashion-MNIST / CIFAR-10 epoch at the CLI's default batch size (64).

    python bench/finite_check.py            # writes bench/results/finite_check.{json,md}
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

import common
import torch_slt
from torch_slt.core.health import nonfinite_gates

CASES = (("lenet300", (1, 28, 28), 60000), ("resnet18", (3, 32, 32), 50000))


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name: str, in_shape: tuple[int, int, int], train_size: int, batch: int, repeats: int) -> dict:
    model, source = common.build(name, in_shape)
    torch_slt.apply(model, "stg", lam=0.1)
    opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=1e-2)
    x, y = torch.randn(batch, *in_shape), torch.randint(0, 10, (batch,))
    model.train()

    def step() -> None:
        loss = nn.functional.cross_entropy(common.logits_of(model(x)), y) + torch_slt.penalty(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_step = median_time(step, repeats)
    t_check = median_time(lambda: nonfinite_gates(model), repeats * 4)
    steps_per_epoch = -(-train_size // batch)
    return {"model": name, "source": source, "gates": sum(p.numel() for p in torch_slt.mask_parameters(model)),
            "batch": batch, "check_ms": t_check * 1e3, "step_ms": t_step * 1e3,
            "check_over_step": t_check / t_step,
            "check_over_epoch": t_check / (t_step * steps_per_epoch), "steps_per_epoch": steps_per_epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    common.set_threads(args.threads)
    rows = [measure(n, s, size, args.batch, args.repeats) for n, s, size in CASES]
    lines = [f"Non-finite gate check vs training, {common.now_utc()}; {common.machine()}",
             f"`{common.command_line()}`", "",
             "| model | gates | check (ms) | train step (ms) | check / step | check / epoch |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['gates']:,} | {r['check_ms']:.2f} | {r['step_ms']:.1f} | "
              f"{r['check_over_step']:.2%} | {r['check_over_epoch']:.4%} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        (common.RESULTS_DIR / "finite_check.md").write_text(text + "\n")
        (common.RESULTS_DIR / "finite_check.json").write_text(json.dumps(
            {"machine": common.machine(), "command": common.command_line(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
