"""Damaged, truncated and edited compact tickets are refused with TicketFormatError, never loaded as
another model (issue 20: a flipped byte loaded with other outputs; raw safetensors/json/KeyError)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import torch_slt
from torch_slt.core.errors import TicketFormatError
from torch_slt.experiment.ticket import load_ticket, ticket_checksum, ticket_info
from torch_slt.experiment.zoo import ModelSpec, build_model

SPEC = ModelSpec("lenet300", (1, 8, 8), 10, width=0.1, seed=3)


def _ticket(tmp_path, weak=False):
    model = build_model(SPEC)
    torch_slt.apply(model, "magnitude", sparsity=0.6)
    torch_slt.finalize(model)
    if weak:
        with torch.no_grad():
            model[1].weight.mul_(1.5)
    return torch_slt.save_ticket(model, tmp_path / "t.slt.safetensors", SPEC), model


def _rewrite(path, tensors=None, header=None, *, checksum=True):
    """Write the ticket again with edited tensors / header; with ``checksum`` the edit is re-sealed (a
    file that is whole but wrong), so the layout checks, not the checksum, must catch it."""
    with safe_open(str(path), "pt") as fh:
        old_header = dict(fh.metadata())
    tensors = load_file(str(path)) if tensors is None else tensors
    header = old_header if header is None else header
    if checksum:
        header["checksum"] = ticket_checksum(tensors, header)
    save_file(tensors, str(path), metadata=header)


def test_every_flipped_byte_is_refused(tmp_path):
    path, model = _ticket(tmp_path)
    good = path.read_bytes()
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(load_ticket(path)[0](x), model.eval()(x))
    for index in range(len(good)):
        damaged = bytearray(good)
        damaged[index] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(ValueError) as err:   # TicketFormatError, or "not a compact ticket"
            load_ticket(path)
        assert str(path) in str(err.value), (index, err.value)
    path.write_bytes(good)
    assert torch.equal(load_ticket(path)[0](x), model(x))


def test_a_flipped_mask_byte_names_the_checksum(tmp_path):
    path, _ = _ticket(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x10       # the last byte of the last tensor: a mask or a value
    path.write_bytes(bytes(data))
    with pytest.raises(TicketFormatError, match="checksum does not match.*damaged or edited"):
        load_ticket(path)


@pytest.mark.parametrize("content", [b"", b"garbage, not a safetensors file" * 3, "half"])
def test_empty_truncated_or_garbage_files_are_format_errors(tmp_path, content):
    path, _ = _ticket(tmp_path)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2] if content == "half" else content)
    with pytest.raises(TicketFormatError, match="not a readable safetensors file|cannot read its tensors"):
        load_ticket(path)
    with pytest.raises(TicketFormatError):
        ticket_info(path)


def _edit_header(key, value):
    def edit(tensors, header):
        if value is None:
            header.pop(key)
        else:
            header[key] = value
    return edit


def _unknown_tensor(tensors, header):
    tensors["bogus/1.weight"] = torch.zeros(2)


def _mask_of_no_gated_weight(tensors, header):
    tensors["mask/9.weight"] = torch.zeros(2, dtype=torch.uint8)


def _short_values(tensors, header):
    key = next(k for k in tensors if k.startswith("values/"))
    tensors[key] = tensors[key][:-1].clone()


def _state_of_wrong_shape(tensors, header):
    tensors["state/3.weight"] = torch.zeros(7)


def _state_of_no_entry(tensors, header):
    tensors["state/1.bias"] = torch.zeros(7)


def _short_mask(tensors, header):
    key = next(k for k in tensors if k.startswith("mask/"))
    tensors[key] = tensors[key][:-1].clone()


@pytest.mark.parametrize("edit, match", [
    (_unknown_tensor, r"unknown tensor 'bogus/1\.weight'"),
    (_mask_of_no_gated_weight, r"'mask/9\.weight' belongs to no gated weight"),
    (_edit_header("gated", "{not json"), r"header field 'gated' is malformed"),
    (_edit_header("spec", "[1, 2]"), r"header field 'spec' is malformed"),
    (_edit_header("kept", None), r"no 'kept' field"),
    (_edit_header("kept", "12345678"), r"kept=12345678 of total=.* is impossible"),
    (_edit_header("kept", "1"), r"the masks keep \d+ weights but the header says kept=1"),
    (_edit_header("format_version", "two"), r"header field 'format_version' is malformed"),
    (_edit_header("format_version", "0"), r"format_version 0 is not a ticket format"),
    (_edit_header("metadata", "[]"), r"header field 'metadata' is malformed.*expected a JSON dict"),
    (_short_values, r"values/.* holds \d+ values for the \d+ weights its mask keeps"),
    (_state_of_wrong_shape, r"'state/3\.weight' does not fit the model \(shape \(7,\), the model's is"),
    (_state_of_no_entry, r"'state/1\.bias' does not fit the model \(the model has no such entry"),
    (_short_mask, r"mask/.*cannot hold shape"),
])
def test_whole_but_wrong_files_name_what_is_wrong(tmp_path, edit, match):
    path, _ = _ticket(tmp_path, weak=True)
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as fh:
        header = dict(fh.metadata())
    edit(tensors, header)
    _rewrite(path, tensors, header)
    with pytest.raises(TicketFormatError, match=match):
        load_ticket(path)


def test_an_edit_without_a_new_checksum_is_caught_by_the_checksum(tmp_path):
    path, _ = _ticket(tmp_path)
    with safe_open(str(path), "pt") as fh:
        header = dict(fh.metadata())
    header["metadata"] = json.dumps({"test_accuracy": 0.99})
    _rewrite(path, header=header, checksum=False)
    with pytest.raises(TicketFormatError, match="checksum does not match"):
        load_ticket(path)


def test_format_1_tickets_without_a_checksum_still_load(tmp_path):
    path, model = _ticket(tmp_path)
    with safe_open(str(path), "pt") as fh:
        header = dict(fh.metadata())
    header.pop("checksum")
    header["format_version"] = "1"
    _rewrite(path, header=header, checksum=False)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(load_ticket(path)[0](x), model.eval()(x))
    assert ticket_info(path)["format_version"] == 1
