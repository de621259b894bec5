"""The flags shared by ``find`` and ``sweep`` (each maps to a field of :class:`RunSettings`)."""

from __future__ import annotations

import argparse

from torch_slt.cli.settings import RunSettings


def add_run_flags(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    """Method, data/model, training and output flags. They default to None so that ``--resume`` can
    tell the flags a user typed from the ones left at their default."""
    from torch_slt.experiment.data import DATASETS
    from torch_slt.experiment.init import INITIALIZERS, canonical
    from torch_slt.experiment.zoo import MODEL_NAMES

    defaults = RunSettings().training
    g = p.add_argument_group("method")
    g.add_argument("--lam", type=float, help="penalty weight of the gate methods (stg, hardconcrete)")
    g.add_argument("--sigma", type=float, help="stg gate noise standard deviation")
    if not sweep:
        g.add_argument("--sparsity", type=float, help="fraction of weights removed, in [0, 1): required by "
                       "edge-popup and the one-shot methods; a target for the gate methods")
    g.add_argument("--granularity", choices=("weight", "neuron", "channel", "head"),
                   help="one gate per weight (default), per output neuron/channel, or per attention head "
                   "(stg, hardconcrete, magnitude); see docs/granularity.md")
    g.add_argument("--method-arg", dest="method_args", action="append", metavar="KEY=VALUE",
                   help="any other method hyperparameter, e.g. --method-arg threshold=0.6 (repeatable)")
    g.add_argument("--train-weights", action=argparse.BooleanOptionalAction, default=None,
                   help="train the surviving weights too (a weak ticket; pruning at initialisation). "
                   "Default: on for the one-shot methods (magnitude, random, snip, grasp, synflow), whose "
                   "mask is fixed at apply, and cs; off for the learned masks (a strong ticket)")
    g.add_argument("--recalibrate-batchnorm", action=argparse.BooleanOptionalAction, default=None,
                   help="after every epoch, re-estimate BatchNorm statistics with the ticket's hard mask when the "
                   "method trains with sampled or relaxed masks (stg, hardconcrete, supermask, cs). Default: on; "
                   "--no-recalibrate-batchnorm keeps the statistics of training")
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", help=f"{', '.join(DATASETS)} (default digits, bundled with scikit-learn)")
    g.add_argument("--data-dir", help="where the dataset files are (fashion-mnist defaults to the Debian "
                   "package's /usr/share/datasets/fashion-mnist)")
    g.add_argument("--download", action="store_true", default=None,
                   help="download missing dataset files (never done otherwise)")
    g.add_argument("--model", help=f"{', '.join(MODEL_NAMES)} or timm:NAME (default lenet300)")
    g.add_argument("--width", type=float, help="multiplies the hidden widths (default 1)")
    g.add_argument("--init", type=canonical, choices=INITIALIZERS,
                   help="random weight initialisation (default kaiming-normal); the paper's short names "
                   "ukn, kn, sc, usc work too; usc (unscaled-signed-constant) is never scaled by the "
                   "kept fraction, sc and kn are")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, help=f"training epochs (default {defaults.epochs})")
    g.add_argument("--lr", type=float, help="learning rate of the masks (default: per method, see "
                   "'torch-slt methods')")
    g.add_argument("--weight-lr", type=float, help="learning rate of the weights where they train beside "
                   "a learned mask (cs, --train-weights; default: per method); a one-shot method's weights "
                   "take --lr")
    g.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), help="default: per method")
    g.add_argument("--momentum", type=float, help="SGD momentum (default: per method)")
    g.add_argument("--weight-decay", type=float, help="weight decay on the masks (default: per method)")
    g.add_argument("--schedule", choices=("cosine", "constant"), help="learning-rate schedule (default: per "
                   "method)")
    g.add_argument("--batch-size", type=int, help=f"default {defaults.batch_size}")
    g.add_argument("--seed", type=int,
                   help="seeds the random weights, the data split, the method's initial state (edge-popup's "
                   "scores) and training (default 0)")
    g.add_argument("--device", help="cpu, cuda, cuda:N, mps or auto (default auto: CUDA when available)")
    g.add_argument("--threads", type=int, help="CPU threads torch may use (default: torch's own choice). On "
                   "a busy machine fewer is faster: with another job on a 2-core CPU, --threads 1 ran "
                   "'find --method edgepopup' in 3 s instead of 42 s")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="output folder (default: a fresh folder under runs/)")
    g.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
