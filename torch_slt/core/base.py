"""The method protocol shared by every torch_slt method.

Every method is a :class:`torch.nn.utils.prune.BasePruningMethod`, so ``prune.is_pruned`` sees it and
``prune.remove(module, "weight")`` finalizes it. What one gated tensor looks like on its module
(``weight`` as an example):

* ``weight_orig``: the original :class:`~torch.nn.Parameter`, the same object as before;
* ``weight_mask``: a boolean buffer, the current hard mask (``True`` = kept);
* ``weight_<field>``: the learned tensors of learned-mask methods (``weight_mu`` for ``stg``);
* ``weight``: a plain tensor attribute that the forward pre-hook recomputes before every forward.

Two families share this protocol:

* :class:`LearnedMaskMethod`: the mask is trained (gates, scores). In train mode the pre-hook builds a
  relaxed or sampled weight; in eval mode it uses the hard mask.
* :class:`FixedMaskMethod`: the mask is chosen once at ``apply`` from importance scores and stays fixed.

A tensor is gated at most once: applying a second method, torch_slt's or torch's, raises
:class:`~torch_slt.core.errors.AlreadyGatedError`. Iterative pruning does not stack gates either: it
narrows one fixed mask in place, round after round (:func:`torch_slt.core.masks.narrow_masks`). Stacking torch's own ``prune.*`` functions *on top of* a
torch_slt gate cannot be refused at the time it happens (torch does not ask), so every torch_slt function
detects it afterwards and raises instead of silently mixing the two.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from torch_slt.core.errors import AlreadyGatedError, NonFiniteGateError, UnsupportedModelError
from torch_slt.core.metadata import GateLoadCheck, GateMetadata


class _SavedMask:
    """The value of a scoring-only constructor argument (``data``) of a fixed-mask method rebuilt from a
    checkpoint: the saved mask is installed, so nothing is scored (:meth:`FixedMaskMethod.for_saved_mask`)."""

    def __repr__(self) -> str:
        return "SAVED_MASK"


SAVED_MASK = _SavedMask()


class SLTMethod(prune.BasePruningMethod):
    """Base class of every torch_slt method; see the module docstring for the state it adds."""

    PRUNING_TYPE = "unstructured"
    #: Registry key, set by :func:`~torch_slt.core.registry.register_method`.
    name: ClassVar[str] = ""
    #: One line for ``torch-slt methods``.
    description: ClassVar[str] = ""
    #: Whether the mask is learned (then ``apply`` freezes the other parameters by default).
    learned: ClassVar[bool] = False
    #: Whether the weights are trained with the mask (a weak-ticket method such as ``cs``): ``apply``
    #: then leaves them trainable, and ``fit`` trains them too.
    trains_weights: ClassVar[bool] = False
    #: Whether the training forward is not the hard mask (see :class:`LearnedMaskMethod`).
    relaxed_forward: ClassVar[bool] = False
    #: Names of the learned tensors, registered on the module as ``<tensor>_<field>``.
    fields: ClassVar[tuple[str, ...]] = ()
    #: Other ``<tensor>_<suffix>`` attributes the method may register (``cs``: ``beta``, ``step``).
    added_names: ClassVar[tuple[str, ...]] = ()

    _tensor_name: str | None = None
    #: How many readers of this weight (:mod:`torch_slt.core.readers`) are running: while one is, the
    #: weight it computed serves the whole forward and the gate's own pre-hook does not recompute it.
    _reader_depth: int = 0

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        """The forward pre-hook: recompute ``module.<tensor>``, unless a reader already did for this forward."""
        if self._reader_depth:
            return
        self.refresh(module, inputs)

    def refresh(self, module: nn.Module, inputs: Any = None) -> None:
        """Recompute ``module.<tensor>`` from the gate now (train mode: a fresh sample)."""
        setattr(module, self._tensor_name, self.apply_mask(module))

    @classmethod
    def names_added(cls, name: str) -> list[str]:
        """Every attribute gating ``<name>`` may create on its module: ``<name>_orig``, ``<name>_mask``,
        the learned fields, the method's own extras, and (learned methods) ``<name>_step``, the counter
        of a sparsity target. :func:`_check_gateable` refuses a module that already holds one."""
        suffixes = ["orig", "mask", *cls.fields, *cls.added_names] + (["step"] if cls.learned else [])
        return [f"{name}_{suffix}" for suffix in dict.fromkeys(suffixes)]

    # ------------------------------------------------------------------ what a subclass provides
    def hard_mask(self, module: nn.Module) -> Tensor:
        """The boolean mask this method keeps now (``True`` = kept), without gradient."""
        raise NotImplementedError

    def prob_nonzero(self, module: nn.Module) -> Tensor | None:
        """P(gate != 0) per weight, differentiable in the gates; ``None`` for methods without one."""
        return None

    def expected_kept(self, module: nn.Module) -> tuple[Tensor, int] | None:
        """``(sum of P(gate != 0), number of gates)``, this tensor's share of :func:`torch_slt.penalty`.

        ``None`` for methods without a penalty. The default sums :meth:`prob_nonzero` in float32 at
        least; a method may hand out a term its forward already computed (``stg`` does, so that the
        penalty's gradient is computed inside the gate's own backward).
        """
        prob = self.prob_nonzero(module)
        if prob is None:
            return None
        return prob.sum(dtype=torch.promote_types(prob.dtype, torch.float32)), prob.numel()

    def penalty_lam(self, module: nn.Module) -> float | Tensor:
        """The multiplier of this tensor's term in :func:`torch_slt.penalty` (methods with a penalty
        have a ``lam``; it is a constant, also with a sparsity target)."""
        return self.lam

    def init_state(self, module: nn.Module, orig: Tensor, mask: Tensor | None,
                   importance_scores: Tensor | None) -> None:
        """Register the method's own tensors on ``module`` (called once, inside ``apply``)."""

    def clock(self) -> Any:
        """The schedule this gate's optimizer steps advance (:mod:`torch_slt.core.schedule`), or None."""
        return None

    def plan(self, model: nn.Module, targets: list[tuple[str, nn.Module]]) -> list[dict[str, Any]]:
        """Per-target keyword arguments for :meth:`apply`, worked out on the whole model.

        Model-level decisions (a global threshold, scores that need a forward pass) go here;
        the default needs none.
        """
        return [{} for _ in targets]

    # ------------------------------------------------------------------ torch prune protocol
    @classmethod
    def apply(cls, module: nn.Module, name: str, *args: Any, importance_scores: Tensor | None = None,
              mask: Tensor | None = None, **kwargs: Any) -> SLTMethod:
        """Gate ``module.<name>`` in place and return the hook (torch's ``apply`` contract).

        ``mask`` fixes the initial hard mask (used by fixed-mask methods whose mask was chosen on the
        whole model); otherwise the method derives it from ``importance_scores`` or its own state.
        If anything fails the module is restored exactly as it was.
        """
        if cls.learned and importance_scores is not None:
            raise TypeError(
                f"{cls.__name__}.apply(): importance_scores is for fixed-mask methods; {cls.name!r} learns "
                f"its mask during training from its own initialisation, so the scores would be ignored")
        method = cls(*args, **kwargs)
        return method._install(module, name, importance_scores=importance_scores, mask=mask)

    def _install(self, module: nn.Module, name: str, *, importance_scores: Tensor | None = None,
                 mask: Tensor | None = None) -> SLTMethod:
        """Install this already-built method on ``module.<name>``; the body of :meth:`apply`.

        Also used to re-create a gate from a checkpoint without re-running the method's constructor
        (:func:`torch_slt.load_state_dict`).
        """
        _check_gateable(type(self), module, name)
        orig = module._parameters[name]
        method = self
        method._tensor_name = name
        method._param_order = list(module._parameters)
        try:
            module.register_parameter(name + "_orig", orig)
            del module._parameters[name]
            method.init_state(module, orig, mask, importance_scores)
            module.register_buffer(name + "_mask", method.hard_mask(module).detach().clone())
            with torch.no_grad():
                # The hard-masked weight until the first forward: no noise drawn, so apply leaves
                # the global RNG alone; the pre-hook computes the train-mode weight itself.
                setattr(module, name, SLTMethod.apply_mask(method, module))
            module.register_forward_pre_hook(method)
            module.register_forward_hook(DetachAfterForward(name))
            # Public since torch 2.5 or so; the private twin has the same signature before that.
            getattr(module, "register_state_dict_post_hook", module._register_state_dict_hook)(
                GateMetadata(method))
            module._register_load_state_dict_pre_hook(GateLoadCheck(method), with_module=True)
            module.__dict__["__prepare_scriptable__"] = ScriptRefusal(method)
        except BaseException:
            method._undo(module, orig)
            raise
        return method

    def apply_mask(self, module: nn.Module) -> Tensor:
        """The effective tensor: ``orig * hard mask`` (learned methods relax it in train mode)."""
        orig = getattr(module, self._tensor_name + "_orig")
        return orig * getattr(module, self._tensor_name + "_mask")

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """torch's hook for a mask computed from a tensor alone (``prune.global_unstructured``,
        ``PruningContainer``). A learned mask does not exist before training, so there is none to
        compute: refused with what to use instead (fixed-mask methods override this)."""
        cls = type(self)
        raise TypeError(
            f"{cls.__name__} ({cls.name!r}) learns its mask during training, so it has no mask to compute "
            f"from a tensor at prune time (torch.nn.utils.prune.global_unstructured / PruningContainer "
            f"need one). Gate the tensors with torch_slt.apply(model, {cls.name!r}, targets=...) and train "
            f"them; for a global ranking chosen at once use 'magnitude' or 'random'.")

    def remove(self, module: nn.Module) -> None:
        """Bake ``orig * hard mask`` into a plain Parameter and delete every tensor the method added.

        Called by ``torch.nn.utils.prune.remove(module, name)``, which then drops the pre-hook.
        The Parameter object stays the same, so optimizers that hold it keep working.
        """
        from torch_slt.core import finite

        name = self._tensor_name
        bad = finite.nonfinite(finite.hook_tensors("", module, self))
        if bad:  # torch's prune.remove on one tensor: the same refusal as finalize, nothing touched
            raise NonFiniteGateError(finite.message(bad, f"prune.remove({type(module).__name__}, {name!r})"),
                                     bad)
        orig = module._parameters[name + "_orig"]
        # Not an inference tensor even inside torch.inference_mode(): one would refuse later training.
        with torch.inference_mode(False), torch.no_grad():
            baked = orig * self.hard_mask(module).to(orig.dtype)
            orig.data = baked
        # prune.remove() deletes the pre-hook itself once this returns.
        self._undo(module, orig, drop_pre_hook=False)

    # ------------------------------------------------------------------ helpers
    def _undo(self, module: nn.Module, orig: nn.Parameter, drop_pre_hook: bool = True) -> None:
        """Put ``orig`` back as ``module.<name>`` and delete everything :meth:`apply` added."""
        name = self._tensor_name
        module.__dict__.pop(name, None)
        for key in [name + "_orig"] + [f"{name}_{field}" for field in self.fields]:
            module._parameters.pop(key, None)
        module._buffers.pop(name + "_mask", None)
        if drop_pre_hook:
            for key in [k for k, h in module._forward_pre_hooks.items() if h is self]:
                del module._forward_pre_hooks[key]
        for key in [k for k, h in module._forward_hooks.items() if _is_detach_hook(h, name)]:
            del module._forward_hooks[key]
        # Helper hooks this gate owns: its state_dict metadata hook, and the refresh hooks that
        # torch_slt.core.readers installs on modules that read this weight in their own forward.
        for hooked in [module, *self.__dict__.pop("_hooked_modules", [])]:
            for hooks in (hooked._forward_pre_hooks, hooked._forward_hooks, hooked._state_dict_hooks,
                          hooked._state_dict_pre_hooks, hooked._load_state_dict_pre_hooks):
                # (torch wraps load pre-hooks in a _WrappedHook holding ours as .hook)
                for key in [k for k, h in hooks.items() if _owner(h) is self]:
                    del hooks[key]
        if _owner(module.__dict__.get("__prepare_scriptable__")) is self:
            del module.__dict__["__prepare_scriptable__"]
        module._parameters[name] = orig
        _refresh_rnn_weights(module, name)
        order = getattr(self, "_param_order", None)
        if order:
            # Restore the original key order so the state_dict lists keys as the unmodified model does.
            items = dict(module._parameters)
            module._parameters.clear()
            module._parameters.update({k: items.pop(k) for k in order if k in items})
            module._parameters.update(items)


