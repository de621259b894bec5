"""Compact lottery tickets: a spec, a seed, and one bit per weight.

A strong ticket keeps a subset of frozen random weights, so it is fully described by the recipe for
those random weights (a :class:`~torch_slt.experiment.zoo.ModelSpec`, whose ``seed`` draws them) and one
bit per gated weight. :func:`save_ticket` writes exactly that into a `safetensors <https://huggingface.co/docs/
safetensors>`_ file, plus a hash of the generated weights; :func:`load_ticket` rebuilds the model with
:func:`~torch_slt.experiment.zoo.build_model`, checks the hash (another torch version may draw other numbers),
applies the masks and returns a finalized standard model whose outputs equal those of the model that
was saved. For lenet300 or resnet18 the file is about 1/32 of the fp32 state_dict.

File layout (every tensor name is a state_dict key with a prefix):

* ``mask/<key>``: the hard mask of a gated tensor, bit-packed into uint8 (row-major, most significant
  bit first, zero-padded to a whole byte: ``numpy.unpackbits(x)[:numel]`` reads it back);
* ``values/<key>``: only if the kept weights of a gated tensor are *not* the generated ones (a weak
  ticket, ``--train-weights``): the kept values, in order, in their own dtype;
* ``state/<key>``: any other state_dict entry that differs from the generated model (trained biases or
  norms, batch-norm running statistics), stored whole;
* everything else (frozen biases, norms, embeddings, pruned-away values) is regenerated from the seed.

The string metadata holds ``format`` (``torch-slt-ticket``), ``format_version``, ``spec`` (JSON),
``seed``, ``weights_hash`` (:func:`weights_hash` of the generated model), ``versions`` (torch,
torch_slt, and torchvision / timm / transformers when the model needs them), ``gated`` (tensor ->
method), ``kind`` (``strong``: no weight value stored; ``weak``: trained values stored), ``kept`` /
``total`` (gated weights), ``metadata`` (the caller's JSON) and ``checksum`` (:func:`ticket_checksum`: a
sha256 of every tensor and every other header field). :func:`load_ticket` verifies the checksum and the
layout before it applies anything, so a damaged file (a flipped byte, a truncated copy, an edited
header) is refused with :class:`~torch_slt.core.errors.TicketFormatError` instead of loading as another
model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from torch_slt.core.api import finalize, is_gated
from torch_slt.core.gated import (gate_formulations, gate_history, record_gate_formulations,
                                  record_gate_history)
from torch_slt.core.errors import TicketFormatError, TicketMismatchError
from torch_slt.core.targets import is_default_target
from torch_slt.experiment.files import atomic_write, brief
from torch_slt.experiment.zoo import TIMM_PREFIX, ModelSpec, build_model

FORMAT = "torch-slt-ticket"
#: 2 adds ``checksum``; version 1 files (no checksum) still load, with the layout checks only.
FORMAT_VERSION = 2
#: The header fields every ticket has (``checksum`` from version 2 on).
_FIELDS = ("format", "format_version", "spec", "seed", "weights_hash", "versions", "gated", "kind", "kept",
           "total", "metadata")
_PREFIXES = ("mask/", "values/", "state/")


# ---------------------------------------------------------------------------------------- bits
def pack_bits(mask: Tensor) -> Tensor:
    """Pack a boolean tensor into uint8, 8 entries a byte, most significant bit first (numpy's order)."""
    import numpy as np

    flat = mask.detach().reshape(-1).to(device="cpu", dtype=torch.bool).numpy()
    return torch.from_numpy(np.packbits(flat))


def unpack_bits(packed: Tensor, shape: tuple[int, ...] | torch.Size) -> Tensor:
    """The boolean tensor of ``shape`` that :func:`pack_bits` packed."""
    import numpy as np

    numel = 1
    for n in shape:
        numel *= n
    if packed.numel() != (numel + 7) // 8:
        raise TicketMismatchError(f"a packed mask of {packed.numel()} bytes cannot hold shape {tuple(shape)} "
                                  f"({numel} bits)")
    bits = np.unpackbits(packed.to(torch.uint8).numpy(), count=numel)
    return torch.from_numpy(bits.astype(bool)).reshape(shape)


# ---------------------------------------------------------------------------------------- hash
def weights_hash(model: nn.Module) -> str:
    """``"sha256:<hex>"`` of ``model.state_dict()``: every key, dtype, shape and raw byte, in key order.

    Two models hash equal exactly when their state_dicts are bit-identical.

    Example:
        >>> import torch
        >>> a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = b.load_state_dict(a.state_dict())
        >>> weights_hash(a) == weights_hash(b)
        True
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


# ---------------------------------------------------------------------------------------- save
def save_ticket(model: nn.Module, path: str | os.PathLike, spec: ModelSpec,
                metadata: dict | None = None) -> Path:
    """Write the compact ticket of ``model`` (built by ``build_model(spec)``) to ``path``.

    The object comes first, then the file, as in ``torch.save(obj, f)`` and :func:`torch_slt.save_file`.
    The old order ``save_ticket(path, model, spec)`` still works for one release, with a
    ``FutureWarning``.

    Args:
        model: the model built from ``spec``, either still gated or already finalized (then the
            tensors it gated are read from its record, or, without one, taken to be every
            ``nn.Linear`` / ``nn.ConvNd`` weight). Not modified.
        path: the ``.safetensors`` file to write (its folder must exist); written atomically.
        spec: the spec ``model`` was built from; its weights are regenerated and compared.
        metadata: anything JSON-serialisable to keep with the ticket (config, accuracy...).

    Returns:
        The path written.

    Raises:
        TicketMismatchError: ``model`` does not have the architecture ``build_model(spec)`` makes.

    Example:
        >>> import tempfile, torch, torch_slt
        >>> from torch_slt.experiment.zoo import ModelSpec, build_model
        >>> spec = ModelSpec("lenet300", (1, 8, 8), 10, width=0.1, seed=1)
        >>> model = torch_slt.finalize(torch_slt.apply(build_model(spec), "magnitude", sparsity=0.8))
        >>> path = torch_slt.save_ticket(model, tempfile.mkdtemp() + "/t.slt.safetensors", spec)
        >>> loaded, _, _ = torch_slt.load_ticket(path)
        >>> x = torch.randn(4, 1, 8, 8)
        >>> torch.equal(loaded(x), model.eval()(x))
        True
    """
    _require_safetensors()
    if isinstance(model, (str, os.PathLike)) and isinstance(path, nn.Module):
        warnings.warn("save_ticket(path, model, spec) is now save_ticket(model, path, spec): the object "
                      "first, as in torch.save(obj, f); the old order goes away in the release after 0.2",
                      FutureWarning, stacklevel=2)
        model, path = path, model
    if not isinstance(model, nn.Module):
        raise TypeError(f"save_ticket(): model must be an nn.Module, got {type(model).__name__}; the call "
                        f"is save_ticket(model, path, spec)")
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"save_ticket(): spec must be a ModelSpec, got {type(spec).__name__}")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"save_ticket(): metadata must be a dict or None, got {type(metadata).__name__}")
    user = json.dumps(metadata or {}, sort_keys=True, default=_json_default)
    history = gate_history(model)
    if is_gated(model):
        final = finalize(copy.deepcopy(model))
    else:
        final = model
    labels = gate_formulations(final)
    state = {k: v.detach().to("cpu") for k, v in final.state_dict().items()}
    reference = build_model(spec)
    ref = reference.state_dict()
    _check_same_architecture(state, ref, spec)
    gated = history or {f"{name}.weight" if name else "weight": None
                        for name, module in reference.named_modules()
                        if is_default_target(module) and isinstance(module._parameters.get("weight"), Tensor)}
    parameters = {k for k, _ in reference.named_parameters()}

    tensors: dict[str, Tensor] = {}
    kept = total = 0
    trained_values = matched = 0
    for key, tensor in state.items():
        generated = ref[key]
        if key in gated and tensor.is_floating_point():
            mask = tensor != 0
            n_kept = int(torch.count_nonzero(tensor))
            kept += n_kept
            total += mask.numel()
            if n_kept < mask.numel():
                tensors["mask/" + key] = pack_bits(mask)
            if torch.equal(tensor, generated * mask.to(generated.dtype)):
                matched += 1
            else:
                tensors["values/" + key] = tensor[mask].contiguous()
                trained_values += 1
        elif not torch.equal(tensor, generated) or tensor.dtype != generated.dtype:
            tensors["state/" + key] = tensor.clone().contiguous()
        elif key in parameters and tensor.is_floating_point():
            matched += 1
    if matched == 0 and state:
        warnings.warn(
            f"save_ticket(): none of the model's weights equal those build_model({spec!r}) generates, so "
            f"the ticket stores every value; was the model built from this spec (same seed, init, width)?",
            stacklevel=2)
    stored_params = any(k.startswith("state/") and k[6:] in parameters for k in tensors)
    info = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "spec": json.dumps(spec.to_dict(), sort_keys=True),
        "seed": str(spec.seed),
        "weights_hash": weights_hash(reference),
        "versions": json.dumps(_versions(spec), sort_keys=True),
        "gated": json.dumps({k: gated[k] for k in state if k in gated}),
        "formulation": json.dumps({k: labels[k] for k in state if k in labels}),
        "kind": "weak" if trained_values or stored_params else "strong",
        "kept": str(kept),
        "total": str(total),
        "metadata": user,
    }
    info["checksum"] = ticket_checksum(tensors, info)
    return _atomic_save(tensors, Path(path), info)


def ticket_checksum(tensors: dict[str, Tensor], header: dict[str, str]) -> str:
    """``"sha256:<hex>"`` of a ticket's tensors (name, dtype, shape, bytes) and header fields (all but
    ``checksum``), in name order: one flipped byte anywhere in the file changes it."""
    digest = hashlib.sha256()
    for key in sorted(header):
        if key != "checksum":
            digest.update(f"{key}={header[key]}\0".encode())
    for key, tensor in sorted(tensors.items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def _check_same_architecture(state: dict[str, Tensor], ref: dict[str, Tensor], spec: ModelSpec) -> None:
    missing, extra = sorted(set(ref) - set(state)), sorted(set(state) - set(ref))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(ref[k].shape)}" for k in ref
              if k in state and state[k].shape != ref[k].shape]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected keys {extra[:5]}{'...' if len(extra) > 5 else ''}")
        if shapes:
            parts.append(f"shapes differ ({'; '.join(shapes[:3])})")
        raise TicketMismatchError(
            f"save_ticket(): the model is not the one build_model({spec!r}) makes: {', '.join(parts)}. "
            f"Pass the spec the model was built from."
        )


def _atomic_save(tensors: dict[str, Tensor], path: Path, info: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=info))


# ---------------------------------------------------------------------------------------- load
def ticket_info(path: str | os.PathLike) -> dict[str, Any]:
    """The header of a compact ticket, parsed, without building the model or reading the tensors.

    Keys: ``spec`` (a :class:`~torch_slt.experiment.zoo.ModelSpec`), ``seed``, ``weights_hash``, ``versions``,
    ``gated``, ``kind``, ``kept``, ``total``, ``sparsity``, ``metadata`` (the caller's dict),
    ``format_version`` and ``file_bytes``.

    Raises:
        FileNotFoundError: no file at ``path``.
        TicketFormatError: the file is not a readable safetensors file, or a header field is missing or
            malformed (the message names the field).
        ValueError: a safetensors file that is not a compact ticket, or a newer format version.
    """
    path = Path(path)
    return _parse_header(path, _read_header(path))


def _read_header(path: Path) -> dict[str, str]:
    _require_safetensors()
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ticket file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise TicketFormatError(f"{path} is not a readable safetensors file ({brief(err)}): "
                                f"empty, truncated or damaged; save the ticket again or copy it "
                                f"again") from None


def _parse_header(path: Path, raw: dict[str, str]) -> dict[str, Any]:
    if raw.get("format") != FORMAT:
        raise ValueError(f"{path} is not a torch_slt compact ticket (no format={FORMAT!r} in its metadata); "
                         f"a plain state_dict loads with safetensors.torch.load_file")
    version = _field(path, raw, "format_version", int)
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was written in ticket format {version}, newer than this torch_slt reads "
                         f"({FORMAT_VERSION}); upgrade torch_slt")
    if version < 1:
        raise TicketFormatError(f"{path}: format_version {version} is not a ticket format (1 to "
                                f"{FORMAT_VERSION}); the file is damaged")
    gated = _field(path, raw, "gated", _json_of(dict))
    kept, total = _field(path, raw, "kept", int), _field(path, raw, "total", int)
    if not 0 <= kept <= total:
        raise TicketFormatError(f"{path}: kept={kept} of total={total} gated weights is impossible; the "
                                f"header is damaged")
    return {
        "spec": _field(path, raw, "spec", lambda v: ModelSpec.from_dict(json.loads(v))),
        "seed": _field(path, raw, "seed", int),
        "weights_hash": _field(path, raw, "weights_hash", str),
        "versions": _field(path, raw, "versions", _json_of(dict)),
        "gated": gated,
        # absent in tickets before issue 19
        "formulation": _field(path, raw, "formulation", _json_of(dict)) if "formulation" in raw else {},
        "kind": _field(path, raw, "kind", str),
        "kept": kept,
        "total": total,
        "sparsity": 1.0 - kept / total if total else 0.0,
        "metadata": _field(path, raw, "metadata", _json_of(dict)),
        "format_version": version,
        "file_bytes": path.stat().st_size,
    }


def _field(path: Path, raw: dict[str, str], name: str, parse: Any) -> Any:
    """Header field ``name`` parsed with ``parse``; a missing or malformed one names itself."""
    if name not in raw:
        raise TicketFormatError(f"{path}: the header has no {name!r} field; the file is damaged or was not "
                                f"written by torch_slt.save_ticket")
    try:
        return parse(raw[name])
    except (ValueError, TypeError, KeyError) as err:
        raise TicketFormatError(f"{path}: the header field {name!r} is malformed ({raw[name][:60]!r}: "
                                f"{err}); the file is damaged") from None


def _json_of(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = json.loads(text)
        if not isinstance(value, kind):
            raise TypeError(f"expected a JSON {kind.__name__}, got {type(value).__name__}")
        return value

    return parse


def _read_tensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise TicketFormatError(f"{path}: cannot read its tensors ({brief(err)}); the file "
                                f"is truncated or damaged") from None


def _verify(path: Path, raw: dict[str, str], info: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """The checksum (format 2) and the layout: every tensor belongs to a gated weight or a state entry."""
    if info["format_version"] >= 2:
        expected = _field(path, raw, "checksum", str)
        found = ticket_checksum(tensors, raw)
        if found != expected:
            raise TicketFormatError(f"{path}: the checksum does not match ({found[:19]}... computed, "
                                    f"{expected[:19]}... recorded): the file was damaged or edited after "
                                    f"it was saved. Nothing was loaded; save the ticket again or restore "
                                    f"a good copy.")
    for name in tensors:
        prefix = next((p for p in _PREFIXES if name.startswith(p)), None)
        if prefix is None:
            raise TicketFormatError(f"{path}: unknown tensor {name!r} (a ticket holds only "
                                    f"{', '.join(p + '<key>' for p in _PREFIXES)}); the file is damaged")
        if prefix in ("mask/", "values/") and name[len(prefix):] not in info["gated"]:
            raise TicketFormatError(f"{path}: tensor {name!r} belongs to no gated weight (gated: "
                                    f"{', '.join(list(info['gated'])[:5])}); the file is damaged")


def load_ticket(path: str | os.PathLike, *,
                map_location: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec, dict]:
    """Rebuild the finalized model a compact ticket describes.

    The file's checksum and layout are verified first; the weights are regenerated with
    ``build_model(spec)`` and must hash to the value the ticket recorded; then the masks are applied
    (and any stored values and state loaded). The model is a standard ``nn.Module`` in eval mode on
    ``map_location``; ``torch_slt.report(model)`` shows its per-layer sparsity.

    Returns:
        ``(model, spec, metadata)``, ``metadata`` being the dict given to :func:`save_ticket`.

    Raises:
        TicketFormatError: the file is empty, truncated, damaged or edited (a checksum that does not
            match, a missing or malformed header field, a tensor that fits nothing).
        TicketMismatchError: this installation generates other weights from the spec than the one
            that saved the ticket (the message names both library versions).
        ValueError: the file is not a compact ticket.
    """
    path = Path(path)
    raw = _read_header(path)
    info = _parse_header(path, raw)
    tensors = _read_tensors(path)
    _verify(path, raw, info, tensors)
    spec = info["spec"]
    model = build_model(spec)
    found = weights_hash(model)
    if found != info["weights_hash"]:
        raise TicketMismatchError(_hash_mismatch_message(path, spec, info["versions"], found,
                                                         info["weights_hash"]))
    state = model.state_dict()
    baked = {key: _baked(path, key, state, tensors) for key in info["gated"]}
    kept = sum(int(torch.count_nonzero(m)) for _, m in baked.values())
    if kept != info["kept"]:
        raise TicketFormatError(f"{path}: the masks keep {kept} weights but the header says kept="
                                f"{info['kept']}; the file is damaged")
    restored = {}
    for name, tensor in tensors.items():
        if name.startswith("state/"):
            key = name[len("state/"):]
            if key not in state or state[key].shape != tensor.shape:
                where = "the model has no such entry" if key not in state else (
                    f"shape {tuple(tensor.shape)}, the model's is {tuple(state[key].shape)}")
                raise TicketFormatError(f"{path}: tensor {name!r} does not fit the model ({where}); the "
                                        f"file is damaged")
            restored[key] = tensor
    with torch.no_grad():
        for key, (value, _) in baked.items():
            state[key].copy_(value)
        for key, tensor in restored.items():
            state[key].copy_(tensor)
    record_gate_history(model, dict(info["gated"]))
    record_gate_formulations(model, dict(info["formulation"]))
    return model.to(map_location).eval(), spec, info["metadata"]


def _baked(path: Path, key: str, state: dict[str, Tensor],
           tensors: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """The finalized value of gated tensor ``key`` (and its mask), every size checked first."""
    if key not in state:
        raise TicketFormatError(f"{path}: the gated tensor {key!r} is not in the model its spec builds; the "
                                f"file is damaged")
    target = state[key]
    packed = tensors.get("mask/" + key)
    if packed is None:  # nothing removed from this tensor
        mask = torch.ones_like(target, dtype=torch.bool)
    else:
        try:
            mask = unpack_bits(packed, target.shape)
        except TicketMismatchError as err:
            raise TicketFormatError(f"{path}: mask/{key}: {err}; the file is damaged") from None
    value = target * mask.to(target.dtype)
    values = tensors.get("values/" + key)
    if values is not None:
        n_kept = int(mask.sum())
        if values.dim() != 1 or values.numel() != n_kept:
            raise TicketFormatError(f"{path}: values/{key} holds {values.numel()} values for the {n_kept} "
                                    f"weights its mask keeps; the file is damaged")
        value[mask] = values.to(target.dtype)
    return value, mask


def _hash_mismatch_message(path, spec: ModelSpec, saved: dict[str, str], found: str, expected: str) -> str:
    here = _versions(spec)
    differ = [f"{lib} {saved.get(lib, '?')} (saved) vs {here.get(lib, 'not installed')} (here)"
              for lib in sorted(set(saved) | set(here)) if saved.get(lib) != here.get(lib)]
    versions = "; ".join(differ) if differ else (
        f"torch {here.get('torch')} on both sides, so the difference comes from the platform or a patched "
        f"library")
    return (
        f"{path}: the weights generated from seed {spec.seed} for {spec.name!r} are not the ones this ticket "
        f"was saved with (hash {found[:19]}... here, {expected[:19]}... in the file). The random numbers "
        f"depend on the library versions: {versions}. Load it with the versions that saved it, e.g. "
        f"pip install torch=={saved.get('torch', '?')}."
    )


# ---------------------------------------------------------------------------------------- helpers
def _versions(spec: ModelSpec) -> dict[str, str]:
    import torch_slt

    versions = {"torch": torch.__version__, "torch_slt": torch_slt.__version__}
    library = ("timm" if spec.name.startswith(TIMM_PREFIX) else "transformers" if spec.name in ("vit", "swin")
               else "torchvision" if spec.name in ("resnet18", "resnet50", "wrn50") else None)
    if library:
        try:
            module = __import__(library)
            versions[library] = getattr(module, "__version__", "unknown")
        except ImportError:
            versions[library] = "not installed"
    return versions


def _json_default(value: Any) -> Any:
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"save_ticket(): metadata value {value!r} ({type(value).__name__}) is not "
                    f"JSON-serialisable")


def _require_safetensors() -> None:
    try:
        import safetensors  # noqa: F401
    except ImportError as err:
        raise ImportError('compact tickets need safetensors: pip install "torch-slt[cli]" '
                          '(or pip install safetensors)') from err
