"""The loop of :func:`fit`: optimiser groups, epochs, progress bar, per-epoch checkpoints."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from torch_slt.core.api import gated_tensors, mask_parameters, penalty
from torch_slt.core.batchnorm import recalibrate_batchnorm, stale_batchnorm
from torch_slt.core.health import check_finite_gates
from torch_slt.experiment.train.alarms import TrainingAlarm, training_alarms
from torch_slt.experiment.train.batches import _loader, _logits, _to, accuracy, method_of, resolve_device
from torch_slt.experiment.files import brief
from torch_slt.experiment.train.checkpoint import (_load_checkpoint, _rng_state, _save_checkpoint,
                                                  _set_rng_state)
from torch_slt.experiment.train.config import METHOD_DEFAULTS, FitResult, TrainConfig, training_seed

logger = logging.getLogger(__name__)

#: BatchNorm recalibration after each epoch (``TrainConfig.recalibrate_batchnorm``): batches of this
#: size, at most this many (2,048 images; the running averages settle within a few hundred).
RECALIBRATION_BATCH = 256
RECALIBRATION_STEPS = 8


# ----------------------------------------------------------------------------------- optimisation
def _param_groups(model: nn.Module, cfg: TrainConfig, method: str | None) -> list[dict[str, Any]]:
    if method is None:  # dense baseline: every parameter, at the dense lr
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "lr": cfg.lr, "weight_decay": cfg.weight_decay}] if params else []
    gates = list(mask_parameters(model))
    groups = [{"params": gates, "lr": cfg.lr, "weight_decay": cfg.weight_decay}] if gates else []
    if cfg.train_weights or _trains_weights(model):
        weights = _weights(model)
        for p in weights:
            p.requires_grad_(True)
        # Weight decay on the weights only with SGD (as in dense SGD training); Adam gets none.
        decay = METHOD_DEFAULTS["dense"].weight_decay if cfg.optimizer == "sgd" else 0.0
        # a one-shot mask has no gate to train: the weights are the run's only group, at its lr
        # (so --lr sets it; the one-shot defaults give lr = weight_lr = 0.1)
        groups.append({"params": weights, "lr": cfg.weight_lr if gates else cfg.lr, "weight_decay": decay})
    return groups


def _weights(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter but the gates: the weights, biases and norms."""
    gate_ids = {id(p) for p in mask_parameters(model)}
    return [p for p in model.parameters() if id(p) not in gate_ids]


def _has_trainable_weights(model: nn.Module) -> bool:
    """Whether any weight requires grad (``apply`` leaves a one-shot method's weights trainable unless
    ``freeze=True``)."""
    return any(p.requires_grad for p in _weights(model))


def _trains_weights(model: nn.Module) -> bool:
    """Whether the gating method trains the weights with its mask (``cs``), whatever ``train_weights``."""
    return any(hook.trains_weights for _, _, hook in gated_tensors(model))


