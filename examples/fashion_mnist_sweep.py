"""Sweep methods x sparsities on one random lenet300 (300-100) on Fashion-MNIST, plus dense.

The library pieces behind ``torch-slt sweep``, used directly: one random network from a seed
(:func:`torch_slt.experiment.zoo.build_model`), each method applied to a fresh copy of it, trained with
:func:`torch_slt.experiment.train.fit` (stg's masks on the frozen weights: a strong ticket; the one-shot
methods' masks are fixed at ``apply``, so ``fit`` trains their surviving weights: pruning at
initialisation), accuracy against sparsity plotted with
:func:`torch_slt.experiment.plots.plot_accuracy_vs_sparsity`.

Fashion-MNIST comes from the Debian package (``apt-get install dataset-fashion-mnist``, files in
``/usr/share/datasets/fashion-mnist``) or ``--data-dir``::

    python examples/fashion_mnist_sweep.py                      # stg, magnitude, snip x 0.5 .. 0.95
    python examples/fashion_mnist_sweep.py --methods stg,edgepopup --epochs 20
    python examples/fashion_mnist_sweep.py --smoke              # 1 epoch on 512 images
"""

import argparse
from pathlib import Path

import torch

import torch_slt
from torch_slt.experiment.data import load_dataset
from torch_slt.experiment.plots import plot_accuracy_vs_sparsity
from torch_slt.experiment.train import TrainConfig, accuracy, fit
from torch_slt.experiment.zoo import ModelSpec, build_model


def run(spec, splits, method, sparsity, epochs):
    model = build_model(spec)                     # the same random weights for every run
    if method is not None:
        torch_slt.apply(model, method, sparsity=sparsity, **_extra(method, splits))
    fit(model, splits.train, splits.val, TrainConfig(epochs=epochs, seed=spec.seed, quiet=True))
    if method is not None:
        torch_slt.finalize(model)
    return {"method": method or "dense", "sparsity": torch_slt.report(model).sparsity if method else 0.0,
            "accuracy": accuracy(model, splits.test)}


def _extra(method, splits):
    """SNIP and GraSP score the weights on one batch: 10 training images per class."""
    if method not in ("snip", "grasp"):
        return {}
    x, y = splits.train.tensors()
    return {"data": (x[:100], y[:100])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default), mnist or digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--methods", default="stg,magnitude,snip")
    parser.add_argument("--sparsities", default="0.5,0.7,0.9,0.95")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="runs/fashion_mnist_sweep")
    parser.add_argument("--smoke", action="store_true", help="1 epoch on 512 training images, 2 sparsities")
    args = parser.parse_args(argv)
    sparsities = [float(s) for s in args.sparsities.split(",")]
    splits = load_dataset(args.dataset, args.data_dir)
    epochs = args.epochs
    if args.smoke:
        splits.train = splits.train.subset(torch.arange(min(512, len(splits.train))))
        sparsities, epochs = sparsities[::3][:2], 1
    spec = ModelSpec("lenet300", splits.in_shape, splits.num_classes, seed=0)

    rows = []
    for method in args.methods.split(","):
        for sparsity in sparsities:
            rows.append(run(spec, splits, method, sparsity, epochs))
            print(f"{method:>10} at {sparsity:.0%}: test {rows[-1]['accuracy']:.2%} "
                  f"(sparsity reached {rows[-1]['sparsity']:.2%})")
    dense = run(spec, splits, None, None, epochs)
    print(f"{'dense':>10}: test {dense['accuracy']:.2%}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = plot_accuracy_vs_sparsity(rows, Path(args.out) / "curve.png", dense_accuracy=dense["accuracy"],
                                     title=f"lenet300 on {args.dataset}, {epochs} epochs")
    print(f"plot: {path}")
    return rows, dense


if __name__ == "__main__":
    main()
