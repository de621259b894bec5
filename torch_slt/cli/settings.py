"""The typed settings of a ``find`` / ``sweep`` run, built once from the parsed flags.

A setting travels: flag (``flags.py``) -> :class:`RunSettings` (here: defaults, the saved settings of a
resumed run, then the flags typed) -> ``prepare.py`` (the method's constructor arguments and the
:class:`~torch_slt.experiment.train.TrainConfig`) -> the method and :func:`~torch_slt.experiment.train.fit`.
Errors about a setting name its flag (:func:`flag_of`), never a dataclass field.
"""

from __future__ import annotations

import argparse
import ast
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from torch_slt.experiment.train.config import TrainConfig

#: The file of a run folder that holds its settings (read back by ``--resume``).
CONFIG = "config.json"
#: Settings that may change when a run is resumed (they do not change the ticket).
RESUME_FREE = ("device",)


class CLIError(Exception):
    """A user error: printed as one paragraph (no traceback); the command exits with status 2."""


@dataclass
class RunSettings:
    """Every setting of ``find`` / ``sweep``. ``None`` means "the method's default" (see
    ``torch-slt methods`` and :data:`torch_slt.experiment.train.METHOD_DEFAULTS`)."""

    method: str = "stg"
    dataset: str = "digits"
    model: str = "lenet300"
    width: float = 1.0
    init: str = "kaiming-normal"
    data_dir: str | None = None
    download: bool = False
    val_fraction: float = 0.1
    lam: float | None = None
    sigma: float | None = None
    sparsity: float | None = None
    #: one gate per weight, or per neuron / channel / attention head (stg, hardconcrete, magnitude).
    granularity: str = "weight"
    method_args: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    #: epochs, batch size, optimiser settings, ``train_weights``: one flag each (:data:`TRAINING_FLAGS`).
    training: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Flat, one key per flag (the form of ``config.json``)."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "training"}
        return {**flat, **{k: getattr(self.training, k) for k in TRAINING_FLAGS}}

    @classmethod
    def from_dict(cls, flat: dict[str, Any]) -> RunSettings:
        """The inverse of :meth:`to_dict`; unknown keys are ignored."""
        own_names = {f.name for f in fields(cls)} - {"training"}
        own = {k: v for k, v in flat.items() if k in own_names}
        training = {k: v for k, v in flat.items() if k in TRAINING_FLAGS}
        return cls(**own, training=replace(TrainConfig(), **training))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every setting's name (one per flag)."""
        return tuple(f.name for f in fields(cls) if f.name != "training") + TRAINING_FLAGS


#: The :class:`TrainConfig` fields that are run settings (the rest, e.g. ``quiet``, are per call).
TRAINING_FLAGS = ("epochs", "batch_size", "lr", "weight_lr", "optimizer", "momentum", "weight_decay",
                  "schedule", "train_weights", "recalibrate_batchnorm")


def flag_of(setting: str) -> str:
    """The command-line flag of a setting (``batch_size`` -> ``--batch-size``)."""
    return "--method-arg" if setting == "method_args" else "--" + setting.replace("_", "-")


def read_config(out: Path, command: str) -> dict[str, Any] | None:
    """The ``config.json`` of the run in ``out`` that ``command --resume`` continues; None when the
    folder holds none yet.

    Refused (:class:`CLIError` naming the file): a config that is not readable JSON or lacks its
    ``command`` and ``settings``, and a run another command started (``find --resume`` on an ``imp``
    folder would run a find with IMP's settings and orphan the run)."""
    path = out / CONFIG
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CLIError(f"cannot resume {out}: {path} is not readable JSON ({err}); it holds the run's "
                       f"settings, so the run cannot continue: start a new run with another --out.") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("settings"), dict) or "command" not in saved:
        raise CLIError(f"cannot resume {out}: {path} does not hold a run's 'command' and 'settings'; start a "
                       f"new run with another --out.")
    if saved["command"] != command:
        other = saved["command"]
        raise CLIError(f"--out {out} holds {_a(str(other))} '{other}' run, not {_a(command)} {command} run; "
                       f"resume it with "
                       f"'torch-slt {other} --out {out} --resume', or choose another --out.")
    return saved


def _a(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def from_args(args: argparse.Namespace, out: Path | None, command: str = "find") -> tuple[RunSettings, bool]:
    """Defaults, then the saved settings of the ``command`` run in ``out`` (with ``--resume``), then the
    flags.

    Returns the settings and whether saved settings were found (a run to resume)."""
    typed = _typed_flags(args)
    saved = _saved_settings(out, command) if getattr(args, "resume", False) and out is not None else {}
    if saved:
        clash = [f"{flag_of(k)} {typed[k]!r} (the run has {saved.get(k)!r})" for k in typed
                 if k not in RESUME_FREE and saved.get(k, RunSettings().to_dict()[k]) != typed[k]]
        if clash:
            raise CLIError(f"--resume continues the run in {out} with the settings it started with, but "
                           f"{'; '.join(clash)} differ. Drop those flags to resume, or start a new run "
                           f"with another --out.")
    return RunSettings.from_dict({**RunSettings().to_dict(), **saved, **typed}), bool(saved)


def _saved_settings(out: Path, command: str) -> dict[str, Any]:
    saved = read_config(out, command)
    return {} if saved is None else saved["settings"]


def _typed_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (flags left at None were not typed)."""
    typed = {k: getattr(args, k) for k in RunSettings.names() if getattr(args, k, None) is not None}
    if "method_args" in typed:
        typed["method_args"] = parse_method_args(typed["method_args"])
    return typed


def parse_method_args(items: list[str]) -> dict[str, Any]:
    """``["threshold=0.6", "scope=global"]`` -> ``{"threshold": 0.6, "scope": "global"}``."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise CLIError(f"--method-arg {item!r} must look like KEY=VALUE, e.g. --method-arg threshold=0.6")
        try:
            parsed[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            parsed[key.strip()] = value.strip()
    return parsed
