"""Iterative magnitude pruning with rewinding: the weak lottery ticket.

Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks", ICLR 2019
(https://arxiv.org/abs/1803.03635); late rewinding from Frankle, Dziugaite, Roy & Carbin, "Linear Mode
Connectivity and the Lottery Ticket Hypothesis", ICML 2020 (https://arxiv.org/abs/1912.05671).

Round 0 trains the dense network (its rewind point is captured at iteration ``rewind``); every later round
removes ``prune_rate`` of the surviving weights by trained magnitude (:mod:`torch_slt.lottery.pruning`),
resets the survivors to the rewind point, and trains again from there. The model is gated once, in round 0,
with an all-ones fixed mask that every round narrows (:mod:`torch_slt.core.masks`), so ``report``,
``finalize`` and ``save_file`` work on it at any time. Controls (:mod:`torch_slt.lottery.controls`) are
trained at every round from the round's starting weights.

Example:
    >>> import torch, torch_slt
    >>> from torch_slt.experiment.train import TrainConfig
    >>> from torch_slt.lottery import IMPConfig, imp
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> data = torch.utils.data.TensorDataset(torch.randn(64, 8), torch.randint(0, 2, (64,)))
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> result = imp(model, data, test=data, config=IMPConfig(rounds=2),
    ...              training=TrainConfig(epochs=1, batch_size=16, quiet=True))
    >>> [round(r.remaining, 3) for r in result.tickets()]
    [1.0, 0.812, 0.662]
"""

from __future__ import annotations

import copy
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torch_slt.core import api
from torch_slt.core.errors import AlreadyGatedError, SLTError
from torch_slt.core.masks import apply_masks, hard_masks, narrow_masks
from torch_slt.core.targets import Selector, select_targets
from torch_slt.experiment.train.config import TrainConfig
from torch_slt.lottery.config import IMPConfig
from torch_slt.lottery.controls import control
from torch_slt.lottery.folder import RunFolder, RunFolderError, require_safetensors
from torch_slt.lottery.pruning import layer_rates, prune_survivors
from torch_slt.lottery.rewind import RewindPoint, capture, rewind
from torch_slt.lottery.training import TrainRun, train_weights, weight_training_config

TICKET = "ticket"


@dataclass
class RoundResult:
    """One trained network of an IMP run: the ticket of a round, or one of its controls."""

    round: int
    kind: str
    kept: int
    total: int
    layers: dict[str, float]
    early_iteration: int
    early_val_accuracy: float | None
    early_test_accuracy: float | None
    final_val_accuracy: float | None
    final_test_accuracy: float | None
    iterations: int
    wall_time: float

    @property
    def remaining(self) -> float:
        """Fraction of the targeted weights kept."""
        return self.kept / self.total

    @classmethod
    def from_run(cls, round_index: int, kind: str, model: nn.Module, run: TrainRun) -> RoundResult:
        masks = hard_masks(model)
        early, final = run.early, run.final
        return cls(round_index, kind, sum(int(m.sum()) for m in masks.values()),
                   sum(m.numel() for m in masks.values()),
                   {k: float(m.float().mean()) for k, m in masks.items()}, early.iteration,
                   early.val_accuracy, early.test_accuracy, final.val_accuracy, final.test_accuracy,
                   run.iterations, run.wall_time)


@dataclass
class IMPResult:
    """Every trained network of an IMP run, in training order, and where the run is stored."""

    config: IMPConfig
    training: TrainConfig
    rows: list[RoundResult] = field(default_factory=list)
    run_dir: Path | None = None
    completed: bool = False

    def tickets(self) -> list[RoundResult]:
        return [r for r in self.rows if r.kind == TICKET]

    def to_markdown(self) -> str:
        lines = ["| round | network | remaining | early-stop it. | test acc. (early stop) | test acc. (end) |",
                 "|---:|---|---:|---:|---:|---:|"]
        for r in self.rows:
            lines.append(f"| {r.round} | {r.kind} | {r.remaining:.2%} | {r.early_iteration} | "
                         f"{_pct(r.early_test_accuracy)} | {_pct(r.final_test_accuracy)} |")
        return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def imp(model: nn.Module, train: Any, *, val: Any = None, test: Any = None, config: IMPConfig | None = None,
        training: TrainConfig | None = None, targets: Selector = None, exclude: Selector = None,
        run_dir: str | Path | None = None, resume: bool = False) -> IMPResult:
    """Run iterative magnitude pruning with rewinding on ``model`` (in place) and return every round.

    Args:
        model: an ungated network at its initial weights; gated here (fixed masks, weights trained).
        train, val, test: datasets of ``(input, label)``; ``val`` picks the early-stopping iteration.
        config: :class:`IMPConfig` (rounds, rate, scope, rewind iteration, controls).
        training: :class:`~torch_slt.experiment.train.TrainConfig` for every round's weight training;
            unset optimiser settings default to Adam lr 1.2e-3 (the paper's LeNet).
        targets, exclude: which tensors are pruned, as in :func:`torch_slt.apply` (default: the weights
            of every Linear/Conv; biases and norms are never pruned).
        run_dir: folder for the rows, masks, rewind point and per-epoch checkpoints; with
            ``resume=True`` a killed run continues at its last epoch.

    At the end the model holds the last round's ticket after its training (gated: ``finalize`` it for a
    plain state_dict, or rewind it with the stored rewind point to retrain).
    """
    config = config or IMPConfig()
    cfg = weight_training_config(training)
    if api.is_gated(model):
        raise AlreadyGatedError("imp(): the model is already gated; IMP gates it itself (pass the plain, "
                                "initial network)")
    selected = select_targets(model, targets, exclude)   # bad input fails before anything is written
    _check_rewind(config.rewind, _steps_per_epoch(train, cfg.batch_size) * cfg.epochs)
    folder = _open_folder(run_dir, config, cfg, resume)
    apply_masks(model, {t.qualified: torch.ones_like(t.module._parameters[t.tensor], dtype=torch.bool)
                        for t in selected}, "magnitude", scope=config.scope)
    rates = layer_rates(model, config.prune_rate, config.output_rate, config.scope)
    runner = _Runner(model, train, val, test, config, cfg, folder, resume)
    return runner.run(rates)


