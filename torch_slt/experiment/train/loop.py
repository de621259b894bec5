r"""The training loop shared by the ``torch-slt`` command line, the examples and the benchmarks.

:func:`fit` trains the masks of a gated model (its weights stay frozen), or the weights as well with
``train_weights=True`` (the weak-ticket variant), or every weight of an ungated model (the dense
baseline). The loss is cross entropy plus :func:`torch_slt.penalty`. Each epoch ends with an evaluation
on the validation split and, when ``checkpoint`` is given, a resume checkpoint, so that a killed run
started again with ``resume=True`` ends with exactly the ticket of an uninterrupted run.

Settings left at ``None`` in :class:`TrainConfig` come from :data:`METHOD_DEFAULTS`, one row per method,
taken from the reference implementations (see ``docs/cli.md`` for the table and its sources).

Example:
    >>> import torch, torch_slt
    >>> from torch.utils.data import TensorDataset
    >>> from torch_slt.train import TrainConfig, evaluate, fit
    >>> data = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
    >>> model = torch_slt.apply(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
    ...                                             torch.nn.Linear(8, 2)), "stg")
    >>> result = fit(model, data, data, TrainConfig(epochs=2, batch_size=16, quiet=True))
    >>> [row["epoch"] for row in result.history]
    [1, 2]
    >>> 0.0 <= evaluate(model, data) <= 1.0
    True
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from torch_slt.api import gated_tensors, mask_parameters, penalty

__all__ = ["METHOD_DEFAULTS", "FitResult", "MethodDefaults", "TensorBatches", "TrainConfig", "evaluate",
           "fit", "method_defaults", "method_of", "resolve_device"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant")
#: Settings that may differ between an interrupted run and its resumption.
_RESUME_FREE = ("device", "quiet", "stop_after", "num_workers")


@dataclass(frozen=True)
class MethodDefaults:
    """Optimiser settings of one method (``lr``, ``weight_decay`` for the masks; ``weight_lr`` for the
    weights when they are trained too), and where they come from."""

    optimizer: str
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    weight_lr: float = 1e-3
    source: str = ""


# Gate learning rates: about a tenth of the distance from a gate's initial value to the keep threshold
# per Adam step, so a gate can cross within tens of steps while noisy steps average out. The stg and L0
# references (1e-5 and 1e-3) gate a few features over thousands of full-batch epochs instead.
_GATES = MethodDefaults(
    "adam", 5e-2, source="Adam as in the stg reference; lr 0.05 = 1/10 of the distance from mu_init "
    "0.5 to the threshold 0 (stg's 1e-5 is for thousands of full-batch epochs); no weight decay, which "
    "would pull every gate towards the threshold")
_ONE_SHOT = MethodDefaults(
    "sgd", 0.1, 0.9, 1e-4, "cosine", weight_lr=0.1,
    source="Synaptic-Flow post-training (SGD momentum 0.9, lr 0.1, wd 1e-4), cosine instead of steps; "
    "used only with train_weights (the mask itself is chosen once, at apply)")

#: Per-method optimiser defaults; ``"dense"`` is the dense-trained baseline, ``"learned"`` and
#: ``"fixed"`` cover methods without a row of their own.
METHOD_DEFAULTS: dict[str, MethodDefaults] = {
    "stg": _GATES,
    "hardconcrete": MethodDefaults(
        "adam", 0.15, source="Adam as in the L0 reference; lr 0.15 = 1/10 of the distance from log_alpha 0 "
        "(droprate 0.5) to the threshold beta * log(-gamma / zeta) = -1.6 (L0's 1e-3 is for 200 epochs); "
        "no weight decay"),
    "edgepopup": MethodDefaults(
        "sgd", 0.1, 0.9, 5e-4, "cosine", weight_lr=0.1,
        source="hidden-networks (SGD momentum 0.9, lr 0.1, cosine, weight decay 5e-4 on the scores: "
        "simple_mnist_example.py and the CIFAR ResNet-18 configs)"),
    "supermask": MethodDefaults(
        "sgd", 100.0, 0.9, 0.0, "cosine", weight_lr=0.1,
        source="Zhou et al. (SGD momentum 0.9, lr 100 for the FC/MNIST supermask; hidden-networks' "
        "sample baseline uses lr 200, cosine, no weight decay): the logit gradients are tiny"),
    "dense": MethodDefaults(
        "sgd", 0.1, 0.9, 1e-4, "cosine", weight_lr=0.1,
        source="open_lth / Synaptic-Flow dense training: SGD momentum 0.9, lr 0.1, wd 1e-4, cosine"),
    "learned": _GATES,
    "fixed": _ONE_SHOT,
}


def method_defaults(method: str | None) -> MethodDefaults:
    """The row of :data:`METHOD_DEFAULTS` for ``method`` (a registered name, or ``None`` = dense)."""
    if method is None:
        return METHOD_DEFAULTS["dense"]
    if method in METHOD_DEFAULTS:
        return METHOD_DEFAULTS[method]
    from torch_slt.registry import get_method

    return METHOD_DEFAULTS["learned" if get_method(method).learned else "fixed"]


@dataclass
class TrainConfig:
    """How :func:`fit` trains. ``None`` means "the method's default" (:data:`METHOD_DEFAULTS`).

    Args:
        epochs: passes over the training split.
        batch_size: training batch size (evaluation uses larger batches).
        lr: learning rate of the masks (gates, scores); of the weights for the dense baseline.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        momentum: SGD momentum.
        weight_decay: weight decay of the masks (of the weights for the dense baseline).
        schedule: ``"cosine"`` (annealed to 0 over ``epochs``, stepped per epoch) or ``"constant"``.
        weight_lr: learning rate of the weights when ``train_weights`` is set.
        train_weights: train the surviving weights too (a weak ticket); the masks stay learned.
        seed: seeds shuffling and every random draw of training.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"``.
        quiet: no progress bar and no per-epoch lines.
        stop_after: stop after this many epochs, as a killed run would (to test ``resume``).
        num_workers: DataLoader worker processes.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    weight_lr: float | None = None
    train_weights: bool = False
    seed: int = 0
    device: str = "cpu"
    quiet: bool = False
    stop_after: int | None = None
    num_workers: int = 0

    def resolved(self, method: str | None) -> TrainConfig:
        """A copy whose ``None`` settings are filled from ``method``'s defaults, checked."""
        d = method_defaults(method)
        filled = {f: getattr(d, f) for f in ("optimizer", "lr", "momentum", "weight_decay", "schedule",
                                             "weight_lr") if getattr(self, f) is None}
        cfg = replace(self, **filled)
        cfg._check()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def _check(self) -> None:
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig: optimizer={self.optimizer!r} is not one of "
                             f"{', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig: schedule={self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        for name in ("lr", "weight_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"TrainConfig: {name}={value!r} must be a positive number")
        for name in ("momentum", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"TrainConfig: {name}={value!r} must be a number >= 0")
        if self.stop_after is not None:
            _positive_int("stop_after", self.stop_after)


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"TrainConfig: {name}={value!r} must be a positive integer")


