"""Training the weights of a (masked) network by iterations: what one round of IMP runs.

Unlike :func:`torch_slt.experiment.train.fit` (which trains masks epoch by epoch), a lottery round needs
iteration-level control: the rewind point is captured at iteration k of the first round, later rounds
train from iteration k to the end (the same data order and learning-rate schedule as the first round from
there on), and the early-stopping iteration is the evaluation with the best validation accuracy.
A round checkpoints at the end of every epoch and resumes from there bit for bit.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from torch_slt.core.api import mask_parameters, penalty
from torch_slt.experiment.files import brief
from torch_slt.experiment.train.batches import _loader, _logits, _to, accuracy, resolve_device
from torch_slt.experiment.train.checkpoint import _rng_state, _save_checkpoint, _set_rng_state
from torch_slt.experiment.train.config import TrainConfig
from torch_slt.experiment.train.loop import _optimizer, _scheduler

#: Frankle & Carbin 2019's LeNet-300-100 optimiser (Adam, lr 1.2e-3 constant, no weight decay): the default of a
#: lottery run whose TrainConfig leaves the optimiser unset.
PAPER_OPTIMIZER = {"optimizer": "adam", "lr": 1.2e-3, "weight_decay": 0.0, "schedule": "constant"}


def weight_training_config(config: TrainConfig | None) -> TrainConfig:
    """``config`` with unset optimiser settings filled for weight training (Adam 1.2e-3, constant, no
    weight decay, as the paper's LeNet; with ``optimizer="sgd"`` the dense defaults: lr 0.1, momentum
    0.9, weight decay 1e-4, cosine)."""
    cfg = config or TrainConfig()
    if cfg.optimizer in (None, "adam", "adamw"):
        cfg = replace(cfg, optimizer=cfg.optimizer or PAPER_OPTIMIZER["optimizer"],
                      lr=cfg.lr if cfg.lr is not None else PAPER_OPTIMIZER["lr"],
                      weight_decay=cfg.weight_decay if cfg.weight_decay is not None else 0.0,
                      schedule=cfg.schedule or PAPER_OPTIMIZER["schedule"])
    return cfg.resolved(None)


@dataclass
class Evaluation:
    """Accuracies after ``iteration`` training iterations."""

    iteration: int
    val_accuracy: float | None
    test_accuracy: float | None


@dataclass
class TrainRun:
    """What :func:`train_weights` did: the evaluations in order and the training time."""

    evaluations: list[Evaluation] = field(default_factory=list)
    iterations: int = 0
    wall_time: float = 0.0
    completed: bool = False

    @property
    def early(self) -> Evaluation:
        """The evaluation with the best validation accuracy (the earliest of ties); the last one when
        there is no validation data."""
        scored = [e for e in self.evaluations if e.val_accuracy is not None]
        if not scored:
            return self.evaluations[-1]
        return max(scored, key=lambda e: (e.val_accuracy, -e.iteration))

    @property
    def final(self) -> Evaluation:
        return self.evaluations[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"evaluations": [asdict(e) for e in self.evaluations], "iterations": self.iterations,
                "wall_time": self.wall_time}


def train_weights(model: nn.Module, train: Dataset | Iterable, config: TrainConfig, *,
                  val: Dataset | None = None, test: Dataset | None = None, start_iteration: int = 0,
                  eval_every: int | None = None, data_seed: int | None = None,
                  on_iteration: Callable[[int], None] | None = None, checkpoint: Path | None = None,
                  resume: bool = False, label: str = "", mask_lr: float | None = None) -> TrainRun:
    """Train every trainable parameter of ``model`` in place from ``start_iteration`` to the end.

    Args:
        model: a network; fixed masks (``weight_mask``) keep removed weights at zero.
        train, val, test: datasets (``val``/``test`` evaluated every ``eval_every`` iterations, or
            at the end of every epoch).
        config: a resolved :class:`TrainConfig` (:func:`weight_training_config`); ``epochs`` fixes
            the total number of iterations, ``seed`` the data order and the random draws.
        start_iteration: iterations already done (late rewinding): the data order and the learning
            rate schedule continue from there, exactly as in an uninterrupted run; the optimiser's
            state (Adam's moments, momentum) starts afresh, as in open_lth.
        data_seed: the data order's seed (default ``config.seed``); two copies with different data
            order differ only here.
        on_iteration: called with the iteration count after every optimiser step (the rewind capture).
        checkpoint, resume: per-epoch checkpoint file; continue from it when it exists.
        mask_lr: learning rate of a learned mask trained with the weights (``cs``'s scores; no weight
            decay on them); default ``config.lr``.

    The loss is the cross-entropy plus :func:`torch_slt.penalty` (zero for fixed masks).
    """
    device = resolve_device(config.device)
    model.to(device)
    loader_gen = torch.Generator().manual_seed(config.seed if data_seed is None else data_seed)
    torch.manual_seed(config.seed)
    loader = _loader(train, config.batch_size, shuffle=True, generator=loader_gen,
                     num_workers=config.num_workers, device=device)
    steps = len(loader)
    optimizer = _optimizer(_groups(model, config, mask_lr), config)
    scheduler = _scheduler(optimizer, config)
    first_epoch, skip = divmod(start_iteration, steps)
    run, epoch0 = TrainRun(iterations=start_iteration), first_epoch
    if resume and checkpoint is not None and checkpoint.exists():
        epoch0, skip = _resume(checkpoint, model, optimizer, scheduler, loader_gen, run, config.epochs)
    else:
        _fast_forward(loader, scheduler, first_epoch)
    bar = _progress(config, label, steps * config.epochs - run.iterations)
    stop = min(config.epochs, config.stop_after or config.epochs)
    try:
        for epoch in range(epoch0, stop):
            t0 = time.perf_counter()
            _train_epoch(model, loader, optimizer, device, run, skip, eval_every, val, test, on_iteration, bar)
            skip = 0
            if scheduler is not None:
                scheduler.step()
            if eval_every is None:
                run.evaluations.append(_evaluate(model, run.iterations, val, test, device))
            run.wall_time += time.perf_counter() - t0
            if checkpoint is not None:
                _save_checkpoint(checkpoint, {
                    "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else {},
                    "rng": _rng_state(loader_gen), "run": run.to_dict()})
    finally:
        if bar is not None:
            bar.close()
    run.completed = stop == config.epochs
    if run.completed and (not run.evaluations or run.evaluations[-1].iteration != run.iterations):
        run.evaluations.append(_evaluate(model, run.iterations, val, test, device))
    model.eval()
    return run


def _groups(model: nn.Module, config: TrainConfig, mask_lr: float | None) -> list[dict[str, Any]]:
    """The weights at ``config.lr`` with its weight decay; learned mask tensors at ``mask_lr``, no decay."""
    gates = [p for p in mask_parameters(model) if p.requires_grad]
    gate_ids = {id(p) for p in gates}
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in gate_ids]
    groups = [{"params": weights, "lr": config.lr, "weight_decay": config.weight_decay}]
    if gates:
        groups.append({"params": gates, "lr": config.lr if mask_lr is None else mask_lr, "weight_decay": 0.0})
    return groups


def _fast_forward(loader: Iterable, scheduler: Any, epochs: int) -> None:
    """Draw the data order of ``epochs`` skipped epochs and step the schedule past them, so that a round
    started at a late rewind point sees the batches and learning rates of the first round."""
    for _ in range(epochs):
        for _ in loader:
            pass
        if scheduler is not None:
            with warnings.catch_warnings():  # stepping the schedule without optimiser steps is the point
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                scheduler.step()


def _resume(path: Path, model: nn.Module, optimizer: Any, scheduler: Any, loader_gen: torch.Generator,
            run: TrainRun, epochs: int) -> tuple[int, int]:
    """Load the checkpoint at ``path``; anything unreadable or out of range is a
    :class:`~torch_slt.lottery.folder.RunFolderError` naming the file (delete it to redo that epoch)."""
    from torch_slt.lottery.folder import RunFolderError

    fix = "delete it to train that round again from its start"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, empty or garbage files raise many types
        raise RunFolderError(f"cannot read the checkpoint {path} ({brief(err)}); {fix}") from None
    try:
        epoch = ckpt["epoch"]
        if not isinstance(epoch, int) or not 0 < epoch <= epochs:
            raise RunFolderError(f"the checkpoint {path} says epoch {epoch!r} of a {epochs}-epoch round; "
                                 f"{fix}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"], loader_gen)
        saved = ckpt["run"]
        run.evaluations = [Evaluation(**e) for e in saved["evaluations"]]
        run.iterations, run.wall_time = int(saved["iterations"]), float(saved["wall_time"])
    except RunFolderError:
        raise
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as err:
        raise RunFolderError(f"the checkpoint {path} does not fit this round ({brief(err)}); {fix}") from None
    return epoch, 0


def _train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, device: torch.device,
                 run: TrainRun, skip: int, eval_every: int | None, val: Any, test: Any,
                 on_iteration: Callable[[int], None] | None, bar: Any) -> None:
    model.train()
    for index, batch in enumerate(loader):
        if index < skip:  # before the rewind point: these batches were trained in the first round
            continue
        inputs, targets = _to(batch, device)
        loss = nn.functional.cross_entropy(_logits(model(inputs)), targets) + penalty(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        run.iterations += 1
        if on_iteration is not None:
            on_iteration(run.iterations)
        if eval_every is not None and run.iterations % eval_every == 0:
            run.evaluations.append(_evaluate(model, run.iterations, val, test, device))
            model.train()
        if bar is not None:
            bar.update(1)
            if run.iterations % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)


def _evaluate(model: nn.Module, iteration: int, val: Any, test: Any, device: torch.device) -> Evaluation:
    return Evaluation(iteration, accuracy(model, val, device=device) if val is not None else None,
                      accuracy(model, test, device=device) if test is not None else None)


def _progress(config: TrainConfig, label: str, total: int):
    if config.quiet:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="it", desc=label or "train", dynamic_ncols=True, file=sys.stderr,
                leave=False)
