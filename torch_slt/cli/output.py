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


def make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise CLIError(f"--out {out} is not writable ({err.strerror or err}); choose another "
                       f"folder.") from None


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a kill leaves the old file or the new one, never half of one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=json_default) + "\n")
    os.replace(tmp, path)


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
    save_file(tensors, str(path), metadata={"format": "pt", "torch_slt": torch_slt.__version__,
                                            "spec": json.dumps(spec.to_dict())})


@contextmanager
def staged(out: Path, last: str) -> Iterator[Path]:
    """A private staging folder inside ``out``; on success its files move into ``out`` with the user's
    umask, ``last`` last (so a folder holding ``last`` is complete)."""
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        yield staging
        names = sorted(p.name for p in staging.iterdir())
        mode = 0o666 & ~_umask()
        for name in names:
            os.chmod(staging / name, mode)  # temporary files are private; outputs follow the umask
        for name in [n for n in names if n != last] + ([last] if last in names else []):
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