def in_functorch_transform(tensor: Tensor) -> bool:
    """Whether ``tensor`` was computed inside a ``torch.func`` transform (``grad``, ``vmap``, ``jvp``
    over ``functional_call``). Such a transform may not write into tensors captured from outside, so the
    ``<tensor>_mask`` buffer keeps its last value there (the forward itself uses the fresh mask).
    Always False while ``torch.compile`` traces, which sees no functorch wrappers."""
    if torch.compiler.is_compiling():
        return False
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(tensor))


class LearnedMaskMethod(SLTMethod):
    """A method whose mask is trained: gates or scores registered as Parameters on the module.

    Subclasses implement :meth:`init_state` (register ``<tensor>_<field>`` Parameters),
    :meth:`relaxed_weight` (the train-mode weight, differentiable in the gates) and
    :meth:`hard_mask`. The ``<tensor>_mask`` buffer is refreshed in place at every forward, so it
    always shows the current hard mask.
    """

    learned = True
    #: Whether the training forward differs from the hard mask (sampled or relaxed gates): BatchNorm
    #: statistics gathered in training then describe another network than the ticket
    #: (:func:`torch_slt.recalibrate_batchnorm`). False for edge-popup, whose training forward is its mask.
    relaxed_forward = True

    def relaxed_weight(self, module: nn.Module, orig: Tensor, mask: Tensor) -> Tensor:
        """The train-mode effective weight (sampled or relaxed mask times ``orig``).

        ``mask`` is this forward's hard mask, already computed: methods whose training forward uses it
        (edge-popup's straight-through top-k) take it instead of selecting twice.
        """
        raise NotImplementedError

    def forward_mask(self, module: nn.Module) -> Tensor:
        """The hard mask a forward uses and shows in the ``<tensor>_mask`` buffer (:meth:`hard_mask`)."""
        return self.hard_mask(module)

    def apply_mask(self, module: nn.Module) -> Tensor:
        name = self._tensor_name
        orig = getattr(module, name + "_orig")
        self._keep_fields_float32(module)
        mask = self.forward_mask(module)  # once per forward: for the buffer and the weight
        buffer = module._buffers.get(name + "_mask")
        if buffer is not None and buffer is not mask and not in_functorch_transform(mask):
            with torch.no_grad():
                buffer.copy_(mask)
        if module.training:
            if in_functorch_transform(mask):
                return self._relaxed_in_transform(module, orig, mask)
            return self.relaxed_weight(module, orig, mask)
        return orig * mask

    def _relaxed_in_transform(self, module: nn.Module, orig: Tensor, mask: Tensor) -> Tensor:
        """The train-mode weight inside a ``torch.func`` transform: methods whose custom autograd
        function predates ``setup_context`` cannot run there; say so instead of torch's message."""
        try:
            return self.relaxed_weight(module, orig, mask)
        except RuntimeError as err:
            if "setup_context" not in str(err):
                raise
            method = type(self).name or type(self).__name__
            raise UnsupportedModelError(
                f"torch.func: the train-mode forward of {method!r} uses a custom autograd function that "
                f"torch.func transforms (grad, vmap over functional_call) cannot run. Evaluate in eval mode "
                f"(model.eval(): the hard mask, which works), use ordinary autograd (loss.backward()) to "
                f"train, or a method whose train forward supports it ('supermask', 'cs').") from err

    def _keep_fields_float32(self, module: nn.Module) -> None:
        # model.half() / .to(bfloat16) after apply cast the gates too; small optimizer steps would
        # round away in 16 bits, so gates go back to float32 (same Parameter object).
        for field in self.fields:
            gate = module._parameters[f"{self._tensor_name}_{field}"]
            if gate.dtype in (torch.float16, torch.bfloat16):
                gate.data = gate.data.float()

    def field(self, module: nn.Module, field: str) -> Tensor:
        """The learned tensor ``<tensor>_<field>`` of ``module``."""
        return module._parameters[f"{self._tensor_name}_{field}"]


