"""Quick start: find a strong lottery ticket in a frozen random MLP with stochastic gates.

A 64-300-100-10 MLP keeps its random weights; ``torch_slt.apply`` gives every weight a gate, Adam trains
only the gates (cross entropy + ``torch_slt.penalty``), and ``torch_slt.finalize`` leaves a plain model
whose removed weights are exact zeros. Runs in well under a minute on a laptop CPU:

    python examples/quickstart.py            # 60 epochs on scikit-learn's bundled digits
    python examples/quickstart.py --smoke    # 2 epochs, for the test suite
"""

import argparse

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import torch_slt


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lam", type=float, default=0.1, help="sparsity penalty weight (stg's lam)")
    parser.add_argument("--smoke", action="store_true", help="2 epochs, to check that it runs")
    args = parser.parse_args(argv)
    epochs = 2 if args.smoke else args.epochs
    torch.manual_seed(0)

    # Data: 8x8 digit images flattened to 64 features in [0, 1]; 80% train, 20% test.
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y), test_size=0.2, random_state=0)

    # A random MLP. Its weights are never trained: only which of them to keep is learned.
    model = nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    torch_slt.init.initialize(model, "kaiming-normal")   # N(0, 2 / fan_in), the strong-ticket default

    torch_slt.apply(model, "stg", lam=args.lam)                  # gates every weight, freezes the rest
    optimizer = torch.optim.Adam(torch_slt.mask_parameters(model), lr=0.05)

    for epoch in range(epochs):
        model.train()
        for batch in torch.randperm(len(x_train)).split(64):
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            loss = loss + torch_slt.penalty(model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    torch_slt.finalize(model)   # a plain nn.Sequential again; pruned weights are exact zeros
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    sparsity = torch_slt.report(model).sparsity
    print(f"test accuracy {accuracy:.1%} with {sparsity:.1%} of the weights removed")
    return accuracy, sparsity


if __name__ == "__main__":
    main()