def _check_rewind(rewind_iteration: int, total_iterations: int) -> None:
    if rewind_iteration >= total_iterations:
        raise RunFolderError(f"imp(): rewind={rewind_iteration} is not before the end of training "
                             f"({total_iterations} iterations); choose an early iteration")


def _open_folder(run_dir: Any, config: IMPConfig, cfg: TrainConfig, resume: bool) -> RunFolder | None:
    if run_dir is None:
        if resume:
            raise RunFolderError("imp(): resume=True needs run_dir, the folder of the run to continue")
        return None
    require_safetensors()
    folder = RunFolder(run_dir)
    training = {k: v for k, v in cfg.to_dict().items() if k not in ("device", "quiet", "stop_after",
                                                                     "num_workers")}
    folder.start({"imp": config.to_dict(), "training": training}, resume)
    return folder


class _Runner:
    """The round loop of :func:`imp`, with its run folder (``None``: nothing written)."""

    def __init__(self, model: nn.Module, train: Any, val: Any, test: Any, config: IMPConfig,
                 cfg: TrainConfig, folder: RunFolder | None, resume: bool) -> None:
        self.model, self.train, self.val, self.test = model, train, val, test
        self.config, self.cfg, self.folder, self.resume = config, cfg, folder, resume
        self.result = IMPResult(config, cfg, run_dir=folder.path if folder else None)
        done = folder.rows() if (folder and resume) else []
        self.result.rows = [_row(folder, row) for row in done]
        self.done = {(r.round, r.kind) for r in self.result.rows}
        self.point: RewindPoint | None = folder.load_rewind() if folder is not None else None

    def run(self, rates: dict[str, float | None]) -> IMPResult:
        if self.point is None and self.config.rewind == 0:
            self._keep_point(capture(self.model, 0))
        for r in range(self.config.rounds + 1):
            if not self._round(r, rates):
                return self.result   # stopped (stop_after): resume to continue
        self.result.completed = True
        return self.result

    # ---------------------------------------------------------------- one round
    def _round(self, r: int, rates: dict[str, float | None]) -> bool:
        self._enter_round(r)
        start = copy.deepcopy(self.model) if self.config.controls and r > 0 else None
        last = r == self.config.rounds
        if (r, TICKET) not in self.done:
            run = self._train(self.model, r, TICKET)
            if not run.completed:
                return False
            row = RoundResult.from_run(r, TICKET, self.model, run)
            if last and self.folder is not None:
                self.folder.save_trained(self.model.state_dict())
            if not last:
                masks = prune_survivors(self.model, rates, self.config.prune_rate)
                if self.folder is not None:
                    self.folder.save_masks(r + 1, masks)
            self._record(row)
        elif last:
            self._restore_trained(r)
        self._drop_checkpoint(r, TICKET)
        for kind in (self.config.controls if r > 0 else ()):
            if (r, kind) in self.done:
                self._drop_checkpoint(r, kind)
                continue
            twin = control(start, kind, seed=self.config.control_seed * 1_000_003 + r)
            run = self._train(twin, r, kind)
            if not run.completed:
                return False
            self._record(RoundResult.from_run(r, kind, twin, run))
            self._drop_checkpoint(r, kind)
        return True

    def _restore_trained(self, r: int) -> None:
        """The last round's ticket was recorded before a kill: put its trained weights back (the model is
        at the rewind point here), or train it again when the folder does not hold them."""
        state = self.folder.load_trained() if self.folder is not None else None
        if state is None:
            run = self._train(self.model, r, TICKET)
            if not run.completed:
                raise RunFolderError(f"imp(): the last round's trained ticket is not in {self.folder.path} "
                                     f"and training it again stopped early; resume again")
            if self.folder is not None:
                self.folder.save_trained(self.model.state_dict())
            return
        try:
            self.model.load_state_dict(state)
        except RuntimeError as err:
            raise RunFolderError(f"cannot load {self.folder.trained_path} into the model ({err}); delete it "
                                 f"to train the last round again") from None
        self.model.eval()

    def _drop_checkpoint(self, r: int, kind: str) -> None:
        """Delete a training's checkpoint once its row is recorded (a kill between the two left it)."""
        if self.folder is not None:
            self.folder.checkpoint(r, kind).unlink(missing_ok=True)

    def _enter_round(self, r: int) -> None:
        """Put the model at round ``r``'s start: its mask (from the folder when resuming) and, after
        round 0, the rewind point's weights."""
        if self.folder is not None and r > 0:
            stored = self.folder.load_masks(r)
            if stored is not None:
                self._narrow(r, stored)
        if self.folder is not None and r == 0 and self.folder.load_masks(0) is None:
            self.folder.save_masks(0, hard_masks(self.model))
        if r > 0:
            if self.point is None:
                raise RunFolderError("imp(): no rewind point was stored; the run folder is incomplete")
            rewind(self.model, self.point)

    def _narrow(self, r: int, stored: dict[str, torch.Tensor]) -> None:
        """Narrow the model to round ``r``'s stored mask; a file that does not hold a mask for every
        pruned tensor (empty, or of another model) names itself instead of training the wrong mask."""
        path = self.folder.mask_path(r)
        gated = set(hard_masks(self.model))
        if set(stored) != gated:
            missing, extra = sorted(gated - set(stored)), sorted(set(stored) - gated)
            raise RunFolderError(f"{path} does not hold round {r}'s mask of this model (missing: "
                                 f"{', '.join(missing) or '-'}; unexpected: {', '.join(extra) or '-'}); "
                                 f"delete it and the rows from round {r - 1} on in rounds.json, or start "
                                 f"over")
        try:
            narrow_masks(self.model, stored)
        except (SLTError, ValueError, TypeError) as err:
            raise RunFolderError(f"{path}: {err}; delete it and the rows from round {r - 1} on in "
                                 f"rounds.json, or start over") from None

    def _train(self, net: nn.Module, r: int, kind: str) -> TrainRun:
        ckpt = self.folder.checkpoint(r, kind) if self.folder is not None else None
        capture_at = self.config.rewind if (r == 0 and kind == TICKET and self.point is None) else None
        start = 0 if r == 0 else self.config.rewind

        def on_iteration(iteration: int) -> None:
            if capture_at is not None and iteration == capture_at:
                self._keep_point(capture(net, iteration))

        if not self.cfg.quiet:
            print(f"imp: round {r}/{self.config.rounds} {kind}: "
                  f"{_kept_fraction(net):.2%} of the weights remain", file=sys.stderr)
        # The checkpoint stays until the row is recorded: a kill in between continues from the final
        # epoch's checkpoint instead of training again.
        return train_weights(net, self.train, self.cfg, val=self.val, test=self.test, start_iteration=start,
                             eval_every=self.config.eval_every, on_iteration=on_iteration, checkpoint=ckpt,
                             resume=self.resume, label=f"round {r} {kind}")

    def _keep_point(self, point: RewindPoint) -> None:
        self.point = point
        if self.folder is not None:
            point.save(self.folder.rewind_path)

    def _record(self, row: RoundResult) -> None:
        self.result.rows.append(row)
        self.done.add((row.round, row.kind))
        if self.folder is not None:
            self.folder.add_row(asdict(row))
        if not self.cfg.quiet:
            print(f"imp: round {row.round} {row.kind}: {row.remaining:.2%} remain, test "
                  f"{_pct(row.early_test_accuracy)} at early stop (it. {row.early_iteration}), "
                  f"{_pct(row.final_test_accuracy)} at the end", file=sys.stderr)


def _row(folder: RunFolder, row: dict[str, Any]) -> RoundResult:
    try:
        return RoundResult(**row)
    except TypeError as err:
        raise RunFolderError(f"cannot read {folder.path / folder.ROUNDS}: a row does not fit ({err}); "
                             f"restore the file, or start the run over in a new folder") from None


def _kept_fraction(model: nn.Module) -> float:
    masks = hard_masks(model)
    return sum(int(m.sum()) for m in masks.values()) / max(1, sum(m.numel() for m in masks.values()))


def _steps_per_epoch(train: Any, batch_size: int) -> int:
    if isinstance(train, torch.utils.data.DataLoader):
        return len(train)
    try:
        return -(-len(train) // batch_size)
    except TypeError:  # an iterable of batches without a length: nothing to check against
        return sys.maxsize
