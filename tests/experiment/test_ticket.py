"""Compact tickets: bit-packed masks + spec + seed + hash, reloaded to identical outputs."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import torch_slt
from torch_slt.core.errors import TicketMismatchError
from torch_slt.experiment.ticket import pack_bits, ticket_checksum, ticket_info, unpack_bits, weights_hash
from torch_slt.experiment.zoo import ModelSpec, build_model


def _random_masks(model, density, seed=0):
    """Prune every Linear/Conv weight at random in place, as a finalized ticket looks (no record)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.mul_(torch.rand(m.weight.shape, generator=g) < density)
    return model


def _fp32_size(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path.stat().st_size


@pytest.mark.parametrize("shape", [(17,), (8,), (3, 5, 2), (1,)])
def test_bit_packing_round_trip_and_numpy_order(shape):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(0)) < 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
    assert np.array_equal(packed.numpy(), np.packbits(mask.flatten().numpy()))
    assert torch.equal(unpack_bits(packed, mask.shape), mask)


def test_lenet300_round_trip_from_a_gated_model_and_size_bound(tmp_path):
    spec = ModelSpec("lenet300", (1, 28, 28), 10, seed=3)
    model = torch_slt.apply(build_model(spec), "stg", lam=0.1)
    with torch.no_grad():
        for p in torch_slt.mask_parameters(model):
            p.normal_(-0.3, 0.5, generator=torch.Generator().manual_seed(1))
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    path = torch_slt.save_ticket(model, tmp_path / "t.slt.safetensors", spec, {"accuracy": 0.9})
    assert torch_slt.is_gated(model)  # save_ticket does not finalize the caller's model
    assert all(torch.equal(v, state_before[k]) for k, v in model.state_dict().items())

    finalized = torch_slt.finalize(model).eval()
    loaded, loaded_spec, meta = torch_slt.load_ticket(path)
    assert loaded_spec == spec and meta == {"accuracy": 0.9} and not loaded.training
    x = torch.randn(16, 1, 28, 28)
    assert torch.equal(loaded(x), finalized(x))
    assert loaded.state_dict().keys() == finalized.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in finalized.state_dict().items())
    assert torch_slt.report(loaded).to_dict()["layers"] == torch_slt.report(finalized).to_dict()["layers"]

    ratio = path.stat().st_size / _fp32_size(finalized, tmp_path / "full.safetensors")
    assert ratio <= 1 / 25, f"compact ticket is {ratio:.4f} of the fp32 file"
    info = ticket_info(path)
    assert info["kind"] == "strong" and info["spec"] == spec and info["seed"] == 3
    assert info["gated"] == {"1.weight": "stg", "3.weight": "stg", "5.weight": "stg"}
    assert info["sparsity"] == pytest.approx(torch_slt.report(finalized).sparsity)


def test_resnet18_size_bound_with_batchnorm_statistics(tmp_path):
    spec = ModelSpec("resnet18", (3, 32, 32), 10, seed=1)
    model = _random_masks(build_model(spec), density=0.5)
    with torch.no_grad():  # as training updates BN running statistics: state the ticket must store
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked += 10
    model.eval()
    path = torch_slt.save_ticket(model, tmp_path / "r.slt.safetensors", spec)
    with safe_open(str(path), "pt") as fh:
        keys = list(fh.keys())
    assert "state/bn1.running_mean" in keys and "mask/conv1.weight" in keys
    assert not any(k.startswith("values/") for k in keys)
    assert not any(k.startswith("state/") and k.endswith(".weight") for k in keys)  # BN affine untouched
    loaded, _, _ = torch_slt.load_ticket(path)
    expected = model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(loaded(x), model(x))
    ratio = path.stat().st_size / _fp32_size(model, tmp_path / "full.safetensors")
    assert ratio <= 1 / 25, f"compact ticket is {ratio:.4f} of the fp32 file"


def test_weak_ticket_stores_trained_values(tmp_path):
    spec = ModelSpec("conv2", (1, 8, 8), 3, width=0.25, seed=2)
    model = torch_slt.finalize(torch_slt.apply(build_model(spec), "magnitude", sparsity=0.7))
    with torch.no_grad():  # "train" the surviving weights of one layer
        w = model.classifier[3].weight
        w.mul_(1.5)
    path = torch_slt.save_ticket(model, tmp_path / "w.slt.safetensors", spec)
    assert ticket_info(path)["kind"] == "weak"
    tensors = load_file(str(path))
    assert tensors["values/classifier.3.weight"].numel() == int((w != 0).sum())
    assert "values/classifier.1.weight" not in tensors
    loaded, _, _ = torch_slt.load_ticket(path)
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(loaded(x), model.eval()(x))


def test_hf_vit_round_trip(tmp_path):
    spec = ModelSpec("vit", (1, 8, 8), 4, width=0.25, seed=0)
    model = torch_slt.finalize(torch_slt.apply(build_model(spec), "magnitude", sparsity=0.6)).eval()
    path = torch_slt.save_ticket(model, tmp_path / "v.slt.safetensors", spec)
    loaded, _, _ = torch_slt.load_ticket(path)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(loaded(x).logits, model(x).logits)


def test_hash_mismatch_names_both_torch_versions(tmp_path):
    spec = ModelSpec("lenet300", (1, 8, 8), 10, width=0.1)
    model = torch_slt.finalize(torch_slt.apply(build_model(spec), "magnitude", sparsity=0.5))
    path = torch_slt.save_ticket(model, tmp_path / "t.slt.safetensors", spec)
    with safe_open(str(path), "pt") as fh:  # pretend another torch generated other numbers
        header = dict(fh.metadata())
    header["weights_hash"] = "sha256:" + "0" * 64
    header["versions"] = json.dumps({**json.loads(header["versions"]), "torch": "2.0.0"})
    header["checksum"] = ticket_checksum(load_file(str(path)), header)   # a whole file, written elsewhere
    save_file(load_file(str(path)), str(path), metadata=header)
    here = re.escape(torch.__version__)
    expected = rf"torch 2\.0\.0 \(saved\) vs {here} \(here\).*pip install torch==2\.0\.0"
    with pytest.raises(TicketMismatchError, match=expected):
        torch_slt.load_ticket(path)


def test_weights_hash_sees_a_single_bit():
    model = build_model(ModelSpec("lenet300", (1, 8, 8), 10, width=0.1))
    before = weights_hash(model)
    assert before.startswith("sha256:") and len(before) == 71
    with torch.no_grad():
        w = model[1].weight.view(-1)
        w[0] = torch.nextafter(w[0], torch.tensor(float("inf")))
    assert weights_hash(model) != before


def test_wrong_spec_or_file_are_clear_errors(tmp_path):
    spec = ModelSpec("lenet300", (1, 8, 8), 10, width=0.1)
    model = build_model(spec)
    with pytest.raises(TicketMismatchError, match="shapes differ.*Pass the spec the model was built from"):
        torch_slt.save_ticket(model, tmp_path / "x.safetensors", ModelSpec("lenet300", (1, 8, 8), 10))
    other = build_model(ModelSpec("lenet300", (1, 8, 8), 10, width=0.1, seed=9))
    other_seed = torch_slt.finalize(torch_slt.apply(other, "magnitude", sparsity=0.5))
    with pytest.warns(UserWarning, match="none of the model's weights equal"):
        torch_slt.save_ticket(other_seed, tmp_path / "y.safetensors", spec)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a torch_slt compact ticket"):
        torch_slt.load_ticket(tmp_path / "plain.safetensors")
