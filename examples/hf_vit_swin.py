"""Frozen-weight masks on a Hugging Face ViT or Swin: from a random config, or from your own weights.

``torch_slt.apply`` gates every ``nn.Linear`` and the patch-embedding conv of the transformers model in
place (attention projections, MLPs, classifier); only the gates train. Without ``--pretrained`` the
model is a small random ViT / Swin sized for the input (a strong ticket); with ``--pretrained PATH`` it
is ``AutoModelForImageClassification.from_pretrained(PATH)`` from a local directory (nothing is
downloaded) with a new 10-class head, and the masks select a subnetwork of the pretrained weights.
The images are scikit-learn's digits (8x8; resized to the input size of a pretrained model).

    python examples/hf_vit_swin.py --arch vit
    python examples/hf_vit_swin.py --arch swin --sparsity 0.8
    python examples/hf_vit_swin.py --pretrained ./my-vit-checkpoint --epochs 5
    python examples/hf_vit_swin.py --smoke
"""

import argparse

import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

import torch_slt
from torch_slt.experiment.data import load_dataset
from torch_slt.experiment.train import TrainConfig, accuracy, fit
from torch_slt.experiment.zoo import ModelSpec, build_model


def _resized(dataset, channels, size):
    x, y = dataset.tensors()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return TensorDataset(x.expand(-1, channels, -1, -1).contiguous(), y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("vit", "swin"), default="vit")
    parser.add_argument("--pretrained", metavar="PATH", help="a local from_pretrained directory")
    parser.add_argument("--method", default="stg")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="1 epoch on 256 images")
    args = parser.parse_args(argv)
    splits = load_dataset("digits")
    train, val, test = splits.train, splits.val, splits.test
    epochs = 1 if args.smoke else args.epochs
    if args.smoke:
        train = train.subset(torch.arange(256))

    if args.pretrained:
        from transformers import AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained(
            args.pretrained, num_labels=splits.num_classes, ignore_mismatched_sizes=True)
        size = model.config.image_size
        size = size if isinstance(size, int) else size[0]
        train, val, test = (_resized(d, model.config.num_channels, size) for d in (train, val, test))
    else:
        # A random config sized for the 8x8 digits (patch 2); the weights follow from the seed.
        model = build_model(ModelSpec(args.arch, splits.in_shape, splits.num_classes, seed=0,
                                      width=0.5 if args.smoke else 1.0))

    torch_slt.apply(model, args.method, sparsity=args.sparsity)   # weights, norms, embeddings frozen
    fit(model, train, val, TrainConfig(epochs=epochs, batch_size=64, quiet=args.smoke))
    torch_slt.finalize(model)             # a plain transformers model again: save_pretrained works
    test_acc = accuracy(model, test)
    sparsity = torch_slt.report(model).sparsity
    what = f"pretrained {args.pretrained}" if args.pretrained else f"random {args.arch}"
    print(f"{args.method} on {what}: "
          f"test {test_acc:.2%} with {sparsity:.2%} of the gated weights removed")
    return test_acc, sparsity


if __name__ == "__main__":
    main()
