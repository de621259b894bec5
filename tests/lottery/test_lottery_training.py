"""Weight training of a lottery round: the paper's optimiser by default, early stopping on validation."""

from __future__ import annotations

import torch
from torch import nn

from torch_slt.experiment.train import TrainConfig
from torch_slt.lottery import TrainRun, train_weights, weight_training_config
from torch_slt.lottery.training import Evaluation


def test_default_optimiser_is_the_papers_adam():
    cfg = weight_training_config(None)
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.schedule) == ("adam", 1.2e-3, 0.0, "constant")
    sgd = weight_training_config(TrainConfig(optimizer="sgd"))
    assert (sgd.lr, sgd.momentum, sgd.weight_decay, sgd.schedule) == (0.1, 0.9, 1e-4, "cosine")
    mine = weight_training_config(TrainConfig(lr=3e-4, schedule="cosine"))
    assert (mine.optimizer, mine.lr, mine.schedule) == ("adam", 3e-4, "cosine")


def test_early_stopping_picks_the_best_validation_and_the_earliest_tie():
    run = TrainRun([Evaluation(10, 0.5, 0.4), Evaluation(20, 0.7, 0.6), Evaluation(30, 0.7, 0.65),
                    Evaluation(40, 0.6, 0.7)], iterations=40)
    assert run.early.iteration == 20 and run.early.test_accuracy == 0.6
    assert run.final.test_accuracy == 0.7
    assert TrainRun([Evaluation(5, None, 0.3), Evaluation(9, None, 0.2)]).early.iteration == 9


def test_evaluations_every_n_iterations_and_at_the_end():
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(20, 3), torch.randint(0, 2, (20,)))
    run = train_weights(nn.Linear(3, 2), data, weight_training_config(TrainConfig(epochs=2, batch_size=8, quiet=True)),
                        val=data, test=data, eval_every=2)
    assert [e.iteration for e in run.evaluations] == [2, 4, 6]       # 3 batches per epoch, 6 in all
    assert run.completed and run.iterations == 6