@dataclass
class FitResult:
    """What :func:`fit` did: one ``history`` row per epoch (``epoch``, ``loss``, ``val_accuracy``,
    ``sparsity``, ``lr``), whether all epochs ran, the epoch it resumed from, and the training time in
    seconds (summed over interrupted and resumed parts)."""

    config: TrainConfig
    method: str | None
    history: list[dict[str, float]] = field(default_factory=list)
    completed: bool = False
    resumed_from: int = 0
    wall_time: float = 0.0

    @property
    def val_accuracy(self) -> float | None:
        return self.history[-1]["val_accuracy"] if self.history else None


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when available, then MPS, else the CPU; other names are checked."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device; use cpu, cuda, cuda:N, mps or "
                         f"auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} was asked for but MPS is not available here; use --device cpu")
    return dev


def method_of(model: nn.Module) -> str | None:
    """The name of the method gating ``model`` (``None`` for an ungated model); one method per model."""
    names = {type(hook).name for _, _, hook in gated_tensors(model)}
    if len(names) > 1:
        raise ValueError(f"fit(): the model is gated by several methods ({', '.join(sorted(names))}); "
                         f"gate it with one method")
    return names.pop() if names else None


# ---------------------------------------------------------------------------------------------- data
#: Datasets held in memory up to this size are batched by indexing whole tensors (no per-item
#: DataLoader work), on the training device.
IN_MEMORY_BYTES = 1 << 30


