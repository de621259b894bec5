"""The run folder of an IMP run: what it holds, written so that a killed run resumes where it stopped.

::

    imp.json                 the settings (a resumed run must match them)
    rewind.pt                the rewind point, written once (plain state-dict names; loads into the model)
    masks/round_03.safetensors   the mask every round trains with (round 0: all ones)
    rounds.json              one row per finished training (round, ticket or control), appended in order
    checkpoint-r03-ticket.pt the training in progress, at the end of its last epoch (deleted once its row
                             is recorded)
    trained.pt               the last round's ticket after its training (the gated state_dict), kept:
                             a run resumed after the last row still ends with the trained ticket

Order of writes at the end of a round: the trained ticket (last round only), the next round's mask,
the round's row, then the checkpoint is deleted. A kill anywhere in between re-trains nothing that
was recorded, never records a round whose successor mask is missing, and a round whose training
finished continues from its final checkpoint without training again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from torch_slt.core.errors import SLTError
from torch_slt.experiment.files import atomic_write, brief


class RunFolderError(SLTError, ValueError):
    """A run folder that does not belong to these settings (``--resume`` with other flags)."""


class RunFolder:
    """Reads and writes one IMP run folder (see the module docstring)."""

    SETTINGS = "imp.json"
    REWIND = "rewind.pt"
    ROUNDS = "rounds.json"
    TRAINED = "trained.pt"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    # ---------------------------------------------------------------- settings
    def start(self, settings: dict[str, Any], resume: bool) -> None:
        """Create the folder, or check that the run in it has ``settings`` (when resuming)."""
        file = self.path / self.SETTINGS
        if file.exists():
            saved = _read(file, _json_object,
                          "it holds the run's settings; start the run over in a new folder")
            if not resume:
                raise RunFolderError(f"{self.path} already holds an IMP run; pass resume=True (--resume) to "
                                     f"continue it, or choose another folder")
            diff = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
            if diff:
                listed = "; ".join(f"{k}: run has {a!r}, now {b!r}" for k, (a, b) in diff.items())
                raise RunFolderError(f"cannot resume {self.path}: its settings differ ({listed}). Resume with "
                                     f"the settings it started with, or start a new run elsewhere.")
            return
        self._refuse_other_runs()
        (self.path / "masks").mkdir(parents=True, exist_ok=True)
        _write_json(file, settings)

    def _refuse_other_runs(self) -> None:
        """A folder that holds another kind of run (a ``torch-slt find`` or ``sweep``) is not taken over:
        IMP's files would mix with it and its own resume would then be refused."""
        config = self.path / "config.json"
        if config.is_file():
            command = _read(config, _json_object, "choose another folder").get("command")
            if command != "imp":
                raise RunFolderError(f"{self.path} holds a {command!r} run ({config}), not an IMP run; "
                                     f"choose another folder")
            return
        other = [n for n in _OTHER_RUNS if (self.path / n).exists()]
        if other:
            raise RunFolderError(f"{self.path} holds another run ({', '.join(other)}), not an IMP run; "
                                 f"choose another folder")

    # ---------------------------------------------------------------- rows
    def rows(self) -> list[dict[str, Any]]:
        file = self.path / self.ROUNDS
        if not file.exists():
            return []
        rows = _read(file, _json_list, "restore it, or start the run over in a new folder")
        if not all(isinstance(r, dict) for r in rows):
            raise RunFolderError(f"cannot read {file}: every entry must be a round's row (a JSON object); "
                                 f"restore it, or start the run over in a new folder")
        return rows

    def add_row(self, row: dict[str, Any]) -> None:
        _write_json(self.path / self.ROUNDS, [*self.rows(), row])

    # ---------------------------------------------------------------- masks, rewind point
    def mask_path(self, round_index: int) -> Path:
        return self.path / "masks" / f"round_{round_index:02d}.safetensors"

    def save_masks(self, round_index: int, masks: dict[str, Tensor]) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in masks.items()}
        atomic_write(self.mask_path(round_index), lambda tmp: save_file(tensors, str(tmp)))

    def load_masks(self, round_index: int) -> dict[str, Tensor] | None:
        from safetensors.torch import load_file

        path = self.mask_path(round_index)
        if not path.exists():
            return None
        return _read(path, lambda p: load_file(str(p)),
                     "delete it and the rows of the rounds after it from rounds.json, or start over")

    @property
    def rewind_path(self) -> Path:
        return self.path / self.REWIND

    def load_rewind(self) -> Any:
        """The stored rewind point (a :class:`~torch_slt.lottery.rewind.RewindPoint`), or None."""
        from torch_slt.lottery.rewind import RewindPoint

        if not self.rewind_path.exists():
            return None
        return _read(self.rewind_path, RewindPoint.load,
                     "the run cannot continue without its rewind point; start it over in a new folder")

    @property
    def trained_path(self) -> Path:
        return self.path / self.TRAINED

    def save_trained(self, state: dict[str, Tensor]) -> None:
        """Keep the last round's trained ticket (atomic: a kill leaves the old file or the new one)."""
        state = {k: v.detach().to("cpu") for k, v in state.items()}
        atomic_write(self.trained_path, lambda tmp: torch.save(state, tmp))

    def load_trained(self) -> dict[str, Tensor] | None:
        """The stored trained ticket; None when the folder has none (it is trained again)."""
        if not self.trained_path.exists():
            return None
        return _read(self.trained_path, lambda p: torch.load(p, map_location="cpu", weights_only=True),
                     "delete it to train the last round again")

    def checkpoint(self, round_index: int, kind: str) -> Path:
        return self.path / f"checkpoint-r{round_index:02d}-{kind}.pt"


#: What the other commands leave in their run folders.
_OTHER_RUNS = ("checkpoint.pt", "report.json", "sweep.json", "cells", "ticket.slt.safetensors")


def _read(path: Path, reader: Any, fix: str) -> Any:
    """``reader(path)``, with any failure (truncated, empty, garbage) a :class:`RunFolderError` naming
    the file and ``fix``, not the parser's own error."""
    try:
        return reader(path)
    except RunFolderError:
        raise
    except Exception as err:  # noqa: BLE001 - json, safetensors and torch raise their own types
        raise RunFolderError(f"cannot read {path} ({brief(err)}); {fix}") from None


def _json_object(path: Path) -> dict[str, Any]:
    body = json.loads(path.read_text())
    if not isinstance(body, dict):
        raise RunFolderError(f"cannot read {path}: it holds a {type(body).__name__}, not the run's settings")
    return body


def _json_list(path: Path) -> list[Any]:
    body = json.loads(path.read_text())
    if not isinstance(body, list):
        raise RunFolderError(f"cannot read {path}: it holds a {type(body).__name__}, not a list of rows")
    return body


def _write_json(path: Path, body: Any) -> None:
    text = json.dumps(body, indent=1, default=str)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def require_safetensors() -> None:
    try:
        import safetensors  # noqa: F401
    except ImportError as err:
        raise ImportError('an IMP run folder stores masks with safetensors: pip install "torch-slt[cli]" '
                          '(or pip install safetensors), or run without run_dir') from err


