"""The gate engine on a CPU: cost of a sparsity target, and compiled against eager training steps.

    python bench/engine.py           # writes bench/results/engine.md (a few CPU-minutes, one thread)
    python bench/engine.py --quick   # seconds (the test suite runs it)

Part 1, a deep model: eval forward and training step of 96 ``Linear(64, 64)`` layers with a sparsity
target against the same model with ``lam=`` (the target makes one selection for all 96 layers, so its
cost must stay linear in the number of layers; goal: eval forward within 1.5x of ``lam=``).

Part 2, ``torch.compile``: the training step of lenet300 (batch 256) and of a narrow ResNet-18 with the
CIFAR stem (batch 32), dense and gated (``stg`` with ``lam=`` and with a target, ``hardconcrete`` with a
target, ``edgepopup``), eager and compiled with inductor, each ratio against dense in the same mode.

Timing: rows interleaved in a fresh random order per repeat, median of the process CPU time per step
(one torch thread), so a busy machine slows every row alike.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's torch_slt
import common  # noqa: E402
import torch_slt  # noqa: E402

GATED = {
    "dense": (None, {}),
    "stg (lam=0.1)": ("stg", {"lam": 0.1}),
    "stg (sparsity=0.9)": ("stg", {"sparsity": 0.9, "total_steps": 1000}),
    "hardconcrete (sparsity=0.9)": ("hardconcrete", {"sparsity": 0.9, "total_steps": 1000}),
    "edgepopup (sparsity=0.5)": ("edgepopup", {"sparsity": 0.5}),
}


def _cpu_time_per_call(fn, inner: int) -> float:
    start = time.process_time()
    for _ in range(inner):
        fn()
    return (time.process_time() - start) / inner


def interleaved(rows: dict[str, callable], repeats: int, inner: int) -> dict[str, float]:
    """Median CPU seconds per call of each row, the rows run in a fresh random order per repeat."""
    for fn in rows.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in rows}
    names = list(rows)
    for repeat in range(repeats):
        random.Random(repeat).shuffle(names)
        for name in names:
            samples[name].append(_cpu_time_per_call(rows[name], inner))
    return {name: statistics.median(values) for name, values in samples.items()}


# ------------------------------------------------------------------------------ part 1: 96 layers
def deep(kwargs: dict, layers: int) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(64, 64), nn.ReLU())])
    return torch_slt.apply(model, "stg", **kwargs)


def _train_step(model: nn.Module, x: torch.Tensor, forward=None):
    forward = forward or model
    opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=1e-3)

    def step() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        (forward(x).square().mean() + torch_slt.penalty(model)).backward()
        opt.step()
    return step


def part_deep(args) -> str:
    x = torch.randn(32, 64)
    models = {"lam=0.1": deep({"lam": 0.1}, args.layers),
              "sparsity=0.9": deep({"sparsity": 0.9, "total_steps": 1000}, args.layers)}
    evals, steps = {}, {}
    for name, model in models.items():
        def forward(model=model) -> None:
            model.eval()
            with torch.no_grad():
                model(x)
        evals[name] = forward
        steps[name] = _train_step(model, x)
    t_eval = interleaved(evals, args.repeats, args.inner)
    t_step = interleaved(steps, args.repeats, max(1, args.inner // 4))
    ratio_eval = t_eval["sparsity=0.9"] / t_eval["lam=0.1"]
    ratio_step = t_step["sparsity=0.9"] / t_step["lam=0.1"]
    return "\n".join([
        f"## {args.layers} layers of Linear(64, 64), batch 32: a target against lam=", "",
        "| | lam=0.1 (ms) | sparsity=0.9 (ms) | ratio | goal |", "|---|---:|---:|---:|---|",
        f"| eval forward | {t_eval['lam=0.1'] * 1e3:.2f} | {t_eval['sparsity=0.9'] * 1e3:.2f} | "
        f"{ratio_eval:.2f}x | <= 1.5x: {'met' if ratio_eval <= 1.5 else 'missed'} |",
        f"| training step | {t_step['lam=0.1'] * 1e3:.2f} | {t_step['sparsity=0.9'] * 1e3:.2f} | "
        f"{ratio_step:.2f}x | |", ""])


# ------------------------------------------------------------------------------ part 2: compile
def _model(name: str, quick: bool) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    if name == "lenet300":
        model, _ = common.build("lenet300", (1, 28, 28))
        batch, shape = (32 if quick else 256), (1, 28, 28)
    elif name == "vit":   # the zoo's ViT (6 layers, hidden 192 at width 1; patch 4 on 32x32)
        model, _ = common.build("vit", (3, 32, 32), width=0.25 if quick else 1.0)
        batch, shape = (4 if quick else 32), (3, 32, 32)
    else:
        model, _ = common.build("resnet18", (3, 32, 32), width=0.125 if quick else 0.25)
        batch, shape = (4 if quick else 32), (3, 32, 32)
    g = torch.Generator().manual_seed(0)
    return model, torch.randn(batch, *shape, generator=g), torch.randint(0, 10, (batch,), generator=g)


def part_compile(args) -> str:
    lines = ["## torch.compile against eager: training step", "",
             "| model | row | eager (ms) | eager vs dense | compiled (ms) | compiled vs dense | "
             "compiled vs eager |", "|---|---|---:|---:|---:|---:|---:|"]
    for model_name in args.models.split(","):
        steps: dict[str, callable] = {}
        for row, (method, kwargs) in GATED.items():
            for compiled in (False, True):
                torch.manual_seed(0)
                model, x, y = _model(model_name, args.quick)
                params = list(model.parameters())
                if method is not None:
                    torch_slt.apply(model, method, **kwargs)
                    params = list(torch_slt.mask_parameters(model))
                forward = torch.compile(model, backend=args.backend) if compiled else model
                opt = torch.optim.Adam(params, lr=1e-3)

                def step(model=model, forward=forward, opt=opt, x=x, y=y, penalty=method is not None):
                    model.train()
                    opt.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(common.logits_of(forward(x)), y)
                    (loss + torch_slt.penalty(model) if penalty else loss).backward()
                    opt.step()
                for _ in range(2):        # compile (the first step, then the steady graph)
                    step()
                steps[(row, compiled)] = step
        times = interleaved(steps, args.repeats, args.inner_compile)
        for row in GATED:
            eager, comp = times[(row, False)], times[(row, True)]
            lines.append(f"| {model_name} | {row} | {eager * 1e3:.2f} | {eager / times[('dense', False)]:.2f}x | "
                         f"{comp * 1e3:.2f} | {comp / times[('dense', True)]:.2f}x | {comp / eager:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--layers", type=int, default=None, help="default 96; quick 12")
    p.add_argument("--models", default=None, help="lenet300, resnet18, vit; default lenet300,resnet18; quick lenet300")
    p.add_argument("--backend", default=None, help="default inductor; quick eager")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.layers = args.layers or (12 if args.quick else 96)
    args.models = args.models or ("lenet300" if args.quick else "lenet300,resnet18")
    args.backend = args.backend or ("eager" if args.quick else "inductor")
    args.repeats, args.inner, args.inner_compile = (1, 2, 1) if args.quick else (7, 20, 5)
    common.set_threads(1)
    text = (f"# The gate engine on a CPU\n\nCommand: `python bench/engine.py {' '.join(argv or sys.argv[1:])}` "
            f"({common.machine()}, {common.now_utc()})\n\n" + part_deep(args) + "\n" + part_compile(args))
    out = Path(args.out) if args.out else common.RESULTS_DIR / ("engine-quick.md" if args.quick else "engine.md")
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
