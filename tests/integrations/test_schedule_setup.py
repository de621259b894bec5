"""The integrations give a sparsity target the length of the run they drive (issue 22, item 3)."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch import nn

import torch_slt
from models import build
from torch_slt.core.schedule_setup import set_total_steps, sparsity_targets


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def _total_steps(model: nn.Module) -> list:
    return [t.total_steps for t in sparsity_targets(model)]


# ---------------------------------------------------------------------------- set_total_steps
def test_set_total_steps_fills_only_targets_without_one():
    model = torch_slt.apply(_mlp(), "stg", sparsity=0.5, targets=["0"])
    torch_slt.apply(model, "hardconcrete", sparsity=0.5, total_steps=40, targets=["2"])
    assert _total_steps(model) == [None, 40]
    assert set_total_steps(model, 120) is True
    assert _total_steps(model) == [120, 40]
    assert set_total_steps(model, 7) is False          # nothing left to fill: the caller says nothing
    assert _total_steps(model) == [120, 40]


def test_one_target_shared_by_the_tensors_of_one_apply_is_set_once():
    model = torch_slt.apply(_mlp(), "stg", sparsity=0.5)
    hooks = [h for _, _, h in torch_slt.gated_tensors(model)]
    assert len(hooks) == 2 and hooks[0].sparsity_target is hooks[1].sparsity_target
    assert set_total_steps(model, 10) and hooks[1].sparsity_target.total_steps == 10
    assert hooks[0].sparsity_target.ramp_steps == 5


def test_models_without_targets_are_left_alone_and_bad_steps_refused():
    assert set_total_steps(_mlp(), 10) is False
    plain = torch_slt.apply(_mlp(), "stg", lam=0.1)
    assert set_total_steps(plain, 10) is False
    model = torch_slt.apply(_mlp(), "stg", sparsity=0.5)
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match="positive int"):
            set_total_steps(model, bad)
    assert _total_steps(model) == [None]


# ---------------------------------------------------------------------------- Hugging Face
def _hf_args(tmp_path, **kw):
    from transformers import TrainingArguments

    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, learning_rate=0.05,
                report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, logging_steps=100)
    return TrainingArguments(**{**base, **kw})


def _hf_data(n=8):
    g = torch.Generator().manual_seed(0)
    return [{"pixel_values": torch.randn(3, 8, 8, generator=g), "labels": int(i % 3)} for i in range(n)]


@pytest.mark.parametrize("run, steps", [(dict(max_steps=6), 6),
                                        (dict(num_train_epochs=3), 6),  # 8 examples / batch 4 x 3 epochs
                                        (dict(num_train_epochs=2, gradient_accumulation_steps=2), 2)])
def test_slt_trainer_sets_total_steps_from_the_training_arguments(run, steps, tmp_path, caplog):
    pytest.importorskip("transformers")
    from torch_slt.integrations.hf import SLTTrainer

    model = torch_slt.apply(build("hf_vit"), "stg", sparsity=0.5)
    trainer = SLTTrainer(model=model, args=_hf_args(tmp_path, **run), train_dataset=_hf_data())
    with caplog.at_level(logging.INFO, logger="torch_slt.integrations.hf"), warnings.catch_warnings():
        warnings.simplefilter("error")   # no warning of our own ("ramp never trained" above all)
        warnings.filterwarnings("ignore", module="(transformers|torch|accelerate).*")
        # A few steps of a tiny random ViT may close all of one q/k projection under the global
        # ranking; the health check saying so is right, and not what this test is about.
        warnings.filterwarnings("ignore", message=".*keeps no weight of", category=UserWarning)
        trainer.train()
        torch_slt.finalize(model)
    assert trainer.state.max_steps == steps
    said = [r for r in caplog.records if r.name == "torch_slt.integrations.hf"]
    assert len(said) == 1 and f"{steps} optimiser steps" in said[0].getMessage()
    assert said[0].levelno == logging.INFO   # information, not a warning


def test_slt_trainer_keeps_the_users_total_steps_and_says_nothing(tmp_path, caplog):
    pytest.importorskip("transformers")
    from torch_slt.integrations.hf import SLTTrainer

    model = torch_slt.apply(build("hf_vit"), "stg", sparsity=0.5, total_steps=2)
    trainer = SLTTrainer(model=model, args=_hf_args(tmp_path, max_steps=3), train_dataset=_hf_data())
    with caplog.at_level(logging.INFO, logger="torch_slt.integrations.hf"):
        trainer.train()
    assert _total_steps(model) == [2]
    assert not [r for r in caplog.records if r.name == "torch_slt.integrations.hf"]


# ---------------------------------------------------------------------------- Lightning
def _lightning_module():
    L = pytest.importorskip("lightning.pytorch")

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y) + torch_slt.penalty(self)

        def configure_optimizers(self):
            return torch.optim.Adam(torch_slt.mask_parameters(self), lr=0.1)

    return L, Net()


def _loader():
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g))
    return torch.utils.data.DataLoader(data, batch_size=8)


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
@pytest.mark.parametrize("run, steps", [(dict(max_steps=5), 5), (dict(max_epochs=3), 12),
                                        (dict(max_epochs=2, accumulate_grad_batches=2), 4)])
def test_lightning_callback_sets_total_steps_from_the_trainer(run, steps, caplog):
    L, module = _lightning_module()
    from torch_slt.integrations.lightning import SLTCallback

    callback = SLTCallback("stg", sparsity=0.5)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback], **run)
    with caplog.at_level(logging.INFO):
        trainer.fit(module, _loader())
    assert _total_steps(module) == [steps]
    said = [r.getMessage() for r in caplog.records if "SLTCallback: the sparsity target" in r.getMessage()]
    assert len(said) == 1 and f"{steps} optimiser steps" in said[0]
    assert all(r.levelno == logging.INFO for r in caplog.records if "SLTCallback" in r.getMessage())


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
def test_lightning_callback_keeps_the_users_total_steps():
    L, module = _lightning_module()
    from torch_slt.integrations.lightning import SLTCallback

    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[SLTCallback("stg", sparsity=0.5, total_steps=50)])
    trainer.fit(module, _loader())
    assert _total_steps(module) == [50]


# ---------------------------------------------------------------------------- fit (examples' loop)
def test_fit_sets_total_steps_to_epochs_times_batches_and_the_ticket_warns_nothing(caplog):
    from torch_slt.experiment.train import TrainConfig, fit

    model = torch_slt.apply(_mlp(), "stg", sparsity=0.5)
    with caplog.at_level(logging.INFO, logger="torch_slt.experiment.train.loop"), warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(model, _loader().dataset, None, TrainConfig(epochs=2, batch_size=8, quiet=True, device="cpu"))
        assert _total_steps(model) == [8]
        torch_slt.finalize(model)       # before: "training stopped at step 8 of the ... 500-step ramp"
    said = [r for r in caplog.records if r.name == "torch_slt.experiment.train.loop"]
    assert len(said) == 1 and said[0].levelno == logging.INFO and "8 steps (2 epochs x 4 batches" in \
        said[0].getMessage()
