"""Weak lottery tickets: iterative magnitude pruning with rewinding, its sanity-check controls, and
linear mode connectivity (instability analysis).

See ``docs/lottery.md``. The subsystem sits in the experiment layer: it imports the core and the training
utilities of :mod:`torch_slt.experiment`, and nothing in the core imports it.
"""

from torch_slt.lottery.config import CONTROLS, IMPConfig
from torch_slt.lottery.connectivity import (
                                            InstabilityResult,
                                            MonotonicResult,
                                            error_barrier,
                                            instability,
                                            interpolate_from_init,
                                            plot_instability,
)
from torch_slt.lottery.controls import ControlError, control
from torch_slt.lottery.folder import RunFolderError
from torch_slt.lottery.imp import IMPResult, RoundResult, imp
from torch_slt.lottery.plots import plot_imp
from torch_slt.lottery.pruning import layer_rates, prune_survivors, removal_count, survivor_masks
from torch_slt.lottery.rewind import RewindPoint, capture, rewind
from torch_slt.lottery.training import TrainRun, train_weights, weight_training_config

__all__ = [
    "CONTROLS", "ControlError", "IMPConfig", "IMPResult", "InstabilityResult", "MonotonicResult",
    "RewindPoint", "RoundResult", "RunFolderError", "TrainRun", "capture", "control", "error_barrier",
    "imp", "instability", "interpolate_from_init", "layer_rates", "plot_imp", "plot_instability",
    "prune_survivors", "removal_count", "rewind", "survivor_masks", "train_weights",
    "weight_training_config",
]
