"""``compact``: remove the channels, neurons and heads a structured ticket pruned, physically.

After ``torch_slt.finalize`` a structured ticket (``apply(..., granularity="channel")``) still has its
full shape, with whole rows of zeros. :func:`compact` builds torch-pruning's dependency graph (Fang et
al., "DepGraph: Towards Any Structural Pruning", CVPR 2023) to find every layer coupled to each
output channel (BatchNorm, residual adds, the next layer's inputs, attention q/k/v/output), and removes
a channel only when doing so leaves the outputs unchanged:

* the gates closed it in at least one producing layer (a zero weight row), and
* every consumer (a linear or convolution layer reading that channel) receives a *constant* from it on
  ``example_inputs``, e.g. ``relu(bias)`` or a BatchNorm's shift of zero: the constant is folded into
  the consumer's bias (a convolution with zero padding takes it only when it is 0, because padding makes
  the contribution vary at the borders).

Channels where that fails are kept and counted in the report: a residual stream whose producers
disagree (one block closed channel ``c``, another kept it) keeps the union; a channel that carries a
nonzero constant into a padded convolution is kept too (re-estimate the BatchNorm statistics with the
mask in place, :func:`recalibrate_batchnorm`, to make such channels exactly zero). Groups that cross a
LayerNorm or GroupNorm (which normalise over channels) are left whole. Attention projections lose
whole heads only (Hugging Face ViT/Swin).

Example:
    >>> import torch, torch_slt
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> net = torch_slt.apply(net, "magnitude", sparsity=0.5, granularity="neuron")
    >>> net = torch_slt.finalize(net)
    >>> small = torch_slt.compact(net, torch.randn(2, 4), return_report=False)
    >>> small[0].out_features < 8, small.compact_report.params_after < small.compact_report.params_before
    (True, True)
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from torch_slt.core.api import is_gated
from torch_slt.core.batchnorm import recalibrate_batchnorm  # noqa: F401  (its home before 0.2)
from torch_slt.core.errors import SLTError
from torch_slt.core.granularity import attention_heads
from torch_slt.structured._returns import check_return_report, returned

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PER_CHANNEL_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class CompactError(SLTError, ValueError):
    """``compact`` cannot run on this model (still gated, or its outputs changed)."""


@dataclass
class CompactReport:
    """What :func:`compact` removed, with torch-pruning's parameter and MAC counts before and after."""

    params_before: int
    params_after: int
    macs_before: float
    macs_after: float
    removed: dict[str, int] = field(default_factory=dict)     # producing layer -> output units removed
    kept: list[str] = field(default_factory=list)             # why closed units were kept
    max_abs_diff: float = 0.0                                 # outputs, compact vs finalized

    @property
    def param_ratio(self) -> float:
        return self.params_after / max(1, self.params_before)

    @property
    def mac_ratio(self) -> float:
        return self.macs_after / max(1.0, self.macs_before)

    def to_markdown(self) -> str:
        lines = ["| | before | after | ratio |", "|---|---:|---:|---:|",
                 f"| parameters | {self.params_before} | {self.params_after} | {self.param_ratio:.3f} |",
                 f"| MACs | {self.macs_before:.0f} | {self.macs_after:.0f} | {self.mac_ratio:.3f} |", ""]
        lines += [f"- removed {n} output units of `{name}`" for name, n in self.removed.items()]
        lines += [f"- kept: {why}" for why in self.kept]
        lines.append(f"- max |compact - finalized| on the example inputs: {self.max_abs_diff:.2e}")
        return "\n".join(lines)


