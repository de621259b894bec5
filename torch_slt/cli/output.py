"""Run folders: the default name, the checks before anything is written, atomic JSON and file moves."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

import torch_slt
from torch_slt.cli.settings import CONFIG, CLIError, RunSettings
from torch_slt.experiment.files import atomic_write, remove_stale_temporaries

#: Prefix of the private folder a command's outputs are written into before they move into ``--out``.
STAGING_PREFIX = ".staging-"


def default_out(command: str, s: RunSettings) -> Path:
    """A fresh folder under ``runs/`` named after the command, method, model, dataset and time."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    what = s.method if command == "find" else "methods"
    name = f"{command}-{what}-{s.model.replace(':', '_')}-{s.dataset}-{stamp}"
    base = Path("runs") / name
    path, i = base, 2
    while path.exists():
        path, i = base.with_name(f"{name}-{i}"), i + 1
    return path


def check_out(out: Path, resume: bool) -> None:
    """Refuse an --out that is a file, is not writable, or already holds another run."""
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file, not a folder; choose a folder path.")
    if out.is_dir() and any(out.iterdir()):
        if (out / "report.json").exists() or (out / "sweep.json").exists():
            raise CLIError(f"--out {out} already holds a finished run (report.json); choose another folder.")
        if not resume:
            raise CLIError(f"--out {out} is not empty; pass --resume to continue the run in it, or choose "
                           f"another folder.")
        if not (out / CONFIG).exists():
            raise CLIError(f"--out {out} does not hold a torch-slt run ({CONFIG} is missing), so there is "
                           f"nothing to resume; choose another folder.")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"--out {out} cannot be created: {parent} is not a writable folder.")


def make_out(out: Path, resume: bool = False) -> None:
    """Create ``out`` (checking it is writable); with ``resume``, clear what a killed run left in it
    (:func:`clean_stale`)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            clean_stale(out)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise CLIError(f"--out {out} is not writable ({err.strerror or err}); choose another "
                       f"folder.") from None


def clean_stale(out: Path) -> None:
    """Remove ``.staging-*/`` folders and ``*.tmp`` files in ``out`` and its ``cells/`` and ``masks/``:
    only a killed process leaves them (a failing one removes its own)."""
    for staging in out.glob(STAGING_PREFIX + "*"):
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
    for folder in (out, out / "cells", out / "masks"):
        remove_stale_temporaries(folder)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a kill leaves the old file or the new one, never half of one)."""
    text = json.dumps(data, indent=2, default=json_default) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def json_default(obj: Any) -> Any:
    if isinstance(obj, (Path, torch.device)):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_state_dict(path: Path, model: torch.nn.Module, spec: Any) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    # "torch_slt_version", not "torch_slt": that header key holds the gate metadata torch_slt.load_file reads
    save_file(tensors, str(path), metadata={"format": "pt", "torch_slt_version": torch_slt.__version__,
                                            "spec": json.dumps(spec.to_dict())})


@contextmanager
def staged(out: Path, last: str) -> Iterator[Path]:
    """A private staging folder inside ``out``; on success its files move into ``out`` with the user's
    umask, ``last`` last (so a folder holding ``last`` is complete).

    The staging folder is removed *before* ``last`` appears (``last`` waits as ``out/<last>.tmp``), so a
    kill at any moment leaves either an unfinished run (no ``last``; the next ``--resume`` clears the
    staging folder and the ``.tmp``, :func:`clean_stale`) or a finished folder without staging."""
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        yield staging
        names = sorted(p.name for p in staging.iterdir())
        mode = 0o666 & ~_umask()
        for name in names:
            os.chmod(staging / name, mode)  # temporary files are private; outputs follow the umask
        for name in [n for n in names if n != last]:
            os.replace(staging / name, out / name)
        pending = out / (last + ".tmp")
        if last in names:
            os.replace(staging / last, pending)
        shutil.rmtree(staging, ignore_errors=True)
        if last in names:
            os.replace(pending, out / last)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
