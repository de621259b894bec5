"""Structured tickets (issue 12): channel/head stg tickets, compacted, against the dense network.

Protocol (reduced to fit a shared 2-core CPU; see bench/results/structured.md for what was cut):

* data: Fashion-MNIST (28x28), a --train-size subset of the training set, --test-size test images;
* models, frozen random weights (kaiming-normal from the zoo):
  - ``resnet18``: torch_slt's CIFAR-style ResNet-18 at width 0.25 (16-32-64-128 channels); channel
    gates (``granularity="channel"``) on the first convolution of every basic block (its output
    channels are internal to the block; residual-stream channels stay ungated, since a
    mixed residual group could only keep the union);
  - ``vit``: a Hugging Face ViT (patch 7, 16 tokens, hidden 96, 6 heads, 4 layers, MLP 384); head gates
    (``granularity="head"``) on q/k/v and neuron gates on the MLP's first layer (``fc1``); the residual
    stream (o_proj, fc2, patch embedding) is left ungated for the same reason;
* the random classifier also gets per-weight ``stg`` gates with ``lam=0`` (a readout the ticket can
  learn; it keeps its shape);
* ``stg`` with ``sparsity`` 0.3/0.5/0.7 (fraction of the gated weights removed; lam adapted), Adam
  lr --lr on the gates, --epochs epochs of batch 128;
* finalize, re-estimate BatchNorm statistics on 1024 training images (closed channels -> exactly 0),
  ``torch_slt.compact`` on 64 training images; accuracy of the compact ticket (frozen weights), then
  after --finetune-epochs of Adam (lr 1e-3) on all its surviving weights;
* parameters and MACs from torch-pruning's counter; CPU latency of the dense network and the compact
  ticket at batch 1 and 64, interleaved in one run, one thread, median of --repeats calls.

Run: python bench/structured.py [--models resnet18 vit] [--out bench/results/structured]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import common
import torch_slt
from torch_slt.experiment.data import load_dataset
from torch_slt.structured.compaction import recalibrate_batchnorm

SPARSITIES = (0.3, 0.5, 0.7)


def resnet() -> tuple[nn.Module, dict]:
    model, _ = common.build("resnet18", (1, 28, 28), 10, width=0.25, seed=0)
    targets = lambda name, module: name.endswith(".conv1") and ".layer" in "." + name  # noqa: E731
    return model, {"granularity": "channel", "targets": targets}, "fc"


def vit() -> tuple[nn.Module, dict]:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=96, num_hidden_layers=4,
                    num_attention_heads=6, intermediate_size=384, num_labels=10)
    model = ViTForImageClassification(cfg)
    return model, {"granularity": "head", "targets": ["q_proj", "k_proj", "v_proj", "fc1"]}, "classifier"


BUILDERS = {"resnet18": resnet, "vit": vit}


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return common.logits_of(model(x))


def batches(x, y, size, generator):
    order = torch.randperm(len(x), generator=generator)
    for i in range(0, len(x), size):
        idx = order[i:i + size]
        yield x[idx], y[idx]


def accuracy(model: nn.Module, x, y) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 500):
            correct += int((logits(model, x[i:i + 500]).argmax(1) == y[i:i + 500]).sum())
    return correct / len(x)


def train_gates(model, x, y, epochs, lr, seed) -> None:
    opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for xb, yb in batches(x, y, 128, gen):
            loss = F.cross_entropy(logits(model, xb), yb) + torch_slt.penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def finetune(model, x, y, epochs, seed) -> None:
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for xb, yb in batches(x, y, 128, gen):
            loss = F.cross_entropy(logits(model, xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def latency(dense, small, shape, batch, repeats) -> tuple[float, float]:
    x = torch.randn(batch, *shape)
    td, ts = [], []
    dense.eval(), small.eval()
    with torch.no_grad():
        dense(x), small(x)
        for i in range(repeats):
            pairs = ((dense, td), (small, ts)) if i % 2 == 0 else ((small, ts), (dense, td))
            for model, times in pairs:  # alternating order: neither model always runs first
                start = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(td), statistics.median(ts)


def structured_hooks(model) -> list:
    return [(n, m, h) for n, m, h in torch_slt.gated_tensors(model) if h.granularity != "weight"]


def gated_units(model) -> tuple[int, int]:
    """(closed, total) gates over the gated tensors (channels, neurons or heads)."""
    closed = total = 0
    for _, module, hook in structured_hooks(model):
        gate = module._parameters[f"{hook._tensor_name}_{hook.fields[0]}"]
        kept = hook.hard_mask(module)
        groups = gate.numel()
        frac = float(kept.float().mean())
        total += groups
        closed += round(groups * (1 - frac))
    return closed, total


def out_units(m: nn.Module) -> int:
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features


def physically_removed(dense, small, names) -> dict[str, float]:
    """Per gated layer kind: the fraction of its output units that compact removed."""
    before, after = {}, {}
    dense_mods, small_mods = dict(dense.named_modules()), dict(small.named_modules())
    for name in names:
        kind = name.rsplit(".", 1)[-1]
        d, s = dense_mods[name], small_mods[name]
        before[kind] = before.get(kind, 0) + out_units(d)
        after[kind] = after.get(kind, 0) + out_units(s)
    return {k: 1 - after[k] / before[k] for k in before}


def run(name, args, data) -> list[dict]:
    xtr, ytr, xte, yte = data
    dense, settings, head = BUILDERS[name]()
    dense.eval()
    rows = []
    for sparsity in SPARSITIES:
        torch.manual_seed(args.seed)
        model = torch_slt.apply(copy.deepcopy(dense), "stg", sparsity=sparsity, **settings)
        # The frozen random classifier gets per-weight gates without penalty (lam=0): a strong ticket
        # needs a trainable readout; it does not change the network's shape.
        torch_slt.apply(model, "stg", targets=head, lam=0.0)
        start = time.perf_counter()
        train_gates(model, xtr, ytr, args.epochs, args.lr, args.seed)
        train_s = time.perf_counter() - start
        model.eval()
        closed, total = gated_units(model)
        gated_names_before = [n for n, _, _ in structured_hooks(model)]
        weight_sparsity = 1 - sum(int(h.hard_mask(m).sum()) for _, m, h in structured_hooks(model)) / sum(
            h.hard_mask(m).numel() for _, m, h in structured_hooks(model))
        torch_slt.finalize(model)
        recalibrate_batchnorm(model, [xtr[i:i + 256] for i in range(0, 1024, 256)])
        model.eval()
        acc_ticket = accuracy(model, xte, yte)
        small = torch_slt.compact(model, xtr[:64], return_report=False)
        rep = small.compact_report
        removed = physically_removed(dense, small, gated_names_before)
        acc_compact = accuracy(small, xte, yte)
        lat = {b: latency(dense, small, tuple(xtr.shape[1:]), b, args.repeats if b == 1 else
                          max(6, args.repeats // 5)) for b in (1, 64)}
        tuned = copy.deepcopy(small)
        finetune(tuned, xtr, ytr, args.finetune_epochs, args.seed)
        acc_tuned = accuracy(tuned, xte, yte)
        row = {"model": name, "target_sparsity": sparsity, "weight_sparsity": weight_sparsity,
               "units_closed": closed, "units_gated": total, "removed_fraction": removed,
               "acc_ticket": acc_ticket,
               "acc_compact": acc_compact, "acc_finetuned": acc_tuned,
               "params_dense": rep.params_before, "params_compact": rep.params_after,
               "macs_dense": rep.macs_before, "macs_compact": rep.macs_after, "mac_ratio": rep.mac_ratio,
               "max_abs_diff": rep.max_abs_diff, "kept_notes": rep.kept, "train_s": train_s}
        for b, (d, s) in lat.items():
            row[f"dense_ms_b{b}"], row[f"compact_ms_b{b}"] = d, s
            row[f"latency_ratio_b{b}"] = s / d
            # Target: latency ratio no worse than the MAC ratio by more than 20% (speedup >= 0.8x predicted).
            row[f"meets_target_b{b}"] = (d / s) >= 0.8 * (1.0 / rep.mac_ratio)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "kept_notes"}), flush=True)
    return rows


NOTES = """
What the issue asked and what was cut (2 CPU cores shared by several jobs; ~15 CPU-minutes for this run):