def compact(model: nn.Module, example_inputs: Any, *, ignored_layers: list[nn.Module] | None = None,
            atol: float = 1e-5, return_report: bool | None = None) -> nn.Module:
    """A smaller copy of a finalized ``model`` without the units its structured ticket closed.

    Args:
        model: a finalized model (``torch_slt.finalize``); it is not modified.
        example_inputs: a tensor (or tuple of tensors) the model accepts, used to trace the graph and to
            find constant channels. Use a few real examples: a channel is kept unless it is constant on
            them *and* closed by the ticket.
        ignored_layers: modules whose output units must not be removed.
        atol: tolerance for "constant" and for the final output check.
        return_report: ``False`` returns the compact model; ``True`` the pair ``(model, report)``; left
            out, the pair with a ``FutureWarning`` (the 0.1 shape, kept for one release).

    Returns:
        The compact model, a standard ``nn.Module`` (same classes, fewer units) whose outputs equal the
        finalized model's; its :class:`CompactReport` is ``small.compact_report``.

    Raises:
        CompactError: ``model`` is still gated, or the outputs changed (a bug: please report it).
    """
    import torch_pruning as tp

    check_return_report(return_report, "compact()")
    if is_gated(model):
        raise CompactError("compact(): the model still carries gates; call torch_slt.finalize(model) "
                           "first (compact removes what the finalized ticket zeroed)")
    small = copy.deepcopy(model).eval()
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    with torch.no_grad():
        reference = _first_tensor(small(*inputs))
    macs_before, params_before = tp.utils.count_ops_and_params(small, example_inputs)
    with warnings.catch_warnings():
        # Class/position embeddings: torch-pruning notes them; compact leaves their groups whole.
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        graph = tp.DependencyGraph().build_dependency(small, example_inputs=example_inputs)
    seen = _consumer_inputs(small, inputs)
    names = {m: n for n, m in small.named_modules()}
    # nn.MultiheadAttention packs q/k/v in one tensor that torch-pruning splits by embedding dimension,
    # not by head: left whole.
    ignored = list(ignored_layers or []) + [m for m in small.modules()
                                            if isinstance(m, nn.MultiheadAttention)]
    ignored = [_counterpart(model, small, m) for m in ignored]
    report = CompactReport(params_before, 0, float(macs_before), 0.0)
    plans = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=_LAYERS):
        plan = _plan_group(small, group, graph, seen, names, atol, report)
        if plan is not None:
            plans.append(plan)
    with torch.no_grad():
        for plan in plans:
            plan.fold()
    for plan in plans:
        graph.get_pruning_group(plan.root, plan.handler, plan.root_idxs).prune()
        for name, count in plan.removed.items():
            report.removed[name] = report.removed.get(name, 0) + count
    _update_head_counts(small)
    with torch.no_grad():
        out = _first_tensor(small(*inputs))
    if out.shape != reference.shape:
        raise CompactError(f"compact(): output shape changed from {tuple(reference.shape)} to "
                           f"{tuple(out.shape)}; pass the output layer in ignored_layers")
    report.max_abs_diff = float((out - reference).abs().max()) if out.numel() else 0.0
    scale = float(reference.abs().max()) if reference.numel() else 1.0
    if report.max_abs_diff > 1e3 * atol * max(1.0, scale):
        raise CompactError(f"compact(): outputs changed by {report.max_abs_diff:.3g}; this is a bug")
    macs_after, params_after = tp.utils.count_ops_and_params(small, example_inputs)
    report.params_after, report.macs_after = int(params_after), float(macs_after)
    return returned(small, report, "compact_report", return_report, "compact()")


def _counterpart(original: nn.Module, copied: nn.Module, module: nn.Module) -> nn.Module:
    """``module`` of ``original`` -> the same module in its deep copy (or itself if already there)."""
    for (_, a), (_, b) in zip(original.named_modules(), copied.named_modules()):
        if a is module:
            return b
    return module


