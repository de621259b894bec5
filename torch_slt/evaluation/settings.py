"""Typed settings of :func:`torch_slt.evaluate` (one dataclass; defaults follow the references)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch_slt.core.errors import SettingError

#: The natural corruptions, in the order of Hendrycks & Dietterich 2019 (the subset that needs no
#: external image library).
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "contrast", "brightness",
               "pixelate")
#: The offline OoD sets built for image data (see :mod:`torch_slt.evaluation.ood_sets`).
OOD_SETS = ("digits", "gaussian", "uniform", "vflip")


@dataclass
class EvalSettings:
    """Settings of the metrics.

    Attributes:
        bins: equal-width confidence bins of the ECE and the reliability diagram (15, Guo et al. 2017).
        ood_sets: names of the built-in OoD sets to score against (:data:`OOD_SETS`).
        ood_data: extra OoD sets, name -> Dataset / ``(inputs, labels)`` / inputs tensor (labels
            unused), already normalised like the test data.
        ood_samples: at most this many images per built-in OoD set (seeded).
        corruptions: names from :data:`CORRUPTIONS`.
        severities: corruption severities, 1..5.
        epsilons: FGSM / PGD L-inf radii in pixel units (images in [0, 1]).
        pgd_steps: PGD steps (0: FGSM only). Step size ``2.5 * eps / steps`` (Madry et al. 2018).
        adversarial_samples: attack at most this many test images (the first ones).
        mean, std: per-channel normalisation of the inputs, to go back to pixels in [0, 1] for the
            corruptions, attacks and OoD images; ``None``: read from the dataset (torch_slt's
            ``ImageDataset``) or, failing that, inputs are taken to be pixels already.
        batch_size: forward batch size.
        seed: seeds the noise of corruptions, OoD images and the PGD start.
        device: where the model runs (``None``: where its parameters are).
    """

    bins: int = 15
    ood_sets: tuple[str, ...] = OOD_SETS
    ood_data: dict[str, Any] = field(default_factory=dict)
    ood_samples: int = 2000
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    epsilons: tuple[float, ...] = (0.01, 0.03, 0.1)
    pgd_steps: int = 0
    adversarial_samples: int = 1000
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    batch_size: int = 1000
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.bins, int) or self.bins < 1:
            raise SettingError("bins", self.bins, "must be a positive integer (15 is the usual)",
                               "EvalSettings")
        unknown = [c for c in self.corruptions if c not in CORRUPTIONS]
        if unknown:
            raise SettingError("corruptions", unknown, f"are not known; choose from {', '.join(CORRUPTIONS)}",
                               "EvalSettings")
        bad = [s for s in self.severities if s not in (1, 2, 3, 4, 5)]
        if bad:
            raise SettingError("severities", bad, "must be in 1..5", "EvalSettings")
        unknown = [o for o in self.ood_sets if o not in OOD_SETS]
        if unknown:
            raise SettingError("ood_sets", unknown, f"are not built in; choose from {', '.join(OOD_SETS)} "
                               f"or pass your own in ood_data", "EvalSettings")
        if any(not 0.0 <= e <= 1.0 for e in self.epsilons):
            raise SettingError("epsilons", self.epsilons, "must be in [0, 1] (pixel units, e.g. 0.03)",
                               "EvalSettings")
        for name in ("pgd_steps",):
            if getattr(self, name) < 0:
                raise SettingError(name, getattr(self, name), "must be >= 0", "EvalSettings")
        for name in ("ood_samples", "adversarial_samples", "batch_size"):
            if getattr(self, name) < 1:
                raise SettingError(name, getattr(self, name), "must be >= 1", "EvalSettings")
        self.ood_sets, self.corruptions = tuple(self.ood_sets), tuple(self.corruptions)
        self.severities, self.epsilons = tuple(self.severities), tuple(float(e) for e in self.epsilons)
