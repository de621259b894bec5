"""Hugging Face: SLTTrainer, save_pretrained/from_pretrained round trip, masks on a pretrained model."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

import torch_slt
from models import build

transformers = pytest.importorskip("transformers")
from transformers import TrainingArguments, ViTForImageClassification  # noqa: E402

from torch_slt.integrations.hf import SLTTrainer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dataset(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"pixel_values": torch.randn(3, 8, 8, generator=g), "labels": int(i % 3)} for i in range(n)]


def args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=4,
                learning_rate=0.1, logging_steps=1, report_to=[], use_cpu=True, save_strategy="no",
                disable_tqdm=True)
    return TrainingArguments(**{**base, **kw})


def test_trainer_trains_exactly_the_gates_with_the_penalty(tmp_path):
    model = torch_slt.apply(build("hf_vit"), "stg", lam=0.5)
    mu_before = {n: p.detach().clone() for n, p in torch_slt.named_mask_parameters(model)}
    trainer = SLTTrainer(model=model, args=args(tmp_path, weight_decay=0.1), train_dataset=dataset())

    inputs = {"pixel_values": torch.randn(4, 3, 8, 8), "labels": torch.tensor([0, 1, 2, 0])}
    model.train()
    torch.manual_seed(3)
    loss = trainer.compute_loss(model, inputs)
    torch.manual_seed(3)
    expected = model(**inputs).loss + torch_slt.penalty(model)
    torch.testing.assert_close(loss, expected)

    trainer.train()
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in torch_slt.mask_parameters(model)}
    assert all(g["weight_decay"] == 0.0 for g in trainer.optimizer.param_groups if g["params"])
    moved = [n for n, p in torch_slt.named_mask_parameters(model) if not torch.equal(p, mu_before[n])]
    assert moved, "no gate was updated"
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all("slt_sparsity" in h and "slt_penalty" in h for h in logged)
    assert not any(p.requires_grad for n, p in model.named_parameters()
                   if n not in dict(torch_slt.named_mask_parameters(model)))


def test_trainer_refuses_ungated_models_and_empty_mask_sets(tmp_path):
    with pytest.raises(torch_slt.NotGatedError, match="torch_slt.apply"):
        SLTTrainer(model=build("hf_vit"), args=args(tmp_path), train_dataset=dataset())
    fixed = torch_slt.apply(build("hf_vit"), "magnitude", sparsity=0.5)
    with pytest.raises(ValueError, match="train='trainable'"):
        SLTTrainer(model=fixed, args=args(tmp_path), train_dataset=dataset()).create_optimizer()
    trainer = SLTTrainer(model=fixed, args=args(tmp_path, max_steps=1), train_dataset=dataset(),
                         train="trainable")
    trainer.train()
    assert sum(len(g["params"]) for g in trainer.optimizer.param_groups) == len(
        [p for p in fixed.parameters() if p.requires_grad])


def test_finalized_model_round_trips_through_save_pretrained(tmp_path):
    model = torch_slt.apply(build("hf_vit"), "stg", lam=0.5)
    SLTTrainer(model=model, args=args(tmp_path), train_dataset=dataset()).train()
    with torch.no_grad():
        model.vit.layers[0].attention.q_proj.weight_mu[:4] = -1.0   # some pruned rows
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        gated_out = model(pixel_values=x).logits
    torch_slt.finalize(model)
    model.save_pretrained(tmp_path / "pruned")
    loaded, info = ViTForImageClassification.from_pretrained(tmp_path / "pruned", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=x).logits, gated_out, rtol=0, atol=0)
    assert torch.count_nonzero(loaded.vit.layers[0].attention.q_proj.weight[:4]) == 0


def test_pretrained_masks_example_smoke(tmp_path):
    path = os.path.join(ROOT, "examples", "hf_pretrained_masks.py")
    spec = importlib.util.spec_from_file_location("hf_pretrained_masks", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(["--smoke", "--workdir", str(tmp_path)])
    assert result["frozen_weights_unchanged"] and result["reload_matches"]
    assert 0.0 <= result["sparsity"] < 1.0