def _first_tensor(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        return _first_tensor(output[0])
    if isinstance(output, dict):
        return _first_tensor(next(iter(output.values())))
    raise CompactError(f"compact(): cannot find a tensor in the model's output ({type(output).__name__})")


def _consumer_inputs(model: nn.Module, inputs: tuple) -> dict[nn.Module, tuple[Tensor, Tensor]]:
    """Per linear/conv layer: the min and max of each input channel over the example inputs."""
    seen: dict[nn.Module, tuple[Tensor, Tensor]] = {}

    def record(module: nn.Module, args: tuple) -> None:
        x = args[0].detach()
        if isinstance(module, nn.Linear):
            flat = x.reshape(-1, x.shape[-1])
        else:
            flat = x.transpose(0, 1).reshape(x.shape[1], -1).T
        lo, hi = flat.amin(0), flat.amax(0)
        if module in seen:       # a layer called twice: merge the ranges
            lo, hi = torch.minimum(lo, seen[module][0]), torch.maximum(hi, seen[module][1])
        seen[module] = (lo, hi)

    handles = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, _LAYERS)]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


class _Plan:
    """One dependency group's decision: which root indices go, and the constants to fold first."""

    def __init__(self, root: nn.Module, handler: Any, root_idxs: list[int]) -> None:
        self.root, self.handler, self.root_idxs = root, handler, root_idxs
        self.folds: list[tuple[nn.Module, int, float]] = []   # (consumer, input index, constant)
        self.removed: dict[str, int] = {}

    def fold(self) -> None:
        for consumer, index, value in self.folds:
            if value == 0.0:
                continue
            contribution = consumer.weight[:, index] * value
            if contribution.dim() > 1:       # a convolution without padding: the kernel's sum
                contribution = contribution.flatten(1).sum(1)
            if consumer.bias is None:
                weight = consumer.weight
                consumer.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype,
                                                         device=weight.device))
            consumer.bias.data += contribution


def _pairs(item: Any) -> list[tuple[int, int]]:
    """``(index in this layer, index in the root layer)`` for every entry of a group item."""
    roots = getattr(item, "root_idxs", None)
    out = []
    for k, i in enumerate(item.idxs):
        if hasattr(i, "root_idx"):
            out.append((int(i.idx), int(i.root_idx)))
        else:
            out.append((int(i), int(roots[k])))
    return out


def _plan_group(model: nn.Module, group: Any, graph: Any, seen: dict, names: dict, atol: float,
                report: CompactReport) -> _Plan | None:
    producers, consumers = [], []
    root_item = group.items[0]
    root, handler = root_item.dep.target.module, root_item.dep.handler
    n_root = len(_pairs(root_item))
    for item in group.items:
        module, fn = item.dep.target.module, item.dep.handler
        if isinstance(module, _LAYERS):
            if graph.is_out_channel_pruning_fn(fn):
                if getattr(module, "groups", 1) != 1:
                    return _skip(report, f"`{names.get(root)}`: a grouped convolution in its group")
                producers.append((module, _pairs(item)))
            elif graph.is_in_channel_pruning_fn(fn):
                consumers.append((module, _pairs(item)))
        elif isinstance(module, nn.Module) and not isinstance(module, _PER_CHANNEL_NORMS):
            if any(True for _ in module.parameters(recurse=False)) or isinstance(module, nn.LayerNorm):
                return None   # a LayerNorm/GroupNorm/embedding: channels are not independent
        elif isinstance(module, nn.Parameter):
            return None       # an unwrapped parameter (position/class embedding): residual stream
    if not consumers or not producers:
        return None
    dead = torch.zeros(n_root, dtype=torch.bool)
    for module, pairs in producers:
        rows = (_rows(module) != 0).any(1)
        for idx, r in pairs:
            if not rows[idx]:
                dead[r] = True
    if not dead.any():
        return None
    removable = dead.clone()
    folds: list[tuple[nn.Module, int, float]] = []
    for module, pairs in consumers:
        if module not in seen:
            removable[:] = False
            break
        lo, hi = seen[module]
        padded = isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and _has_padding(module)
        for idx, r in pairs:
            if not removable[r]:
                continue
            value = float((lo[idx] + hi[idx]) / 2)
            constant = float(hi[idx] - lo[idx]) <= atol * max(1.0, abs(value))
            zero = constant and abs(value) <= atol
            if not constant or (padded and not zero):
                removable[r] = False
            else:
                folds.append((module, idx, 0.0 if zero else value))
    removable = _whole_heads(model, producers, names, removable)
    if removable.all():
        # Zero-width layers are not valid modules: keep one unit (it is closed, so outputs are equal).
        first_out = torch.ones_like(removable)
        first_out[0] = False
        removable &= _whole_heads(model, producers, names, first_out)
        report.kept.append(f"`{names.get(root)}`'s group is closed entirely; one unit kept "
                           f"(layers cannot be empty)")
    mixed = int((dead & ~removable).sum())
    if mixed:
        report.kept.append(f"{mixed} closed units of `{names.get(root)}`'s group (union kept): a coupled "
                           f"producer keeps them open (a residual stream; an attention head whose value "
                           f"projection is open) or they carry a nonzero constant into a padded convolution")
    if not removable.any():
        return None
    keep = set(torch.nonzero(removable).flatten().tolist())
    plan = _Plan(root, handler, sorted(keep))
    plan.folds = [(m, i, v) for m, i, v in folds if _root_of(consumers, m, i) in keep]
    for module, pairs in producers:
        plan.removed[names.get(module, "?")] = sum(1 for _, r in pairs if r in keep)
    return plan


