"""Resume checkpoints of :func:`~torch_slt.experiment.train.fit`: RNG states, atomic writes, checks."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from torch_slt.experiment.files import atomic_write, brief
from torch_slt.experiment.train.config import _RESUME_FREE, TrainConfig

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
    # a kill during the write leaves the previous checkpoint intact; a failed write (disk full) leaves
    # no checkpoint.pt.tmp
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _load_checkpoint(path: Path, cfg: TrainConfig, method: str | None) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ValueError(f"fit(): cannot read the checkpoint {path} ({brief(err)}); delete it to start "
                         f"over") from None
    missing = [k for k in _KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"fit(): the checkpoint {path} lacks {', '.join(missing)}; it is damaged or not a "
                         f"fit() checkpoint: delete it to start over")
    try:
        saved = TrainConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"fit(): the checkpoint {path} holds unreadable settings ({err}); delete it to "
                         f"start over") from None
    diff = [f"{k}: {getattr(saved, k)!r} -> {getattr(cfg, k)!r}" for k in saved.to_dict()
            if k not in _RESUME_FREE and getattr(saved, k) != getattr(cfg, k)]
    if ckpt.get("method") != method:
        diff.insert(0, f"method: {ckpt.get('method')!r} -> {method!r}")
    if diff:
        raise ValueError(f"fit(): the checkpoint {path} was written with other settings ({'; '.join(diff)}); "
                         f"resume with the same settings, or start over in a new folder")
    epoch, history = ckpt["epoch"], ckpt["history"]
    if not isinstance(epoch, int) or not 0 <= epoch <= cfg.epochs or not isinstance(history, list) \
            or len(history) != epoch:
        # (before: epoch=99 of 6 resumed to "stopped after epoch 4 of 6; continue with --resume", forever)
        n = len(history) if isinstance(history, list) else "no"
        raise ValueError(f"fit(): the checkpoint {path} says epoch {epoch!r} of a {cfg.epochs}-epoch run "
                         f"with {n} epochs of history; it is damaged: delete it to start over")
    return ckpt


#: What every checkpoint :func:`fit` writes holds.
_KEYS = ("epoch", "model", "optimizer", "scheduler", "rng", "history", "config", "wall_time")