class FixedMaskMethod(SLTMethod):
    """A mask chosen once, from importance scores, when the method is applied.

    Subclasses implement :meth:`scores`. ``sparsity`` is the fraction of weights **removed**;
    ``scope="global"`` ranks all targeted tensors together, ``"layer"`` ranks each tensor alone.
    ``rounding`` says how many are removed from ``n`` ranked weights: ``"torch"`` ``round(s n)``
    (torch's ``prune``), ``"floor"`` ``floor(s n)`` (hidden-networks, Synaptic-Flow, GraSP); see
    :func:`torch_slt.core.selection.keep_count`.
    """

    learned = False
    #: Constructor arguments only the scoring needs (``data`` for SNIP / GraSP / SynFlow).
    scoring_inputs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def for_saved_mask(cls, config: dict[str, Any]) -> FixedMaskMethod:
        """The method built through its constructor from a checkpoint's ``config`` (its settings checked as
        at ``apply``), to install a saved mask: each of :attr:`scoring_inputs` is :data:`SAVED_MASK`, as no
        score is computed.

        Example:
            >>> FixedMaskMethod.for_saved_mask({"sparsity": 0.5}).sparsity
            0.5
        """
        settings = {k: v for k, v in config.items() if k not in cls.scoring_inputs}
        return cls(**settings, **dict.fromkeys(cls.scoring_inputs, SAVED_MASK))

    def __init__(self, sparsity: float | None = None, scope: str = "global", *,
                 amount: float | None = None, rounding: str = "torch") -> None:
        from torch_slt.core.validation import check_choice, check_sparsity, sparsity_or_amount

        who = type(self).name or type(self).__name__
        value, given = sparsity_or_amount(sparsity, amount, who)
        self.sparsity = check_sparsity(value, who, name=given)
        self.scope = check_choice("scope", scope, ("global", "layer"))
        self.rounding = check_choice("rounding", rounding, ("torch", "floor"))

    def keep_top(self, scores: list[Tensor], sparsity: float | None = None) -> list[Tensor]:
        """:func:`~torch_slt.core.selection.keep_top` of ``scores`` (ranked jointly) at ``sparsity``
        (default: the method's), counting the removed weights with :attr:`rounding`."""
        from torch_slt.core.selection import keep_count, keep_top

        sparsity = self.sparsity if sparsity is None else sparsity
        if self.rounding == "torch":
            return keep_top(scores, sparsity)
        total = sum(s.numel() for s in scores)
        if total == 0:
            return keep_top(scores, sparsity)
        # keep_top removes round(s' n): at s' = removed / n that is exactly `removed`.
        removed = total - keep_count(total, sparsity, self.rounding)
        return keep_top(scores, removed / total)

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """torch's entry point (``prune.global_unstructured``, ``PruningContainer``): keep the top
        ``1 - sparsity`` of the entries of ``t`` by this method's per-tensor scores (``|t|`` for
        ``magnitude``), within ``default_mask``. ``t`` may be importance scores, as in torch."""
        scores = self.tensor_scores(t)
        _check_scores([scores], ["the tensor"], type(self))
        keep = self.keep_top([scores])[0]
        return default_mask * keep.to(default_mask.dtype)

    def scores(self, model: nn.Module, targets: list[tuple[str, nn.Module]]) -> list[Tensor]:
        """One importance score tensor per target (higher = keep), same shape as its weight."""
        raise NotImplementedError

    def plan(self, model: nn.Module, targets: list[tuple[str, nn.Module]]) -> list[dict[str, Any]]:
        scores = self.scores(model, targets)
        _check_scores(scores, [_target_label(t) for t in targets], type(self))
        if self.scope == "global":
            masks = self.keep_top(scores)
        else:
            masks = [self.keep_top([s])[0] for s in scores]
        return [{"mask": m} for m in masks]

    def init_state(self, module: nn.Module, orig: Tensor, mask: Tensor | None,
                   importance_scores: Tensor | None) -> None:
        if mask is None:
            # Called directly on one module (torch style): rank this tensor alone.
            scores = importance_scores if importance_scores is not None else self.tensor_scores(orig)
            _check_scores([scores], [f"{type(module).__name__}.{self._tensor_name}"], type(self))
            mask = self.keep_top([scores])[0]
        self._initial_mask = mask.to(device=orig.device, dtype=torch.bool)

    def tensor_scores(self, weight: Tensor) -> Tensor:
        """Scores for a single tensor when no model-level scores are given."""
        raise TypeError(
            f"{type(self).__name__} needs the whole model to score (a forward pass), not one tensor; use "
            f"torch_slt.apply(model, {type(self).name!r}, ...) (global ranking by default) or pass "
            f"importance_scores= to {type(self).__name__}.apply"
        )

    def hard_mask(self, module: nn.Module) -> Tensor:
        mask = module._buffers.get(self._tensor_name + "_mask")
        if mask is None:  # during apply, before the buffer exists
            mask = self.__dict__.pop("_initial_mask")
        return mask.bool()


