"""A strong ticket in a random ResNet-18 (CIFAR stem) on CIFAR-10, read from ``--data-dir``.

CIFAR-10 is expected in torchvision's layout (``DATA_DIR/cifar-10-batches-py``); pass ``--download``
to fetch it there. Nothing is downloaded otherwise.

    python examples/cifar10_resnet.py --data-dir data --method edgepopup --sparsity 0.7 --epochs 100
    python examples/cifar10_resnet.py --data-dir data --method stg --sparsity 0.9
    python examples/cifar10_resnet.py --smoke          # random 32x32 images, a narrow net, 1 epoch

The command-line equivalent is ``torch-slt find --model resnet18 --dataset cifar10 --data-dir data``.
"""

import argparse

import torch
from torch.utils.data import TensorDataset

import torch_slt
from torch_slt.experiment.data import load_dataset
from torch_slt.experiment.train import TrainConfig, accuracy, fit
from torch_slt.experiment.zoo import ModelSpec, build_model


def _random_splits(n=128):
    """Random CIFAR-shaped images for --smoke without the dataset: checks the code path, not accuracy."""
    g = torch.Generator().manual_seed(0)

    def make():
        return TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))

    return make(), make(), make()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py")
    parser.add_argument("--download", action="store_true")
    parser.add_argument("--model", default="resnet18", help="resnet18, resnet50, wrn50, conv2/4/6")
    parser.add_argument("--method", default="stg")
    parser.add_argument("--sparsity", type=float, default=0.9, help="fraction of weights removed")
    parser.add_argument("--init", default="signed-constant", help="edge-popup's best initialisation")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true", help="1 epoch; random images unless --data-dir")
    args = parser.parse_args(argv)
    epochs, width = args.epochs, args.width
    if args.smoke:
        epochs, width = 1, 0.125
    if args.smoke and args.data_dir is None:
        train, val, test = _random_splits()
    else:
        splits = load_dataset("cifar10", args.data_dir, download=args.download)
        train, val, test = splits.train, splits.val, splits.test
        if args.smoke:
            train, val, test = (d.subset(torch.arange(256)) for d in (train, val, test))

    # The random weights follow from the spec; scaled initialisations use the kept fraction.
    spec = ModelSpec(args.model, (3, 32, 32), 10, width=width, init=args.init, density=1 - args.sparsity)
    model = build_model(spec)
    torch_slt.apply(model, args.method, sparsity=args.sparsity)   # gates every conv and the classifier
    result = fit(model, train, val, TrainConfig(epochs=epochs, batch_size=args.batch_size, device=args.device,
                                                quiet=args.smoke))
    torch_slt.finalize(model)
    test_acc = accuracy(model, test)
    sparsity = torch_slt.report(model).sparsity
    print(f"{args.method} on {args.model}: val {result.val_accuracy:.2%}, test {test_acc:.2%}, "
          f"{sparsity:.2%} of the weights removed")
    return test_acc, sparsity


if __name__ == "__main__":
    main()
