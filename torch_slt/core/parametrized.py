"""Weights that torch computes from other tensors (parametrizations, weight/spectral norm hooks).

``torch.nn.utils.parametrizations.weight_norm`` / ``spectral_norm`` (and the older hook-based
``torch.nn.utils.weight_norm`` / ``spectral_norm``) replace a module's ``weight`` Parameter by a tensor
recomputed from ``original0/original1`` (``weight_g``/``weight_v``, ``weight_orig``) at every access.
torch_slt refuses such a weight, naming the parametrization, instead of gating one of its inputs:

* gating the inputs changes the method's meaning: weight norm divides the direction ``v`` by its
  norm, so masking ``v`` rescales every *kept* weight; spectral norm divides by the largest singular
  value, which masking changes too. The ticket would then not be a subnetwork of the weights.
* gating the output would need the gate inside torch's parametrization chain, which the prune
  protocol (``weight_orig`` / ``weight_mask`` / a forward pre-hook) cannot express.

The fix the message gives keeps the meaning: bake the current effective weight into a plain Parameter
(``torch.nn.utils.parametrize.remove_parametrizations(module, "weight")``), then gate it; or exclude
the module.
"""

from __future__ import annotations

from torch import nn

#: torch's parametrization classes -> the public function that installs them.
_KNOWN = {
    "_WeightNorm": "torch.nn.utils.parametrizations.weight_norm",
    "_SpectralNorm": "torch.nn.utils.parametrizations.spectral_norm",
    "_Orthogonal": "torch.nn.utils.parametrizations.orthogonal",
}


def parametrization_of(module: nn.Module, name: str = "weight") -> tuple[str, str] | None:
    """``(what computes module.<name>, how to bake it in)`` when torch computes that weight, else None."""
    from torch.nn.utils import parametrize

    if parametrize.is_parametrized(module, name):
        kinds = [type(p).__name__ for p in getattr(module.parametrizations, name)]
        what = " + ".join(_KNOWN.get(k, f"a parametrization ({k})") for k in kinds)
        return what, f"torch.nn.utils.parametrize.remove_parametrizations(module, {name!r})"
    for hook in module._forward_pre_hooks.values():
        kind = type(hook).__name__
        if getattr(hook, "name", None) == name and kind in ("WeightNorm", "SpectralNorm"):
            fn = "weight_norm" if kind == "WeightNorm" else "spectral_norm"
            return f"torch.nn.utils.{fn}", f"torch.nn.utils.remove_{fn}(module, {name!r})"
    return None


def refusal(label: str, module: nn.Module, found: tuple[str, str], name: str = "weight") -> str:
    what, bake = found
    return (f"{label} ({type(module).__name__}): its {name} is computed by {what}, so there is no "
            f"{name} Parameter to gate, and gating the parametrization's inputs would rescale the kept "
            f"weights (not a subnetwork). Bake the current {name} into a plain Parameter first with "
            f"{bake}, or leave the module out (exclude=...).")