def _check_scores(scores: list[Tensor], names: list[str], cls: type) -> None:
    from torch_slt.core.finite import check_finite_scores

    check_finite_scores(scores, names, f"{getattr(cls, 'name', '') or cls.__name__}")


def _target_label(target: Any) -> str:
    """``"fc.weight"`` for a :class:`~torch_slt.core.targets.Target`, its module name for a pair."""
    return getattr(target, "qualified", None) or str(target[0])


class DetachAfterForward:
    """Forward hook that detaches ``module.<name>`` once the forward is done.

    The pre-hook leaves a tensor with autograd history in ``module.__dict__``; ``copy.deepcopy`` refuses
    non-leaf tensors (pytorch#37322). The graph is still held by the ops that used it, so detaching the
    attribute afterwards costs nothing and keeps deepcopy, pickling and EMA copies working.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        detach_attribute(module, self.name)


def detach_attribute(module: nn.Module, name: str) -> None:
    """Replace the plain tensor ``module.<name>`` by its detached self (see :class:`DetachAfterForward`)."""
    tensor = module.__dict__.get(name)
    if tensor is not None and tensor.requires_grad:  # (not grad_fn: dynamo cannot trace it)
        module.__dict__[name] = tensor.detach()
        _refresh_rnn_weights(module, name)


def _refresh_rnn_weights(module: nn.Module, name: str) -> None:
    """``nn.LSTM``/``GRU``/``RNN`` keep their own list of weight tensors (``_flat_weights``), updated only
    through ``setattr``; writes that bypass it (``__dict__``, ``_parameters``) must refresh the list, or
    the RNN would keep running on a stale tensor (after finalize: the last train-mode relaxed weight)."""
    if name in getattr(module, "_flat_weights_names", ()):
        module._init_flat_weights()


def _owner(hook: Any) -> Any:
    """The gate that installed ``hook`` (looking through torch's ``_WrappedHook``), or None."""
    return getattr(getattr(hook, "hook", hook), "owner", None)


class ScriptRefusal:
    """Set as the gated module's ``__prepare_scriptable__``, which ``torch.jit.script`` calls on every
    submodule first: the gate's pre-hook is a Python object TorchScript cannot compile (it would fail
    with ``'DetachAfterForward' object has no attribute '__name__'``), so say why and what works."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner

    def __call__(self) -> None:
        method = type(self.owner).name or type(self.owner).__name__
        raise UnsupportedModelError(
            f"torch.jit.script(): this model carries torch_slt gates ({method!r} on "
            f"{self.owner._tensor_name!r}), whose forward pre-hooks are Python objects TorchScript cannot "
            f"compile. Call torch_slt.finalize(model) first (a plain nn.Module, scriptable), or use "
            f"torch.compile, which traces the hooks.")


def _is_detach_hook(hook: Any, name: str) -> bool:
    return isinstance(hook, DetachAfterForward) and hook.name == name


def _check_gateable(cls: type, module: nn.Module, name: str) -> None:
    from torch_slt.core.parametrized import parametrization_of, refusal

    refuse_if_pruned(module, name)
    found = parametrization_of(module, name)
    if found is not None:
        raise UnsupportedModelError(refusal(f"{cls.__name__}.apply()", module, found, name))
    refuse_if_uninitialized(module, name, f"{cls.__name__}.apply()")
    refuse_name_clash(cls, module, name, f"{cls.__name__}.apply()")
    refuse_sparse_gradient(cls, module, name, f"{cls.__name__}.apply()")
    orig = getattr(module, name, None)
    if not isinstance(orig, nn.Parameter):
        raise TypeError(
            f"{cls.__name__}.apply(): {type(module).__name__}.{name} must be an nn.Parameter, "
            f"got {type(orig).__name__}"
        )


def refuse_name_clash(cls: type, module: nn.Module, name: str, label: str) -> None:
    """Refuse a module that already holds a parameter, buffer, submodule or attribute under a name the
    gate would create: registering it would silently replace the user's tensor, and ``finalize``
    would then delete it."""
    taken = [key for key in cls.names_added(name)
             if key in module._parameters or key in module._buffers or key in module._modules
             or key in module.__dict__]
    if taken:
        method = getattr(cls, "name", "") or cls.__name__
        raise UnsupportedModelError(
            f"{label}: {type(module).__name__} already has {', '.join(map(repr, taken))}, a name that "
            f"{method!r} creates when it gates {name!r} (it would overwrite it, and finalize would delete "
            f"it). Rename your tensor (e.g. register_buffer('my_{taken[0]}', ...)) or leave this module "
            f"out with exclude=.")


def refuse_sparse_gradient(cls: type, module: nn.Module, name: str, label: str) -> None:
    """``nn.Embedding(sparse=True)`` (and ``EmbeddingBag``) hands back a sparse gradient for its weight; a
    learned gate's relaxed weight ``orig * f(gate)`` cannot pass it on (backward fails inside torch with
    "reshape is not implemented for sparse tensors"). Refused before the model is touched."""
    if getattr(cls, "learned", False) and name == "weight" and getattr(module, "sparse", False) is True:
        method = getattr(cls, "name", "") or cls.__name__
        raise UnsupportedModelError(
            f"{label}: {type(module).__name__}(sparse=True) returns sparse gradients, which the learned gate "
            f"of {method!r} cannot pass back to its scores. Build the layer with sparse=False (set "
            f"module.sparse = False; the gate tensors are dense anyway), or gate it with a fixed-mask "
            f"method ('magnitude', 'random').")


def pruning_hook(module: nn.Module, name: str) -> prune.BasePruningMethod | None:
    """The torch pruning hook (any kind) acting on ``module.<name>``, or None."""
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, prune.BasePruningMethod) and hook._tensor_name == name:
            return hook
    return None


def refuse_if_pruned(module: nn.Module, name: str) -> None:
    hook = pruning_hook(module, name)
    if hook is None:
        return
    what = getattr(type(hook), "name", "") or type(hook).__name__
    raise AlreadyGatedError(
        f"{type(module).__name__}.{name} is already pruned by {what!r}; a tensor is gated once. "
        f"Call torch_slt.finalize(model) (or torch.nn.utils.prune.remove(module, {name!r})) first "
        f"to make the current mask permanent, then apply the next method."
    )


def refuse_if_uninitialized(module: nn.Module, name: str, label: str) -> None:
    """A lazy module (``nn.LazyLinear``, ``nn.LazyConv2d``) has no weight shape before its first forward."""
    if isinstance(module._parameters.get(name), nn.parameter.UninitializedParameter):
        raise UnsupportedModelError(
            f"{label}: {type(module).__name__}.{name} is not initialized yet (a lazy module learns its "
            f"shape from its first input). Run one forward pass first, e.g. model(example_batch), then "
            f"gate it.")
