"""Say loudly when a training run produced nothing: a ticket at chance accuracy, or a loss that blew up.

A strong ticket on a frozen random network can fail without any error: the gates can stall (the
accuracy stays at the random network's chance level) or the activations of a deep bias-free network
can explode (a loss in the thousands). Both used to end in a saved ticket and a report that looked
like any other. :func:`training_alarms` reads a run's per-epoch history and its final accuracy and
returns one sentence per problem; :func:`~torch_slt.experiment.train.fit` warns with them
(:class:`TrainingAlarm`), ``torch-slt find`` and ``sweep`` print them and write them into their reports.

The rules (the constants below):

* **chance**: the final validation accuracy is at most ``1 / num_classes + CHANCE_MARGIN`` (two points
  above a uniform guess; a ticket that is worse than guessing is at chance too).
* **non-finite loss**: an epoch's mean loss is NaN or infinite.
* **exploded**: an epoch's mean task loss (cross entropy, without the penalty) exceeds
  ``EXPLODED_FACTOR`` times ``ln(num_classes)``, the loss of a uniform guess: logits that large only
  come from activations growing through the layers.
* **diverged**: an epoch's mean task loss is more than ``DIVERGED_FACTOR`` times the lowest of the
  epochs before it, and above ``ln(num_classes)``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

#: Points (as a fraction) above ``1 / num_classes`` that still count as chance accuracy.
CHANCE_MARGIN = 0.02
#: An epoch's task loss above this many times ``ln(num_classes)`` has exploded.
EXPLODED_FACTOR = 10.0
#: An epoch's task loss above this many times the best earlier epoch's has diverged.
DIVERGED_FACTOR = 10.0


class TrainingAlarm(UserWarning):
    """Warned by :func:`~torch_slt.experiment.train.fit` when a run ends at chance or its loss diverged."""


def chance_accuracy(num_classes: int) -> float:
    """The accuracy of a uniform guess among ``num_classes`` classes."""
    return 1.0 / max(1, int(num_classes))


def at_chance(accuracy: float | None, num_classes: int, margin: float = CHANCE_MARGIN) -> bool:
    """Whether ``accuracy`` is within ``margin`` of chance (or below it)."""
    return accuracy is not None and accuracy <= chance_accuracy(num_classes) + margin


def training_alarms(history: Sequence[dict[str, Any]], num_classes: int | None,
                    final_accuracy: float | None = None) -> list[str]:
    """One sentence per problem of a run (empty when there is none).

    Args:
        history: :attr:`FitResult.history` rows (``loss``, ``task_loss``, ``val_accuracy``); rows
            without a ``task_loss`` (no training: a fixed mask's evaluation) count for accuracy only.
        num_classes: classes of the task; ``None`` skips the rules that need it.
        final_accuracy: the finished ticket's validation accuracy; default the last epoch's.
    """
    alarms = []
    # Only trained epochs have a task loss (a fixed mask's single evaluation row has loss NaN).
    trained = [row for row in history if row.get("task_loss") is not None]
    bad = next((int(row["epoch"]) for row in trained
                if not (math.isfinite(row["task_loss"]) and math.isfinite(row["loss"]))), None)
    losses = [(int(row["epoch"]), float(row["task_loss"])) for row in trained]
    if bad is not None:
        alarms.append(f"the loss is not finite at epoch {bad}: training diverged; lower --lr, or look for "
                      f"NaN inputs")
    finite = [(epoch, loss) for epoch, loss in losses if math.isfinite(loss)]
    if num_classes is not None and num_classes > 1:
        guess = math.log(num_classes)
        worst = max(finite, key=lambda e: e[1], default=None)
        if worst is not None and worst[1] > EXPLODED_FACTOR * guess:
            alarms.append(f"the loss exploded: epoch {worst[0]}'s mean loss is {worst[1]:.4g}, more than "
                          f"{EXPLODED_FACTOR:g}x the {guess:.2f} of a uniform guess (activations growing "
                          f"through the layers)")
        for i, (epoch, loss) in enumerate(finite[1:], 1):
            best = min(value for _, value in finite[:i])
            if loss > DIVERGED_FACTOR * best and loss > guess:
                alarms.append(f"the loss diverged: {loss:.4g} at epoch {epoch} against {best:.4g} earlier "
                              f"(more than {DIVERGED_FACTOR:g}x); lower --lr")
                break
        accuracy = final_accuracy if final_accuracy is not None else (
            history[-1].get("val_accuracy") if history else None)
        if at_chance(accuracy, num_classes):
            chance = chance_accuracy(num_classes)
            alarms.append(f"validation accuracy {accuracy:.2%} is at chance ({chance:.2%} for a guess among "
                          f"{num_classes} classes): this ticket is useless; try more epochs, another --lr, "
                          f"or another method")
    return alarms