class TensorBatches:
    """Batches of in-memory tensors: ``x[idx], y[idx]`` for a permutation drawn from ``generator`` at
    the start of every pass (so a saved generator state replays the same batches)."""

    def __init__(self, inputs: Tensor, targets: Tensor, batch_size: int, *, shuffle: bool,
                 generator: torch.Generator | None = None) -> None:
        self.inputs, self.targets, self.batch_size = inputs, targets, batch_size
        self.shuffle, self.generator = shuffle, generator

    def __len__(self) -> int:
        return math.ceil(len(self.targets) / self.batch_size)

    def __iter__(self):
        n = len(self.targets)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.targets.device)
        for idx in order.split(self.batch_size):
            yield self.inputs[idx], self.targets[idx]


def _in_memory(data: Dataset) -> tuple[Tensor, Tensor] | None:
    """``(inputs, labels)`` of a TensorDataset or a dataset with ``tensors()`` (torch_slt.data's),
    when they fit in :data:`IN_MEMORY_BYTES`; otherwise None."""
    if isinstance(data, TensorDataset) and len(data.tensors) >= 2:
        return data.tensors[0], data.tensors[1]
    if not callable(getattr(data, "tensors", None)) or len(data) == 0:  # type: ignore[arg-type]
        return None
    first = data[0][0]
    if not isinstance(first, Tensor) or len(data) * first.numel() * 4 > IN_MEMORY_BYTES:  # type: ignore[arg-type]
        return None
    inputs, targets = data.tensors()
    return inputs, targets


def _loader(data: Dataset | DataLoader | Iterable, batch_size: int, *, shuffle: bool,
            generator: torch.Generator | None = None, num_workers: int = 0,
            device: torch.device | None = None) -> Iterable:
    if isinstance(data, Dataset):
        tensors = _in_memory(data) if num_workers == 0 else None
        if tensors is not None:
            inputs, targets = (t.to(device) if device is not None else t for t in tensors)
            return TensorBatches(inputs, targets, batch_size, shuffle=shuffle, generator=generator)
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator,
                          num_workers=num_workers, drop_last=False)
    return data


