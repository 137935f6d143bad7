"""The policy controller: sample -> plan -> apply, once per balance period.

What is modelled
----------------
ESX recomputes memory targets periodically, every ``Mem.BalancePeriod`` = 15 s
[VS4-ATTR][VS-ADV70][ESX25-p343]; MOM and Proxmox run the
same loop every 15 s (vdsm) and 10 s (pvestatd) [MOM][PVE-BALLOON].
:class:`PolicyController` is that loop, and only the loop: it owns no thread and
reads no clock. The caller (the simulator's tick, or the QEMU backend's main
loop) calls :meth:`PolicyController.step` with the current time; when a
balance period has passed since the last decision (a ``core.period.Period``,
kept in whole nanoseconds), the controller takes a sample from the backend,
asks the policy for plans, hands them to the backend and records the decision
in a bounded history (a deque) for reports. Times come in seconds, as the
policy speaks them, and are rounded to nanoseconds once, here: a simulated
time (integer nanoseconds) comes back exactly, so "a period has passed" needs
no float tolerance.

Rebalancing when free memory crosses a threshold
------------------------------------------------
ESX also recomputes allocations when free memory crosses a state threshold,
not only periodically [OSDI02 §6.3]. On a small host the band in which
ballooning acts (SOFT) is a few tens of MiB wide and a growing VM crosses it
within seconds: waiting for the period lets the host fall into HARD and swap
what a balloon could have taken. :meth:`PolicyController.react` is that
trigger, for a policy that asks for it (``rebalances_on_crossing``, the
``esx`` policy). Two rate limits keep it from flapping: it fires only when the
host is in a *more severe* state than the one the plans in force were made
for (a host that oscillates between that state and a better one keeps its
plans: they were made for the worse), and never sooner than
``min_react_gap_s`` after the previous decision (default 1 s, the balloon
driver's poll period [OSDI02 §3.2][LINUX-BALLOON]: a new balloon target could
not be read sooner). A decision it forces starts a new balance period.

Invariants: time never goes backwards; decisions are at least one balance
period apart unless forced; a plan never names a VM the sample did not; the
history holds the latest ``history_len`` decisions, oldest first.

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hvmem.core.period import Period
from hvmem.errors import ConfigError, InvariantViolation
from hvmem.policy.planner import DEFAULT_BALANCE_PERIOD_S
from hvmem.policy.policies import Policy
from hvmem.policy.ports import MemoryBackend
from hvmem.policy.samples import HostSample, VmPlan, VmSample
from hvmem.policy.states import MemState
from hvmem.units import NS_PER_S, ns_to_s

__all__ = ["DEFAULT_HISTORY_LEN", "Decision", "PolicyController"]

#: Decisions kept for reports: one hour at the 15 s balance period.
DEFAULT_HISTORY_LEN = 240

#: Shortest time from one decision to one a threshold crossing forces: the
#: balloon driver polls for its target once a second [OSDI02 §3.2][LINUX-BALLOON].
DEFAULT_MIN_REACT_GAP_S = 1.0


@dataclass(frozen=True, slots=True)
class Decision:
    """One turn of the loop, kept in :attr:`PolicyController.history`.

    Attributes:
        time_s: the ``now_s`` the step was called with.
        host: the host sample the plans were made from.
        vms: the VM samples.
        plans: what the policy decided (applied to the backend).
    """

    time_s: float
    host: HostSample
    vms: tuple[VmSample, ...]
    plans: Mapping[str, VmPlan]


class PolicyController:
    """Runs ``policy`` against ``backend`` once per balance period.

    Args:
        policy: the decision logic (see :mod:`hvmem.policy.policies`).
        backend: the host it controls (:class:`~hvmem.policy.ports.MemoryBackend`).
        balance_period_s: time between decisions (``Mem.BalancePeriod`` 15 s).
        history_len: decisions kept in :attr:`history`.
        min_react_gap_s: shortest time from a decision to one :meth:`react` forces.

    Attributes:
        history: the latest decisions, oldest first.
        steps: decisions taken so far (an event count).
        reactions: of those, decisions a threshold crossing forced.

    Raises:
        ConfigError: a non-positive period or history length.
    """

    def __init__(
        self,
        policy: Policy,
        backend: MemoryBackend,
        balance_period_s: float = DEFAULT_BALANCE_PERIOD_S,
        *,
        history_len: int = DEFAULT_HISTORY_LEN,
        min_react_gap_s: float = DEFAULT_MIN_REACT_GAP_S,
    ) -> None:
        if not (math.isfinite(balance_period_s) and _ns(balance_period_s) > 0):
            raise ConfigError(f"balance_period_s: must be a positive number of nanoseconds, "
                              f"found {balance_period_s}")
        if history_len < 1:
            raise ConfigError(f"history_len: must be at least 1, found {history_len}")
        self.policy = policy
        self.backend = backend
        self.balance_period_s = float(balance_period_s)
        self.history: deque[Decision] = deque(maxlen=history_len)
        self.min_react_gap_s = float(min_react_gap_s)
        self.reactions = 0
        self.steps = 0
        self._last_call_s: float | None = None
        self._period = Period(_ns(balance_period_s))

    @property
    def last(self) -> Decision | None:
        """The latest decision, or None before the first."""
        return self.history[-1] if self.history else None

    @property
    def next_due_s(self) -> float | None:
        """When the next decision is due (None: at the first step)."""
        next_ns = self._period.next_ns
        return None if next_ns is None else ns_to_s(next_ns)

    def due(self, now_s: float) -> bool:
        """Whether :meth:`step` at ``now_s`` would decide."""
        return self._period.due(_ns(now_s))

    def step(self, now_s: float, *, force: bool = False) -> Mapping[str, VmPlan] | None:
        """Sample, plan and apply if a balance period has passed (or ``force``).

        Args:
            now_s: the current time in seconds (simulated or wall clock).
            force: decide now even if the period has not passed (e.g. a VM was
                added, or free memory crossed a threshold [OSDI02 §6.3]).

        Returns:
            The plans applied, or None if no decision was due.

        Raises:
            InvariantViolation: time went backwards, or the policy planned for a
                VM the sample does not have.
        """
        if not math.isfinite(now_s):
            raise InvariantViolation(f"controller time must be finite, found {now_s}")
        if self._last_call_s is not None and now_s < self._last_call_s:
            raise InvariantViolation(
                f"controller time went backwards: {now_s} s after {self._last_call_s} s"
            )
        self._last_call_s = now_s
        if not (force or self.due(now_s)):
            return None
        host, vms = self.backend.sample()
        vms = tuple(vms)
        plans = self.policy.plan(host, vms)
        _check_plans(plans, vms)
        self.backend.apply(plans)
        self.history.append(Decision(time_s=now_s, host=host, vms=vms, plans=plans))
        self.steps += 1
        self._period.start(_ns(now_s))  # a forced decision starts a new period too
        return plans


    def react(self, now_s: float, state: MemState) -> Mapping[str, VmPlan] | None:
        """Free memory crossed into ``state``: decide now if the plans are stale.

        A decision is forced when the policy rebalances on crossings, ``state``
        is more severe than the state the latest decision saw, and at least
        ``min_react_gap_s`` has passed since it (module docs). Returns the plans
        applied, or None.
        """
        if not getattr(self.policy, "rebalances_on_crossing", False):
            return None
        last = self.last
        if last is None or MemState(state) <= last.host.state:
            return None
        if now_s - last.time_s < self.min_react_gap_s:
            return None
        self.reactions += 1
        return self.step(now_s, force=True)


def _ns(time_s: float) -> int:
    """A time in seconds as whole nanoseconds (exact for a simulated time)."""
    return round(time_s * NS_PER_S)


def _check_plans(plans: Mapping[str, VmPlan], vms: Sequence[VmSample]) -> None:
    names = {vm.name for vm in vms}
    unknown = sorted(set(plans) - names)
    if unknown:
        raise InvariantViolation(f"policy planned for VMs not in the sample: {', '.join(unknown)}")
