"""The run folder of an IMP run: what it holds, written so that a killed run resumes where it stopped.

::

    imp.json                 the settings (a resumed run must match them)
    rewind.pt                the rewind point, written once (plain state-dict names; loads into the model)
    masks/round_03.safetensors   the mask every round trains with (round 0: all ones)
    rounds.json              one row per finished training (round, ticket or control), appended in order
    checkpoint-r03-ticket.pt the training in progress, at the end of its last epoch (deleted when done)

Order of writes at the end of a round: the next round's mask, then the round's row. A kill between the
two re-trains nothing that was recorded and never records a round whose successor mask is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from torch_slt.core.errors import SLTError


class RunFolderError(SLTError, ValueError):
    """A run folder that does not belong to these settings (``--resume`` with other flags)."""


class RunFolder:
    """Reads and writes one IMP run folder (see the module docstring)."""

    SETTINGS = "imp.json"
    REWIND = "rewind.pt"
    ROUNDS = "rounds.json"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    # ---------------------------------------------------------------- settings
    def start(self, settings: dict[str, Any], resume: bool) -> None:
        """Create the folder, or check that the run in it has ``settings`` (when resuming)."""
        file = self.path / self.SETTINGS
        if file.exists():
            saved = json.loads(file.read_text())
            if not resume:
                raise RunFolderError(f"{self.path} already holds an IMP run; pass resume=True (--resume) to "
                                     f"continue it, or choose another folder")
            diff = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
            if diff:
                listed = "; ".join(f"{k}: run has {a!r}, now {b!r}" for k, (a, b) in diff.items())
                raise RunFolderError(f"cannot resume {self.path}: its settings differ ({listed}). Resume with "
                                     f"the settings it started with, or start a new run elsewhere.")
            return
        (self.path / "masks").mkdir(parents=True, exist_ok=True)
        _write_json(file, settings)

    # ---------------------------------------------------------------- rows
    def rows(self) -> list[dict[str, Any]]:
        file = self.path / self.ROUNDS
        return json.loads(file.read_text()) if file.exists() else []

    def add_row(self, row: dict[str, Any]) -> None:
        _write_json(self.path / self.ROUNDS, [*self.rows(), row])

    # ---------------------------------------------------------------- masks, rewind point
    def mask_path(self, round_index: int) -> Path:
        return self.path / "masks" / f"round_{round_index:02d}.safetensors"

    def save_masks(self, round_index: int, masks: dict[str, Tensor]) -> None:
        from safetensors.torch import save_file

        path = self.mask_path(round_index)
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.detach().to("cpu").contiguous() for k, v in masks.items()}, str(tmp))
        os.replace(tmp, path)

    def load_masks(self, round_index: int) -> dict[str, Tensor] | None:
        from safetensors.torch import load_file

        path = self.mask_path(round_index)
        return load_file(str(path)) if path.exists() else None

    @property
    def rewind_path(self) -> Path:
        return self.path / self.REWIND

    def checkpoint(self, round_index: int, kind: str) -> Path:
        return self.path / f"checkpoint-r{round_index:02d}-{kind}.pt"


def _write_json(path: Path, body: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=1, default=str))
    os.replace(tmp, path)


def require_safetensors() -> None:
    try:
        import safetensors  # noqa: F401
    except ImportError as err:
        raise ImportError('an IMP run folder stores masks with safetensors: pip install "torch-slt[cli]" '
                          '(or pip install safetensors), or run without run_dir') from err