def _logits(output: Any) -> Tensor:
    """The logits of a model output: a tensor, a Hugging Face ``ModelOutput`` or a tuple."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(f"fit(): cannot find logits in a model output of type {type(output).__name__}")


def _to(batch: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    inputs, targets = batch[0], batch[1]
    return inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset | DataLoader | Iterable, *, batch_size: int = 512,
             device: str | torch.device | None = None) -> float:
    """Top-1 accuracy of ``model`` (in eval mode, so gated models use their hard masks) on ``data``:
    a Dataset of ``(input, label)`` items or an iterable of ``(inputs, labels)`` batches. The model's
    train/eval mode is restored afterwards."""
    if device is None:
        device = next((t.device for t in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for batch in _loader(data, batch_size, shuffle=False, device=torch.device(device)):
            inputs, targets = _to(batch, torch.device(device))
            correct += int((_logits(model(inputs)).argmax(-1) == targets).sum())
            total += targets.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluate(): the data is empty")
    return correct / total


# ----------------------------------------------------------------------------------- optimisation
def _param_groups(model: nn.Module, cfg: TrainConfig, method: str | None) -> list[dict[str, Any]]:
    if method is None:  # dense baseline: every parameter, at the dense lr
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "lr": cfg.lr, "weight_decay": cfg.weight_decay}] if params else []
    gates = mask_parameters(model)
    groups = [{"params": gates, "lr": cfg.lr, "weight_decay": cfg.weight_decay}] if gates else []
    if cfg.train_weights:
        gate_ids = {id(p) for p in gates}
        weights = [p for p in model.parameters() if id(p) not in gate_ids]
        for p in weights:
            p.requires_grad_(True)
        # Weight decay on the weights only with SGD (as in dense SGD training); Adam gets none.
        decay = METHOD_DEFAULTS["dense"].weight_decay if cfg.optimizer == "sgd" else 0.0
        groups.append({"params": weights, "lr": cfg.weight_lr, "weight_decay": decay})
    return groups


def _optimizer(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.Adam(groups, lr=cfg.lr)


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return None


def _current_sparsity(model: nn.Module) -> float | None:
    """Fraction removed by the current hard masks (the ``<tensor>_mask`` buffers), cheaply."""
    kept = total = 0
    for _, module, hook in gated_tensors(model):
        mask = module._buffers[hook._tensor_name + "_mask"]
        kept += int(mask.sum())
        total += mask.numel()
    return 1.0 - kept / total if total else None


# ------------------------------------------------------------------------------------- checkpoint
def _rng_state(loader_gen: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "loader": loader_gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, gauss]
    except ImportError:
        pass
    return state


def _set_rng_state(state: dict[str, Any], loader_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    loader_gen.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, gauss))


def _as_tuple(obj: Any) -> Any:
    return tuple(_as_tuple(x) for x in obj) if isinstance(obj, (list, tuple)) else obj


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)   # a kill during the write leaves the previous checkpoint intact


def _load_checkpoint(path: Path, cfg: TrainConfig, method: str | None) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ValueError(f"fit(): cannot read the checkpoint {path} ({err}); delete it to start "
                         f"over") from None
    saved = TrainConfig.from_dict(ckpt["config"])
    diff = [f"{k}: {getattr(saved, k)!r} -> {getattr(cfg, k)!r}" for k in saved.to_dict()
            if k not in _RESUME_FREE and getattr(saved, k) != getattr(cfg, k)]
    if ckpt.get("method") != method:
        diff.insert(0, f"method: {ckpt.get('method')!r} -> {method!r}")
    if diff:
        raise ValueError(f"fit(): the checkpoint {path} was written with other settings ({'; '.join(diff)}); "
                         f"resume with the same settings, or start over in a new folder")
    return ckpt


# ------------------------------------------------------------------------------------------- fit
def fit(model: nn.Module, train: Dataset | DataLoader, val: Dataset | DataLoader | None = None,
        config: TrainConfig | None = None, *, checkpoint: str | os.PathLike | None = None,
        resume: bool = False) -> FitResult:
    """Train ``model`` in place: its masks (weights frozen), or with ``train_weights`` its weights too;
    an ungated model trains all its weights (the dense baseline).

    Args:
        model: a model gated by one method (:func:`torch_slt.apply`), or an ungated model.
        train: the training Dataset of ``(input, label)`` items (shuffled with ``config.seed``), or a
            DataLoader.
        val: evaluated at the end of every epoch (``history[i]["val_accuracy"]``); optional.
        config: :class:`TrainConfig`; ``None`` settings come from the method's defaults.
        checkpoint: file written at the end of every epoch (masks and model state, optimizer,
            scheduler, RNG states, epoch); loaded with ``torch.load(weights_only=True)``.
        resume: continue from ``checkpoint`` when it exists (with the same settings); the result is
            then identical to an uninterrupted run.

    Returns:
        a :class:`FitResult`. The model is left in eval mode on ``config.device``.

    ``fit`` seeds torch's global RNG with ``config.seed`` (the gate noise is drawn from it) and shuffles
    with its own generator, so two calls with the same config give the same masks. The checkpoint holds
    every RNG state, which is why a resumed run matches an uninterrupted one bit for bit (on the same
    device and library versions).
    """
    method = method_of(model)
    cfg = (config or TrainConfig()).resolved(method)
    device = resolve_device(cfg.device)
    model.to(device)
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    train_loader = _loader(train, cfg.batch_size, shuffle=True, generator=loader_gen,
                           num_workers=cfg.num_workers, device=device)
    if val is not None:
        val = _loader(val, 512, shuffle=False, num_workers=cfg.num_workers, device=device)
    groups = _param_groups(model, cfg, method)
    optimizer = _optimizer(groups, cfg) if groups else None
    scheduler = _scheduler(optimizer, cfg) if optimizer is not None else None
    result = FitResult(cfg, method)
    start = 0
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = _load_checkpoint(ckpt_path, cfg, method)
        model.load_state_dict(ckpt["model"])
        if optimizer is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"], loader_gen)
        start = result.resumed_from = int(ckpt["epoch"])
        result.history = list(ckpt["history"])
        result.wall_time = float(ckpt["wall_time"])

    if optimizer is None:  # a fixed mask on frozen weights: nothing to train, one evaluation
        if val is not None and not result.history:
            result.history.append({"epoch": 0, "loss": float("nan"), "sparsity": _current_sparsity(model),
                                   "val_accuracy": evaluate(model, val, device=device), "lr": 0.0})
        result.completed = True
        model.eval()
        return result

    stop = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
    bar = _progress(cfg, method, train_loader, start)
    try:
        for epoch in range(start, stop):
            t0 = time.perf_counter()
            loss = _train_epoch(model, train_loader, optimizer, device, bar, epoch, cfg)
            lr = optimizer.param_groups[0]["lr"]
            if scheduler is not None:
                scheduler.step()
            row = {"epoch": epoch + 1, "loss": loss, "sparsity": _current_sparsity(model), "lr": lr,
                   "val_accuracy": evaluate(model, val, device=device) if val is not None else None}
            result.history.append(row)
            result.wall_time += time.perf_counter() - t0
            if bar is not None:
                bar.write(_epoch_line(row, cfg.epochs), file=sys.stderr)
            if ckpt_path is not None:
                _save_checkpoint(ckpt_path, {
                    "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else {},
                    "rng": _rng_state(loader_gen), "history": result.history, "config": cfg.to_dict(),
                    "method": method, "wall_time": result.wall_time})
    finally:
        if bar is not None:
            bar.close()
    result.completed = len(result.history) >= cfg.epochs and stop == cfg.epochs
    model.eval()
    return result


def _train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, device: torch.device,
                 bar: Any, epoch: int, cfg: TrainConfig) -> float:
    model.train()
    total, count = torch.zeros((), device=device), 0
    for step, batch in enumerate(loader):
        inputs, targets = _to(batch, device)
        loss = nn.functional.cross_entropy(_logits(model(inputs)), targets) + penalty(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        count += 1
        if bar is not None:
            bar.update(1)
            if step % 20 == 0:
                sparsity = _current_sparsity(model)
                post = {"loss": f"{loss.item():.3f}"}
                if sparsity is not None:
                    post["sparsity"] = f"{sparsity:.1%}"
                bar.set_description(f"{bar.slt_name} epoch {epoch + 1}/{cfg.epochs}", refresh=False)
                bar.set_postfix(post)
    return float(total / max(count, 1))


def _progress(cfg: TrainConfig, method: str | None, loader: Iterable, start: int):
    if cfg.quiet:
        return None
    from tqdm.auto import tqdm

    try:
        steps = len(loader)  # type: ignore[arg-type]
    except TypeError:
        steps = None
    total = steps * cfg.epochs if steps is not None else None
    bar = tqdm(total=total, initial=start * steps if steps else 0, unit="step", dynamic_ncols=True,
               desc=f"{method or 'dense'} epoch {start + 1}/{cfg.epochs}", file=sys.stderr)
    bar.slt_name = method or "dense"
    return bar


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}:", f"loss {row['loss']:.4f}"]
    if row["val_accuracy"] is not None:
        parts.append(f"val {row['val_accuracy']:.2%}")
    if row["sparsity"] is not None:
        parts.append(f"sparsity {row['sparsity']:.2%}")
    return "  ".join(parts)