def _root_of(consumers: list, module: nn.Module, idx: int) -> int:
    for m, pairs in consumers:
        if m is module:
            for i, r in pairs:
                if i == idx:
                    return r
    return -1


def _skip(report: CompactReport, why: str) -> None:
    report.kept.append(why)
    return None


def _rows(module: nn.Module) -> Tensor:
    return module.weight.detach().flatten(1)


def _has_padding(conv: nn.Module) -> bool:
    padding = conv.padding
    if isinstance(padding, str):
        return padding != "valid"
    return any(p != 0 for p in padding)


def _whole_heads(model: nn.Module, producers: list, names: dict, removable: Tensor) -> Tensor:
    """Attention q/k/v units go by whole heads: a head's units are removed only all together."""
    for module, pairs in producers:
        name = names.get(module, "")
        heads = attention_heads(model, name, module, "weight")
        if heads is None:
            continue
        count, parts = heads
        head_dim = module.weight.shape[0] // (count * parts)
        by_head: dict[int, list[int]] = {}
        for idx, r in pairs:
            by_head.setdefault((idx // head_dim) % count, []).append(r)
        for roots in by_head.values():
            if not all(bool(removable[r]) for r in roots):
                for r in roots:
                    removable[r] = False
    return removable


def _update_head_counts(model: nn.Module) -> None:
    """Attention modules record their head count (Hugging Face: ``num_attention_heads``; timm:
    ``num_heads``, used to reshape the packed ``qkv``); keep it true after heads went."""
    for module in model.modules():
        qkv = getattr(module, "qkv", None)
        if isinstance(qkv, nn.Linear) and isinstance(getattr(module, "num_heads", None), int) \
                and isinstance(getattr(module, "head_dim", None), int):
            module.num_heads = qkv.out_features // (3 * module.head_dim)
            if isinstance(getattr(module, "attn_dim", None), int):
                module.attn_dim = module.num_heads * module.head_dim
            continue
        heads = getattr(module, "num_attention_heads", None)
        head_dim = getattr(module, "head_dim", None) or getattr(module, "attention_head_size", None)
        proj = getattr(module, "q_proj", None) or getattr(module, "query", None)
        if isinstance(heads, int) and isinstance(head_dim, int) and isinstance(proj, nn.Linear):
            module.num_attention_heads = proj.out_features // head_dim
            if hasattr(module, "all_head_size"):
                module.all_head_size = proj.out_features
