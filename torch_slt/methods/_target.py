r"""A sparsity target of the gate methods: one schedule and one selection per ``apply`` call.

``apply(model, "stg", sparsity=s, total_steps=T)`` makes the sparsity a hard constraint on the
*ranking* of the gates instead of a number that a penalty weight has to hit (the module docstring of
:mod:`torch_slt.methods._gates` says why). One :class:`SparsityTarget` is shared by every tensor the
call gates; it owns

* **the clock**: :attr:`SparsityTarget.step`, the optimizer steps taken (a host int, advanced by
  :mod:`torch_slt.core.schedule` after every optimizer step that updates these gates; saved in the
  ``<tensor>_step`` buffers of the ``state_dict`` and restored on load, so a resumed run is
  bit-identical);
* **the training selection**: the exact top :math:`k_t = (1 - s_t) N` gates of all members at the
  cubic schedule's sparsity :math:`s_t = s\,(1 - (1 - t / (rT))^3)` (Zhu & Gupta 2017,
  https://arxiv.org/abs/1710.01878), made once per window of :data:`REFRESH_STEPS` optimizer steps
  for all members at once, in the optimizer hook (outside the forward), and kept in each member's
  ``<tensor>_window`` buffer; its cut (the lowest score kept) stays on the device;
* **the ticket's selection**: the exact top :math:`(1 - s) N` gates, made once for all members when an
  eval forward, :func:`torch_slt.report` or :func:`torch_slt.finalize` needs it after the gates moved,
  and cached until they move again.

Nothing is read back from the device in a forward: a forward only reads buffers, and Python branches
only on Python state (is a selection current?), so ``torch.compile(fullgraph=True)`` traces it whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import torch
from torch import Tensor, nn

from torch_slt.core.schedule import register_clock
from torch_slt.core.selection import keep_count, top_groups_mask, top_k_mask

if TYPE_CHECKING:
    from torch_slt.methods._gates import GateMethod

#: Length of the sparsity schedule when ``total_steps`` is not given, in optimizer steps.
DEFAULT_RAMP_STEPS = 1000
#: Fraction of ``total_steps`` over which the training sparsity ramps from 0 to the target.
DEFAULT_RAMP = 0.5
#: The training selection is refreshed every this many optimizer steps: the gates move little in
#: between, and a selection costs about a third of a lenet300 training step on a CPU.
REFRESH_STEPS = 8


class SparsityTarget:
    """The schedule and selections shared by every tensor gated by one ``apply`` call (module docstring).

    Members are ``(module, hook)`` pairs, one per gated *tensor* (a module with two gated tensors,
    such as ``nn.LSTM``, is two members with two masks).
    """

    def __init__(self, sparsity: float, total_steps: int | None = None, ramp: float = DEFAULT_RAMP) -> None:
        self.sparsity = sparsity
        self.total_steps = total_steps
        self.ramp = ramp
        self.members: list[tuple[nn.Module, GateMethod]] = []
        #: Optimizer steps taken (host int).
        self.step = 0
        # First step of the training selection held in the members' ``<tensor>_window`` buffers
        # (None: no valid one, e.g. right after apply).
        self.window: int | None = None
        # The ticket's selection, cached (see ticket_mask): {id(hook): mask}, and whether it is current.
        self._ticket: dict[int, Tensor] = {}
        self._ticket_versions: dict[int, tuple[int, int]] = {}
        self.ticket_fresh = False
        register_clock(self)

    def __repr__(self) -> str:
        return f"SparsityTarget(sparsity={self.sparsity}, total_steps={self.total_steps}, ramp={self.ramp})"

    def __setstate__(self, state: dict) -> None:  # deepcopy / unpickle: a new clock to drive
        self.__dict__.update(state)
        register_clock(self)

    # ------------------------------------------------------------------ schedule
    @property
    def ramp_steps(self) -> int:
        """Optimizer steps over which the training sparsity ramps up to the target."""
        if self.total_steps is None:
            return DEFAULT_RAMP_STEPS
        return max(1, round(self.ramp * self.total_steps))

    def sparsity_at(self, step: int) -> float:
        """The training sparsity after ``step`` steps: cubic from 0 to :attr:`sparsity`."""
        progress = min(max(step / self.ramp_steps, 0.0), 1.0)
        return self.sparsity * (1.0 - (1.0 - progress) ** 3)

    def window_of(self, step: int) -> int:
        return step // REFRESH_STEPS * REFRESH_STEPS

    def live_members(self) -> list[tuple[nn.Module, GateMethod]]:
        """Members still gated (``finalize`` removes the gates one by one)."""
        return [(m, h) for m, h in self.members if h.is_gated(m)]

    def gate_parameters(self) -> Iterator[nn.Parameter]:
        for module, hook in self.live_members():
            yield hook.field(module, hook.fields[0])

    def on_optimizer_step(self) -> None:
        """One optimizer step on these gates (called by :mod:`torch_slt.core.schedule`)."""
        self.step += 1
        self.ticket_fresh = False
        if self.window is None or self.window_of(self.step) != self.window:
            self.refresh_training_selection()

    def set_step(self, step: int) -> None:
        """Jump the schedule to ``step`` (resume by hand, tests); the next training forward reselects."""
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"SparsityTarget.set_step: step={step!r} must be a non-negative int")
        self.step = step
        self.window = None

    # ------------------------------------------------------------------ selections
    def _select(self, sparsity: float) -> tuple[list[tuple[nn.Module, GateMethod]], list[Tensor], Tensor]:
        """Every live member, its part (gate shape) of the exact top-(1 - sparsity) selection over all
        members' gate scores, and the lowest score kept (a device scalar; the highest score if none)."""
        members = self.live_members()
        scores = [h.gate_score(m) for m, h in members]
        device = scores[0].device
        flat = torch.cat([s.reshape(-1).to(device) for s in scores])
        sizes = [h.weights_per_gate() for _, h in members]
        if all(size == 1 for size in sizes):
            keep = top_k_mask(flat, keep_count(flat.numel(), sparsity))
        else:
            per_gate = torch.cat([torch.full((s.numel(),), size, dtype=torch.float64, device=device)
                                  for s, size in zip(scores, sizes)])
            total = sum(s.numel() * size for s, size in zip(scores, sizes))
            keep = top_groups_mask(flat, per_gate, sparsity, total)
        lowest_kept = torch.where(keep, flat, torch.full_like(flat, float("inf"))).min()
        cut = torch.where(keep.any(), lowest_kept, flat.max())
        masks = [part.view(s.shape).to(s.device) for part, s in zip(keep.split([s.numel() for s in scores]),
                                                                   scores)]
        return members, masks, cut

    def refresh_training_selection(self) -> None:
        """The training selection of the current window, for all members, into their buffers."""
        window = self.window_of(self.step)
        members, masks, cut = self._select(self.sparsity_at(window))
        with torch.no_grad():
            for (module, hook), mask in zip(members, masks):
                module._buffers[f"{hook._tensor_name}_window"].copy_(mask)
                state = module._buffers[f"{hook._tensor_name}_step"]
                state[1].fill_(window)
                state[2].copy_(cut)
        self.window = window

    def ticket_mask(self, module: nn.Module, hook: GateMethod, *, in_forward: bool = False) -> Tensor:
        """``hook``'s part (gate shape) of the ticket's selection of the current gates.

        One selection serves every member until the gates move: it is cached, and redone after an
        optimizer step (the flag :attr:`ticket_fresh`) or, in eager code, when a gate tensor's version
        counter changed (an edit by hand: ``mu.copy_(...)``). A forward checks its own member only
        (cost linear in the number of layers); ``report`` and ``finalize`` check them all.
        """
        members = [(module, hook)] if in_forward else self.live_members()
        if not self._ticket_current(members):
            self._refresh_ticket()
        return self._ticket[id(hook)]

    def _refresh_ticket(self) -> None:
        members, masks, _ = self._select(self.sparsity)
        self._ticket = {id(h): mask for (_, h), mask in zip(members, masks)}
        self._ticket_versions = {id(h): _version_of(h.field(m, h.fields[0])) for m, h in members}
        self.ticket_fresh = True

    def _ticket_current(self, members: list[tuple[nn.Module, GateMethod]]) -> bool:
        # Under torch.compile the version counter cannot be read without a graph break: the flag
        # (cleared by every optimizer step on the gates) decides there.
        if not self.ticket_fresh:
            return False
        if torch.compiler.is_compiling():
            return True
        versions = self._ticket_versions
        return all(id(h) in self._ticket and versions.get(id(h)) == _version_of(h.field(m, h.fields[0]))
                   and self._ticket[id(h)].device == h.field(m, h.fields[0]).device for m, h in members)

    def __getstate__(self) -> dict:
        # The ticket cache is keyed by the hooks' identity: a copy recomputes it.
        return {**self.__dict__, "ticket_fresh": False, "_ticket": {}, "_ticket_versions": {}}


def _version_of(param: Tensor) -> tuple[int, int]:
    """The Parameter's identity and version counter (both host ints: no device read)."""
    return id(param), param._version
