"""torch_slt.experiment.train.alarms: a run at chance or with a diverged loss is said, not hidden."""

import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from torch_slt.experiment.train import TrainConfig, fit
from torch_slt.experiment.train.alarms import TrainingAlarm, at_chance, training_alarms


def _rows(*losses, val=0.9):
    return [{"epoch": i, "loss": loss, "task_loss": loss, "val_accuracy": val}
            for i, loss in enumerate(losses, 1)]


def test_a_healthy_run_has_no_alarm():
    assert training_alarms(_rows(2.3, 1.0, 0.4, 0.05, 0.2), 10) == []


@pytest.mark.parametrize("accuracy, flagged", [(0.05, True), (0.10, True), (0.119, True), (0.121, False),
                                               (0.98, False)])
def test_chance_is_two_points_above_a_uniform_guess_or_below(accuracy, flagged):
    alarms = training_alarms(_rows(2.3, 2.3, val=accuracy), 10)
    assert bool(alarms) is flagged and at_chance(accuracy, 10) is flagged
    if flagged:
        assert alarms == [f"validation accuracy {accuracy:.2%} is at chance (10.00% for a guess among 10 "
                          "classes): this ticket is useless; try more epochs, another --lr, or another "
                          "method"]


def test_the_final_accuracy_overrides_the_last_epochs():
    assert "at chance" in training_alarms(_rows(2.3, val=0.9), 10, final_accuracy=0.1)[0]
    assert training_alarms(_rows(2.3, val=0.1), 10, final_accuracy=0.9) == []


def test_a_loss_far_above_a_uniform_guess_has_exploded():
    # conv4 on digits before the seed fix: 3478 in epoch 1, then 2.35
    alarms = training_alarms(_rows(3478.0, 2.35, 1.9), 10)
    assert len(alarms) == 1 and alarms[0].startswith("the loss exploded: epoch 1's mean loss is 3478")
    assert training_alarms(_rows(23.0, 1.0), 10) == []   # 10 x ln(10) = 23.03: not yet


def test_a_loss_that_grows_tenfold_has_diverged():
    alarms = training_alarms(_rows(1.0, 0.2, 2.5), 10)
    assert alarms == ["the loss diverged: 2.5 at epoch 3 against 0.2 earlier (more than 10x); lower --lr"]
    assert training_alarms(_rows(1.0, 0.01, 0.2), 10) == []   # 20x, but still far below a guess's 2.30


def test_a_non_finite_loss_is_flagged_but_a_fixed_masks_evaluation_row_is_not():
    assert training_alarms(_rows(1.0, math.nan), 10)[0].startswith("the loss is not finite at epoch 2")
    fixed = [{"epoch": 0, "loss": math.nan, "val_accuracy": 0.9, "lr": 0.0}]
    assert training_alarms(fixed, 10) == []


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))


def test_fit_warns_and_records_a_run_that_ends_at_chance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    train = TensorDataset(x, torch.zeros(64, dtype=torch.long))
    val = TensorDataset(x, torch.ones(64, dtype=torch.long))   # the opposite class: 0 % correct
    with pytest.warns(TrainingAlarm, match=r"fit\(\): validation accuracy 0.00% is at chance \(50.00%"):
        result = fit(_mlp(), train, val, TrainConfig(epochs=2, batch_size=16, quiet=True))
    assert len(result.alarms) == 1 and "at chance" in result.alarms[0]
    assert all(row["task_loss"] <= row["loss"] + 1e-6 for row in result.history)


def test_fit_warns_when_the_loss_diverges():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    with pytest.warns(TrainingAlarm) as caught:
        result = fit(_mlp(), data, data, TrainConfig(epochs=3, batch_size=16, lr=1e6, quiet=True))
    assert result.alarms[0] == ("the loss is not finite at epoch 2: training diverged; lower --lr, or look "
                                "for NaN inputs")
    assert result.alarms[1].startswith("the loss exploded: epoch 1's mean loss is 7.3")
    alarms = [str(w.message) for w in caught if issubclass(w.category, TrainingAlarm)]
    assert alarms == [f"fit(): {alarm}" for alarm in result.alarms]
    # the diverged model's NaN outputs are also reported by accuracy(), as they should be
    assert any("NaN or infinite" in str(w.message) for w in caught if w.category is RuntimeWarning)


def test_fit_is_silent_on_a_healthy_run():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingAlarm)
        result = fit(_mlp(), data, data, TrainConfig(epochs=3, batch_size=16, quiet=True))
    assert result.alarms == [] and result.history[-1]["val_accuracy"] > 0.8
