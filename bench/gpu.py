"""The GPU benchmark: gated training steps against dense, eager and compiled, fp32 and bf16.

One prepared script for a lent GPU (one call of the device tool, under 8 minutes):

    python bench/gpu.py                       # on a CUDA machine: writes bench/results/gpu.md
    python bench/gpu.py --smoke --out /tmp/g  # anywhere: tiny models, CPU, seconds (the test suite runs it)

Rows: dense (every parameter trained), ``stg`` (``lam=``), ``stg`` with a sparsity target,
``hardconcrete``, ``edgepopup`` and ``supermask`` (frozen weights, Adam on the gates); models: a
ResNet-18 with the CIFAR stem and a ViT-S/4 on 32x32 inputs (timm, ``pretrained=False``), batch 128;
each in eager mode and under ``torch.compile`` (inductor), in fp32 and in bf16 autocast. Columns:
median step time (CUDA events around ``zero_grad``, forward, loss, backward, optimizer step) and its
ratio to dense in the same setting, peak memory of a step and its ratio. The goal is every gated step
within 1.05x of the dense step. Configurations run in priority order (eager before compiled, fp32
before bf16); ``--budget-s`` stops before the time runs out and the table says what was skipped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's torch_slt
import torch_slt  # noqa: E402

ROWS: dict[str, tuple[str | None, dict]] = {
    "dense": (None, {}),
    "stg (lam=0.1)": ("stg", {"lam": 0.1}),
    "stg (sparsity=0.9)": ("stg", {"sparsity": 0.9, "total_steps": 1000}),
    "hardconcrete": ("hardconcrete", {}),
    "edgepopup": ("edgepopup", {"sparsity": 0.5}),
    "supermask": ("supermask", {}),
}


@dataclass
class Setting:
    model: str
    compiled: bool
    precision: str

    @property
    def label(self) -> str:
        return f"{self.model}, {'compiled' if self.compiled else 'eager'}, {self.precision}"


def build(name: str, smoke: bool) -> nn.Module:
    if name == "resnet18":
        from torch_slt.experiment.zoo import ModelSpec, build_model

        return build_model(ModelSpec("resnet18", (3, 32, 32), 10, width=0.125 if smoke else 1.0, seed=0))
    import timm

    if smoke:
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8,
                                 depth=2, num_classes=10)
    return timm.create_model("vit_small_patch16_224", pretrained=False, img_size=32, patch_size=4,
                             num_classes=10)


def gated(name: str, row: str, device: torch.device, smoke: bool) -> tuple[nn.Module, list]:
    torch.manual_seed(0)
    model = build(name, smoke).to(device)
    method, kwargs = ROWS[row]
    if method is None:
        return model, list(model.parameters())
    torch_slt.apply(model, method, **kwargs)
    return model, list(torch_slt.mask_parameters(model))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(setting: Setting, row: str, args, device: torch.device) -> dict:
    model, params = gated(setting.model, row, device, args.smoke)
    opt = torch.optim.Adam(params, lr=1e-3)
    forward = model
    if setting.compiled:
        torch._dynamo.reset()
        forward = torch.compile(model, backend=args.backend)
    size = 16 if args.smoke and setting.model == "vit" else 32
    x = torch.randn(args.batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    dtype = torch.bfloat16 if setting.precision == "bf16" else None
    penalty = ROWS[row][0] is not None
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = forward(x)
            loss = F.cross_entropy(out.float(), y)
        if penalty:
            loss = loss + torch_slt.penalty(model)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    return {"row": row, "median_s": statistics.median(times), "peak_bytes": peak}


def settings(args) -> list[Setting]:
    order = [(False, "fp32"), (False, "bf16"), (True, "fp32"), (True, "bf16")]
    if args.smoke:
        order = [(False, "fp32"), (True, "fp32")]
    return [Setting(m, c, p) for c, p in order for m in args.models.split(",")]


def table(results: list[tuple[Setting, list[dict]]], skipped: list[str], device: str) -> str:
    lines = [f"Device: {device}. Median step time; ratio to the dense step of the same setting "
             f"(goal: <= 1.05x).", "",
             "| setting | row | step (ms) | vs dense | peak memory (MiB) | vs dense |",
             "|---|---|---:|---:|---:|---:|"]
    for setting, rows in results:
        dense = rows[0]
        for r in rows:
            mem = r["peak_bytes"] / 2**20
            mem_ratio = f"{r['peak_bytes'] / dense['peak_bytes']:.2f}x" if dense["peak_bytes"] else "-"
            lines.append(f"| {setting.label} | {r['row']} | {r['median_s'] * 1e3:.2f} | "
                         f"{r['median_s'] / dense['median_s']:.3f}x | {mem:.0f} | {mem_ratio} |")
    if skipped:
        lines += ["", "Skipped (time budget): " + "; ".join(skipped)]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny models, a few steps, on the CPU if no GPU")
    p.add_argument("--models", default="resnet18,vit")
    p.add_argument("--batch", type=int, default=None, help="default 128; smoke 4")
    p.add_argument("--steps", type=int, default=None, help="timed steps per row (default 20; smoke 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5; smoke 1)")
    p.add_argument("--backend", default=None, help="torch.compile backend (default inductor; smoke eager)")
    p.add_argument("--budget-s", type=float, default=450.0, help="stop starting settings after this long")
    p.add_argument("--out", default=None, help="output file (default bench/results/gpu.md)")
    args = p.parse_args(argv)
    args.batch = args.batch or (4 if args.smoke else 128)
    args.steps = args.steps or (1 if args.smoke else 20)
    args.warmup = args.warmup or (1 if args.smoke else 5)
    args.backend = args.backend or ("eager" if args.smoke else "inductor")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.smoke:
        print("bench/gpu.py: no CUDA device; run it on a GPU, or with --smoke here", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    started, results, skipped = time.monotonic(), [], []
    for setting in settings(args):
        if time.monotonic() - started > args.budget_s:
            skipped.append(setting.label)
            continue
        rows = [measure(setting, row, args, device) for row in ROWS]
        results.append((setting, rows))
        print(f"done: {setting.label} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (smoke)"
    text = table(results, skipped, f"{name}, torch {torch.__version__}")
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / "gpu.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# GPU benchmark\n\nCommand: `python bench/gpu.py {' '.join(argv or sys.argv[1:])}`\n\n"
                   + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
