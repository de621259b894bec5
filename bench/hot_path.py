"""Graph breaks and host reads of one training step, per method and mode (issue 18's counts).

    python bench/hot_path.py            # prints a markdown table; results in bench/results/hot_path.md

For each mode: ``torch._dynamo.explain`` graph breaks of a training and an eval forward of a 3-layer
MLP (8-16-4; edge-popup on 300-256-4, above the CPU histogram threshold), and the host reads
(``item``/``int``/``float``/``bool``/``nonzero``/``tolist``/``cpu``/boolean indexing) made from
torch_slt's own files in 9 training steps (forward, penalty, backward, optimizer step) of the small
MLP. Counts, not timings: they are the same on every machine.
"""

from __future__ import annotations

import os
import sys

import torch

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path[:0] = [_ROOT, os.path.join(_ROOT, "tests", "core")]   # this checkout's torch_slt and helpers
from test_hot_path import MODES, _HostReads, _model, _model_below_histogram, _batch, _train  # noqa: E402


def _breaks(mode: str) -> tuple[int, int]:
    model = _model(mode)
    _train(model, model, 2)
    x, _ = _batch(model)
    counts = []
    for training in (True, False):
        model.train(training)
        torch._dynamo.reset()
        counts.append(torch._dynamo.explain(model)(x).graph_break_count)
    return counts[0], counts[1]


def _reads(mode: str) -> int:
    model = _model_below_histogram(mode) if mode.startswith("edgepopup") else _model(mode)
    with _HostReads() as reads:
        _train(model, model, 9)
    return len(reads.calls)


def main() -> None:
    torch.set_num_threads(1)
    print("| mode | graph breaks (train) | graph breaks (eval) | host reads in 9 steps |")
    print("|---|---:|---:|---:|")
    for mode in MODES:
        train, evaluation = _breaks(mode)
        print(f"| {mode} | {train} | {evaluation} | {_reads(mode)} |")


if __name__ == "__main__":
    main()