- training: 8000 Fashion-MNIST training images (of 54000), 4 epochs of gate training, 1 epoch of
  fine-tuning, 2000 test images; no repeats over seeds, so accuracies are +-1-2 points;
- "30/50/70% of channels removed" is the stg ``sparsity`` target on the *gated weights*; the columns give
  the units actually removed. For the ViT the target is shared by the head gates (q/k/v) and the fc1
  neuron gates, and a head is removed only when its value projection is closed (a closed query or key
  alone changes the attention pattern, so that head is kept), so fewer heads than fc1 neurons go;
- only units whose removal is exact are gated: inner block channels (ResNet), heads and fc1 (ViT).
  Residual-stream channels would need the same closed channel in every block writing to it;
- latency: median of 100 (batch 1) and 20 (batch 64) interleaved calls, alternating order, one thread.
  "target met" = the measured speedup is at least 0.8x the MAC ratio's prediction (1 / MAC ratio).
"""


def write_markdown(header: dict, rows: list[dict], path: str) -> None:
    lines = ["# Structured tickets: compact vs dense\n", f"`{header['command']}`  ", f"{header['machine']}  ",
             f"{header['date']}\n",
             "| model | target | closed gates | removed (per gated layer kind) | acc ticket | acc compact "
             "| acc fine-tuned | params | MACs | MAC ratio | latency ratio b1 | b64 | target met b1/b64 |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['target_sparsity']} | {r['units_closed']}/{r['units_gated']} "
            f"| {', '.join(f'{k} {v:.0%}' for k, v in r['removed_fraction'].items())} "
            f"| {r['acc_ticket']:.3f} | {r['acc_compact']:.3f} | {r['acc_finetuned']:.3f} "
            f"| {r['params_dense']} -> {r['params_compact']} "
            f"| {r['macs_dense']:.3g} -> {r['macs_compact']:.3g} "
            f"| {r['mac_ratio']:.3f} | {r['latency_ratio_b1']:.3f} | {r['latency_ratio_b64']:.3f} "
            f"| {'yes' if r['meets_target_b1'] else 'no'}/{'yes' if r['meets_target_b64'] else 'no'} |")
    lines.append(NOTES)
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BUILDERS))
    parser.add_argument("--train-size", type=int, default=6000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(common.RESULTS_DIR / "structured"))
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md from the saved .json")
    args = parser.parse_args(argv)
    if args.report_only:
        with open(args.out + ".json") as fh:
            saved = json.load(fh)
        write_markdown(saved, saved["rows"], args.out + ".md")
        return 0
    common.set_threads(1)
    splits = load_dataset("fashion-mnist")
    xtr, ytr = splits.train.tensors()
    xte, yte = splits.test.tensors()
    gen = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(len(xtr), generator=gen)[:args.train_size]
    data = (xtr[pick], ytr[pick], xte[:args.test_size], yte[:args.test_size])
    rows = [r for name in args.models for r in run(name, args, data)]
    header = {"command": common.command_line(), "machine": common.machine(), "date": common.now_utc(),
              "args": vars(args)}
    with open(args.out + ".json", "w") as fh:
        json.dump({**header, "rows": rows}, fh, indent=1)
    write_markdown(header, rows, args.out + ".md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