def _optimizer(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
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


# ------------------------------------------------------------------------------------------- fit
def fit(model: nn.Module, train: Dataset | DataLoader, val: Dataset | DataLoader | None = None,
        config: TrainConfig | None = None, *, checkpoint: str | os.PathLike | None = None,
        resume: bool = False) -> FitResult:
    """Train ``model`` in place: its masks (weights frozen), or with ``train_weights`` its weights too;
    an ungated model trains all its weights (the dense baseline). A one-shot mask (magnitude, snip,
    ...) is fixed at ``apply``, so by default (``train_weights=None``) its surviving weights train:
    pruning at initialisation, as its papers do; ``train_weights=False``, or weights frozen by
    ``apply(..., freeze=True)``, keep them frozen.

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

    Raises:
        NonFiniteGateError: at the end of an epoch, when a gate holds NaN or infinity (a NaN batch or
            a diverging loss); the checkpoint of the previous epoch is kept.

    A sparsity target without ``total_steps`` (``apply(model, "stg", sparsity=0.9)``) gets this run's
    steps, epochs x batches per epoch (logged once at info level), so its ramp spans the training
    (:func:`torch_slt.core.schedule_setup.set_total_steps`); a ``total_steps`` given to ``apply`` is kept.

    ``fit`` seeds torch's global RNG from ``config.seed`` (the gate noise is drawn from it; a hash of
    the seed, see :func:`~torch_slt.experiment.train.config.training_seed`) and shuffles
    with its own generator, so two calls with the same config give the same masks. The checkpoint holds
    every RNG state, which is why a resumed run matches an uninterrupted one bit for bit (on the same
    device and library versions).
    """
    method = method_of(model)
    cfg = config or TrainConfig()
    if cfg.train_weights is None and method is not None and not _has_trainable_weights(model):
        # the user froze the weights of a one-shot mask (apply(..., freeze=True)): they stay frozen
        cfg = replace(cfg, train_weights=False)
    cfg = cfg.resolved(method, model)
    device = resolve_device(cfg.device)
    model.to(device)
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(training_seed(cfg.seed))  # not cfg.seed: see training_seed
    train_loader = _loader(train, cfg.batch_size, shuffle=True, generator=loader_gen,
                           num_workers=cfg.num_workers, device=device)
    calibration = None   # unshuffled training batches for recalibrate_batchnorm, made when first needed
    if val is not None:
        val = _loader(val, 512, shuffle=False, num_workers=cfg.num_workers, device=device)
    _set_total_steps(model, cfg, train_loader)
    groups = _param_groups(model, cfg, method)
    optimizer = _optimizer(groups, cfg) if groups else None
    scheduler = _scheduler(optimizer, cfg) if optimizer is not None else None
    result = FitResult(cfg, method)
    start = 0
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = _load_checkpoint(ckpt_path, cfg, method)
        try:
            model.load_state_dict(ckpt["model"])
            if optimizer is not None:
                optimizer.load_state_dict(ckpt["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(ckpt["scheduler"])
            _set_rng_state(ckpt["rng"], loader_gen)
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as err:
            raise ValueError(f"fit(): the checkpoint {ckpt_path} does not fit this model and its training "
                             f"({brief(err)}); delete it to start over") from None
        start = result.resumed_from = int(ckpt["epoch"])
        result.history = list(ckpt["history"])
        result.wall_time = float(ckpt["wall_time"])

    if optimizer is None:  # a fixed mask on frozen weights: nothing to train, one evaluation
        if val is not None and not result.history:
            result.history.append({"epoch": 0, "loss": float("nan"), "sparsity": _current_sparsity(model),
                                   "val_accuracy": accuracy(model, val, device=device), "lr": 0.0})
        result.completed = True
        model.eval()
        return result

    stop = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
    num_classes = None
    bar = _progress(cfg, method, train_loader, start)
    try:
        for epoch in range(start, stop):
            t0 = time.perf_counter()
            loss, task_loss, classes = _train_epoch(model, train_loader, optimizer, device, bar, epoch, cfg)
            num_classes = classes or num_classes
            # Once per epoch (one device wait), before the checkpoint: the last one saved stays good.
            check_finite_gates(model, f"fit(): after epoch {epoch + 1}")
            lr = optimizer.param_groups[0]["lr"]
            if scheduler is not None:
                scheduler.step()
            if cfg.recalibrate_batchnorm and stale_batchnorm(model):
                # before the validation and the checkpoint, so both see the ticket's own statistics
                if calibration is None:
                    calibration = _loader(train, RECALIBRATION_BATCH, shuffle=False,
                                          num_workers=cfg.num_workers, device=device)
                recalibrate_batchnorm(model, calibration, steps=RECALIBRATION_STEPS)
            row = {"epoch": epoch + 1, "loss": loss, "task_loss": task_loss,
                   "sparsity": _current_sparsity(model), "lr": lr,
                   "val_accuracy": accuracy(model, val, device=device) if val is not None else None}
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
    _alarm(result, num_classes)
    model.eval()
    return result


def _set_total_steps(model: nn.Module, cfg: TrainConfig, loader: Iterable) -> None:
    """Sparsity targets without ``total_steps`` span this run: epochs x batches (when the loader has a
    length; an iterable without one leaves them at their default)."""
    from torch_slt.core.schedule_setup import set_total_steps

    try:
        steps = cfg.epochs * len(loader)  # type: ignore[arg-type]
    except TypeError:
        return
    if steps > 0 and set_total_steps(model, steps):
        logger.info("fit(): the sparsity target ramps over this run's %d steps (%d epochs x %d batches; "
                    "total_steps was not given to apply)", steps, cfg.epochs, steps // cfg.epochs)


def _alarm(result: FitResult, num_classes: int | None) -> None:
    """Warn (:class:`TrainingAlarm`) and record in ``result.alarms`` when the run diverged, or when it
    finished at chance validation accuracy."""
    history = result.history if result.completed else [
        {k: v for k, v in row.items() if k != "val_accuracy"} for row in result.history]
    result.alarms = training_alarms(history, num_classes)
    for alarm in result.alarms:
        warnings.warn(f"fit(): {alarm}", TrainingAlarm, stacklevel=3)


def _train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, device: torch.device,
                 bar: Any, epoch: int, cfg: TrainConfig) -> tuple[float, float, int | None]:
    """One pass over ``loader``: the mean loss, the mean task loss (cross entropy, without the
    penalty) and the number of classes (the logits' width)."""
    model.train()
    total, task, count, classes = torch.zeros((), device=device), torch.zeros((), device=device), 0, None
    for step, batch in enumerate(loader):
        inputs, targets = _to(batch, device)
        logits = _logits(model(inputs))
        classes = classes or int(logits.shape[-1])
        ce = nn.functional.cross_entropy(logits, targets)
        loss = ce + penalty(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        task += ce.detach()
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
    return float(total / max(count, 1)), float(task / max(count, 1)), classes


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
