"""Helpers shared by the benchmark scripts (models, machine description, output files).

The scripts are run as ``python bench/<name>.py``; Python puts ``bench/`` on ``sys.path``, so they import
this module as ``common``. Nothing here is part of the ``torch_slt`` package.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def set_threads(threads: int) -> int:
    """Pin torch's intra-op threads (the benchmarks default to 1: steadier on a shared machine)."""
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def machine() -> str:
    """One line describing where the numbers came from."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread(s), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])


def logits_of(output: Any) -> torch.Tensor:
    """Logits from a plain tensor or a Hugging Face ``ModelOutput``."""
    return output if isinstance(output, torch.Tensor) else output.logits


# ---------------------------------------------------------------------------------------------- models
def build(name: str, in_shape: tuple[int, int, int], num_classes: int = 10, *, width: float = 1.0,
          seed: int = 0, init: str = "kaiming-normal") -> tuple[nn.Module, str]:
    """The benchmark model from ``torch_slt.experiment.zoo``; returns ``(model, source)``.

    Falls back to an equivalent model built here only when ``torch_slt.experiment.zoo`` cannot be imported (so the
    script also runs against an older checkout); the returned source says which one was used.
    """
    try:
        from torch_slt.experiment.zoo import ModelSpec, build_model
    except ImportError:
        return _fallback(name, in_shape, num_classes, width, seed), "bench fallback"
    spec = ModelSpec(name=name, in_shape=tuple(in_shape), num_classes=num_classes, width=width,
                     init=init, seed=seed)
    return build_model(spec), "torch_slt.experiment.zoo"


def _fallback(name: str, in_shape, num_classes: int, width: float, seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if name == "lenet300":
            h1, h2 = round(300 * width), round(100 * width)
            c, h, w = in_shape
            return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, h1), nn.ReLU(), nn.Linear(h1, h2),
                                 nn.ReLU(), nn.Linear(h2, num_classes))
        if name == "resnet18":
            import torchvision
            model = torchvision.models.resnet18(num_classes=num_classes)
            model.conv1 = nn.Conv2d(in_shape[0], 64, 3, 1, 1, bias=False)
            model.maxpool = nn.Identity()
            return model
        if name == "vit":
            from transformers import ViTConfig, ViTForImageClassification
            cfg = ViTConfig(image_size=in_shape[1], patch_size=4, num_channels=in_shape[0], hidden_size=192,
                            num_hidden_layers=6, num_attention_heads=3, intermediate_size=768,
                            num_labels=num_classes)
            return ViTForImageClassification(cfg)
    raise ValueError(f"no fallback builder for model {name!r}")


def count_weights(model: nn.Module) -> int:
    """Number of weights in the default torch_slt targets (Linear / Conv / transformers Conv1D)."""
    from torch_slt.core.targets import is_default_target

    total = 0
    for module in model.modules():
        if is_default_target(module):
            w = module._parameters.get("weight_orig", module._parameters.get("weight"))
            total += w.numel()
    return total


def user_loop(model, x, y, opt, sched, epochs: int, batch: int, generator) -> None:
    """The training loop a user writes: shuffled mini-batches, ``loss + torch_slt.penalty(model)``, an
    optimiser step and (when given) a scheduler step per batch. Leaves the model in train mode."""
    import torch
    import torch.nn.functional as F

    import torch_slt

    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=generator).split(batch):
            loss = F.cross_entropy(model(x[idx]), y[idx]) + torch_slt.penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()


def load_cells(path: Path, merge: list[str], cell_type: type) -> list:
    """The cells saved at ``path`` (none if it does not exist) and those of every JSON file in ``merge``."""
    import json

    files = ([path] if path.exists() else []) + [Path(m) for m in merge]
    return [cell_type(**c) for f in files for c in json.loads(f.read_text())["cells"]]


def run_cells(todo: list, run, describe, path: Path, cells: list, tag: str) -> None:
    """Run every cell of ``todo`` (``run(cell) -> cell``), append it to ``cells``, print ``describe(cell)``
    and save the JSON after each one, so an interrupted run keeps what it measured."""
    import sys

    for i, cell in enumerate(todo, 1):
        cells.append(run(cell))
        print(f"[{tag} {i}/{len(todo)}] {describe(cell)}", file=sys.stderr, flush=True)
        save_cells(path, cells)


def write_report(path: Path, cells: list, stem: Path, markdown, figures) -> None:
    """Save ``cells``, write ``<stem>.md`` (``markdown(cells, meta)``) and the figures, print the table."""
    meta = save_cells(path, cells)
    stem.with_suffix(".md").write_text(markdown(cells, meta) + "\n")
    figures(cells, stem)
    print(stem.with_suffix(".md").read_text())


def save_cells(path: Path, cells: list) -> dict[str, str]:
    """Write ``cells`` (dataclasses) with this run's command, date and machine; returns that metadata."""
    import json
    from dataclasses import asdict

    meta = {"command": command_line(), "date": now_utc(), "machine": machine()}
    path.write_text(json.dumps({"meta": meta, "cells": [asdict(c) for c in cells]}, indent=1))
    return meta
